"""Patch sampling, augmentation and the tf.data pipeline (bmstudy.training.sampling, .augmentation)."""
from __future__ import annotations

import numpy as np
import pytest

from bmstudy.training import (AugmentParams, Case, PatchSampler, augment, extract_patch, lesion_components,
                              load_cases, load_preprocessed_case, make_dataset, sample_patch_start)
from fake_preprocessed import make_case, write_cohort

ALL_ON = AugmentParams(flip_p=1.0, elastic_p=1.0, elastic_deformation=(0.1, 0.25), gamma_p=1.0)


def test_extract_patch_matches_padded_reference():
    vol = np.arange(5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7)
    padded = np.pad(vol, 10)
    for start in [(0, 0, 0), (-3, 2, 4), (3, -6, 5), (4, 5, 6), (-20, 0, 0)]:
        got = extract_patch(vol, start, (4, 4, 4))
        ref = padded[tuple(slice(s + 10, s + 14) for s in start)]
        np.testing.assert_array_equal(got, ref)


def test_lesion_components_and_small_lesions_are_sampled():
    image, mask, _ = make_case((40, 40, 40), ((12, 12, 12, 6.0), (26, 26, 26, 1.0)))
    comps = lesion_components(mask)
    assert sorted(len(c) for c in comps) == [7, int(mask.sum()) - 7]  # radius-1 ball has 7 voxels
    small = {tuple(v) for v in min(comps, key=len)}
    rng = np.random.default_rng(0)
    hits_small = 0
    for _ in range(200):
        start, centred = sample_patch_start(mask.shape, (16, 16, 16), rng, comps, lesion_fraction=1.0,
                                            center_jitter=0.0)
        assert centred
        centre = tuple(s + 8 for s in start)
        assert mask[centre] == 1  # centred on a lesion voxel
        hits_small += centre in small
    assert 60 < hits_small < 140  # components drawn uniformly, not by voxel count (7 of ~900 voxels)


def test_random_patches_stay_inside_or_pad_small_volumes():
    rng = np.random.default_rng(1)
    for _ in range(50):
        start, centred = sample_patch_start((40, 20, 32), (32, 32, 32), rng, [], lesion_fraction=1.0)
        assert not centred
        assert 0 <= start[0] <= 8 and -12 <= start[1] <= 0 and start[2] == 0
    starts = np.array([sample_patch_start((40, 20, 32), (32, 32, 32), rng, [], 0.0, border_overhang=0.5)[0]
                       for _ in range(300)])
    assert starts[:, 0].min() == -16 and starts[:, 0].max() == 24  # overhang of half a patch each side
    assert starts[:, 1].min() == -28 and starts[:, 1].max() == 16


def test_augment_never_nan_and_keeps_range():
    image, mask, _ = make_case((32, 32, 32), ((16, 16, 16, 5.0),), seed=3)
    assert image.min() < 0  # z-scored: the case where raw gamma produces NaN
    for seed in range(6):
        img, msk = augment(image, mask, np.random.default_rng(seed), ALL_ON)
        assert img.dtype == np.float32 and msk.dtype == np.uint8 and img.shape == image.shape
        assert np.isfinite(img).all()
        assert img.min() >= min(image.min(), 0) - 1e-5 and img.max() <= image.max() + 1e-5
        assert set(np.unique(msk)) <= {0, 1}


def test_raw_volumentations_gamma_nan_trap_is_real():
    from volumentations import RandomGamma

    with np.errstate(invalid="ignore"):
        out = RandomGamma().apply(np.array([-1.0, 0.5], np.float32), gamma=0.9)
    assert np.isnan(out[0])  # why augment() rescales to [0, 1] before gamma


def test_flip_is_left_right_axis0_and_aligned():
    image, mask, _ = make_case((32, 32, 32), ((8, 16, 16, 4.0),))
    img, msk = augment(image, mask, np.random.default_rng(0), AugmentParams(flip_p=1, elastic_p=0, gamma_p=0))
    np.testing.assert_array_equal(img, image[::-1])
    np.testing.assert_array_equal(msk, mask[::-1])


def test_elastic_keeps_image_and_mask_aligned():
    # mask defined as a threshold of a smooth image: after the deformation it must still match.
    g = np.stack(np.meshgrid(*[np.arange(32)] * 3, indexing="ij"), -1).astype(np.float32)
    image = np.exp(-((g - [12, 18, 16]) ** 2).sum(-1) / (2 * 5.0 ** 2)).astype(np.float32)
    mask = (image > 0.5).astype(np.uint8)
    params = AugmentParams(flip_p=0.5, elastic_p=1.0, elastic_deformation=(0.15, 0.25), gamma_p=0)
    moved = 0
    for seed in range(4):
        img, msk = augment(image, mask, np.random.default_rng(seed), params)
        moved += (msk != mask).sum()
        recon = img > 0.5
        dice = 2 * (recon & (msk > 0)).sum() / (recon.sum() + msk.sum())
        assert dice > 0.9, dice
    assert moved > 0  # the deformation actually did something


def test_augment_deterministic_per_seed():
    image, mask, _ = make_case((32, 32, 32), ((16, 16, 16, 5.0),), seed=1)
    a = augment(image, mask, np.random.default_rng(7), ALL_ON)
    b = augment(image, mask, np.random.default_rng(7), ALL_ON)
    c = augment(image, mask, np.random.default_rng(8), ALL_ON)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_load_case_validates(tmp_path):
    write_cohort(tmp_path, n=2)
    case = load_preprocessed_case(tmp_path, "P000")
    assert case["image"].dtype == np.float32 and case["meta"]["params"]
    (tmp_path / "P001" / "mask.npy").unlink()
    with pytest.raises(FileNotFoundError, match="P001"):
        load_preprocessed_case(tmp_path, "P001")


def test_sampler_pure_function_of_seed_and_index(tmp_path):
    write_cohort(tmp_path, n=2)
    cases = load_cases(tmp_path, ["P000", "P001"])
    s1 = PatchSampler(cases, (32, 32, 32), 0.7, ALL_ON, seed=5)
    s2 = PatchSampler(cases, (32, 32, 32), 0.7, ALL_ON, seed=5)
    later = [s1.sample(i) for i in (3, 2, 1)][::-1]  # order of calls does not matter
    for i, (img, msk) in zip((1, 2, 3), later):
        ref = s2.sample(i)
        np.testing.assert_array_equal(img, ref[0])
        np.testing.assert_array_equal(msk, ref[1])
        assert img.shape == (32, 32, 32, 1) and msk.dtype == np.float32
    with pytest.raises(ValueError):
        PatchSampler([], (32, 32, 32))


@pytest.mark.slow
def test_tf_dataset_deterministic_and_resumable(tmp_path):
    write_cohort(tmp_path, n=2)
    sampler = PatchSampler(load_cases(tmp_path, ["P000", "P001"]), (32, 32, 32), 0.8, ALL_ON, seed=0)
    a = [tuple(t.numpy() for t in b) for b in make_dataset(sampler, 2, num_parallel_calls=2).take(3)]
    b = [tuple(t.numpy() for t in b) for b in make_dataset(sampler, 2, start_index=2, num_parallel_calls=2).take(2)]
    for (xa, ya), (xb, yb) in zip(a[1:], b):  # resuming at sample 2 continues the same stream
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert a[0][0].shape == (2, 32, 32, 32, 1)
    np.testing.assert_array_equal(a[0][0][1], sampler.sample(1)[0])


def test_augment_and_sampler_reject_bad_input(tmp_path):
    image, mask, _ = make_case((32, 32, 32), ((16, 16, 16, 5.0),))
    with pytest.raises(ValueError, match="equal 3-D shapes"):
        augment(image, mask[:-1], np.random.default_rng(0))
    with pytest.raises(ValueError, match="equal 3-D shapes"):
        augment(image[0], mask[0], np.random.default_rng(0))
    write_cohort(tmp_path, n=1)
    cases = load_cases(tmp_path, ["P000"])
    with pytest.raises(ValueError, match="lesion_fraction"):
        PatchSampler(cases, (32, 32, 32), lesion_fraction=1.5)


def test_sampler_arrays_stack_consecutive_samples_and_no_augment_keeps_values(tmp_path):
    write_cohort(tmp_path, n=2)
    cases = load_cases(tmp_path, ["P000", "P001"])
    sampler = PatchSampler(cases, (32, 32, 32), 0.5, None, seed=3, border_overhang=0.5)
    x, y = sampler.arrays(3, start_index=4)
    assert x.shape == y.shape == (3, 32, 32, 32, 1) and x.dtype == y.dtype == np.float32
    for k in range(3):
        img, msk = sampler.sample(4 + k)
        np.testing.assert_array_equal(x[k], img)
        np.testing.assert_array_equal(y[k], msk)
    # without augmentation a patch is a zero-padded crop of one case: its values come from that case
    values = np.concatenate([np.unique(c.image) for c in cases] + [[0.0]])
    assert np.isin(x, values).all() and set(np.unique(y)) <= {0.0, 1.0}


def test_head_sampler_foreground_fraction_over_many_draws(tmp_path):
    """nnU-Net style: a share lesion_fraction of patches is lesion-centred, the rest centred in the head."""
    write_cohort(tmp_path, n=2)
    cases = load_cases(tmp_path, ["P000", "P001"])
    assert all(c.head is not None and c.box is not None for c in cases)
    sampler = PatchSampler(cases, (32, 32, 32), 1 / 3, None, seed=0, background="head")
    n, centred, in_head = 3000, 0, 0
    for i in range(n):
        rng = np.random.default_rng([0, i])
        case = sampler.cases[int(rng.integers(len(sampler.cases)))]
        start, lesion = sampler.patch_start(case, rng)
        centre = tuple(s + 16 for s in start)
        centred += lesion
        if lesion:
            continue
        in_head += bool(case.head[centre])
    share = centred / n
    assert abs(share - 1 / 3) < 3 * np.sqrt(1 / 3 * 2 / 3 / n)  # binomial 3-sigma band
    assert in_head == n - centred  # every background patch is centred on a head voxel
    # a sampler with lesion_fraction 0 never centres on lesions; cases without lesions give background
    none = PatchSampler(cases, (32, 32, 32), 0.0, None, seed=1, background="head")
    assert not any(none.patch_start(cases[0], np.random.default_rng(i))[1] for i in range(200))
    with pytest.raises(ValueError, match="background"):
        PatchSampler(cases, (32, 32, 32), background="sky")


def test_head_patches_overhang_the_border_and_are_zero_padded(tmp_path):
    """A head touching the volume border gives patches that leave the volume; the outside is zero."""
    from bmstudy.training.sampling import head_box, sample_head_start

    shape = (24, 24, 24)
    image = np.random.default_rng(0).normal(1.0, 0.1, shape).astype(np.float32)  # nonzero everywhere
    head = np.zeros(shape, np.uint8)
    head[:6, :, :] = 1  # the head touches the x=0 face
    case = Case("B", image, np.zeros(shape, np.uint8), [], head, head_box(head))
    assert case.box == ((0, 0, 0), (6, 24, 24))
    sampler = PatchSampler([case], (16, 16, 16), 0.0, None, seed=0, background="head")
    overhang = 0
    for i in range(200):
        start = sample_head_start(case, (16, 16, 16), np.random.default_rng(i))
        assert 0 <= start[0] + 8 < 6  # centre inside the head
        img, msk = sampler.sample(i)
        rng = np.random.default_rng([0, i])
        rng.integers(1)  # the case draw
        s = sampler.patch_start(case, rng)[0]
        for axis in range(3):
            lo = max(0, -s[axis])
            hi = min(16, shape[axis] - s[axis])
            outside = np.ones(16, bool)
            outside[lo:hi] = False
            sl = [slice(None)] * 3
            sl[axis] = outside
            assert (img[..., 0][tuple(sl)] == 0).all()
            sl[axis] = ~outside
        overhang += s[0] < 0
        inside = tuple(slice(max(0, -a), min(16, n - a)) for a, n in zip(s, shape))
        src = tuple(slice(max(0, a), min(n, a + 16)) for a, n in zip(s, shape))
        np.testing.assert_array_equal(img[..., 0][inside], image[src])
    assert overhang > 100  # most patches centred in x < 6 start before the volume


def test_bright_voxels_are_the_brightest_head_voxels_outside_the_dilated_lesions():
    from scipy import ndimage

    from bmstudy.training.sampling import bright_voxels

    image, mask, brain = make_case(seed=3)
    vessel = (slice(5, 9), slice(20, 22), slice(17, 19))  # a bright non-lesion structure inside the brain
    image[vessel] = 6.0
    coords = bright_voxels(image, mask, brain, quantile=0.99, margin=2)
    got = np.zeros(image.shape, bool)
    got[tuple(coords.T)] = True
    # brute force: the voxels at or above the head's 99th percentile, minus the lesions dilated twice
    level = np.quantile(image[brain > 0], 0.99)
    near = ndimage.binary_dilation(mask > 0, np.ones((3, 3, 3), bool), iterations=2)
    np.testing.assert_array_equal(got, (brain > 0) & (image >= level) & ~near)
    assert got[vessel].all() and not (got & (mask > 0)).any()
    assert coords.dtype == np.int32 and coords.shape[1] == 3
    assert len(bright_voxels(image, mask, np.zeros_like(brain))) == 0
    for bad in (dict(quantile=1.0), dict(margin=-1)):
        with pytest.raises(ValueError):
            bright_voxels(image, mask, brain, **bad)
    with pytest.raises(ValueError, match="one shape"):
        bright_voxels(image, mask[:-1], brain)


def test_hard_negative_share_of_background_patches_over_many_draws(tmp_path):
    """A share hard_negative_fraction of the non-lesion patches is centred near a bright non-lesion voxel."""
    write_cohort(tmp_path, n=2)
    block = (slice(20, 24), slice(30, 34), slice(8, 12))  # a "vessel" brighter than the lesions, away from them
    for pid in ("P000", "P001"):
        image = np.load(tmp_path / pid / "image.npy")
        image[block] = 20.0
        np.save(tmp_path / pid / "image.npy", image)
    cases = load_cases(tmp_path, ["P000", "P001"], hard_negative_quantile=0.995)
    for c in cases:  # the top 0.5 % of the head are lesion and vessel voxels: only the vessel is a negative
        assert {tuple(v) for v in c.bright} == {tuple(v) for v in np.argwhere(np.ones((4, 4, 4))) + (20, 30, 8)}
    patch, reach = (32, 32, 32), int(0.25 * 32)  # centre within center_jitter of the drawn voxel

    def near_bright_share(fraction: float, n: int = 2000) -> tuple[float, int]:
        sampler = PatchSampler(cases, patch, 0.5, None, seed=0, background="head", hard_negative_fraction=fraction)
        background = near = 0
        for i in range(n):
            rng = np.random.default_rng([0, i])
            case = sampler.cases[int(rng.integers(len(sampler.cases)))]
            start, lesion = sampler.patch_start(case, rng)
            if not lesion:
                background += 1
                centre = np.array(start) + 16
                near += bool((np.abs(case.bright - centre).max(axis=1) <= reach).any())
        return near / background, background

    everything, n_bg = near_bright_share(1.0)
    assert everything == 1.0 and abs(n_bg / 2000 - 0.5) < 3 * np.sqrt(0.25 / 2000)  # lesion share unchanged
    chance, _ = near_bright_share(0.0)  # head patches that land near a bright voxel anyway
    assert chance < 0.9
    share, n_bg = near_bright_share(0.4)
    expected = 0.4 + 0.6 * chance
    assert abs(share - expected) < 4 * np.sqrt(expected * (1 - expected) / n_bg)
    # 0 draws nothing extra: the stream equals a sampler without hard negatives
    plain = PatchSampler(cases, patch, 0.5, None, seed=0, background="head")
    off = PatchSampler(cases, patch, 0.5, None, seed=0, background="head", hard_negative_fraction=0.0)
    for i in range(20):
        np.testing.assert_array_equal(plain.sample(i)[0], off.sample(i)[0])
    with pytest.raises(ValueError, match="background='head'"):
        PatchSampler(cases, patch, hard_negative_fraction=0.5)
    with pytest.raises(ValueError, match="hard_negative_quantile"):
        PatchSampler(load_cases(tmp_path, ["P000"]), patch, background="head", hard_negative_fraction=0.5)
    with pytest.raises(ValueError, match="hard_negative_fraction"):
        PatchSampler(cases, patch, background="head", hard_negative_fraction=1.5)
