"""Tests for bmstudy.inference: sliding-window stitching (numpy only), the per-case pipeline and its inputs."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from bmstudy.inference.sliding_window import (
    _coverage,
    gaussian_profile,
    sliding_window_predict,
    window_starts,
)


def sigmoid_fn(batch: np.ndarray) -> np.ndarray:
    """A known per-voxel function of the input: sigmoid(2x + 1), shape (B, px, py, pz, 1)."""
    return 1.0 / (1.0 + np.exp(-(2.0 * batch.astype(np.float64) + 1.0)))


def ref_starts(n: int, p: int, s: int) -> list[int]:
    """Independent reference: 0, s, 2s, ... that fit, plus a window flush with the end."""
    n = max(n, p)
    return sorted(set(range(0, n - p + 1, s)) | {n - p})


def brute_force(volume, window_value, patch, stride, weight=None):
    """Reference stitching in float64 by explicit loops over all windows (centred padding)."""
    patch = (patch,) * 3 if np.isscalar(patch) else tuple(patch)
    stride = (stride,) * 3 if np.isscalar(stride) else tuple(stride)
    pads = [((max(p - n, 0)) // 2, max(p - n, 0) - max(p - n, 0) // 2) for n, p in zip(volume.shape, patch)]
    vol = np.pad(volume.astype(np.float64), pads)
    acc = np.zeros(vol.shape)
    cnt = np.zeros(vol.shape)
    w = np.ones(patch) if weight is None else weight
    for sx, sy, sz in itertools.product(*(ref_starts(n, p, s) for n, p, s in zip(vol.shape, patch, stride))):
        sl = (slice(sx, sx + patch[0]), slice(sy, sy + patch[1]), slice(sz, sz + patch[2]))
        acc[sl] += w * window_value(vol[sl])
        cnt[sl] += w
    crop = tuple(slice(a, a + n) for (a, _), n in zip(pads, volume.shape))
    return (acc / cnt)[crop], cnt[crop]


CASES = [
    # (shape, patch, stride)
    ((32, 32, 32), 16, 8),            # sizes are multiples of the stride
    ((37, 29, 23), 16, 8),            # sizes are not
    ((5, 30, 9), 16, 8),              # smaller than the patch on two axes
    ((3, 4, 2), 8, 4),                # smaller than the patch on every axis
    ((40, 21, 19), (16, 8, 12), (8, 3, 12)),   # anisotropic patch / stride tuples, stride == patch on z
    ((216, 20, 18), (128, 16, 16), (64, 8, 16)),  # the STACK_NOTES edge trap: 216 = 128 + 64 + 24
]


@pytest.mark.parametrize("shape,patch,stride", CASES)
@pytest.mark.parametrize("blend", ["mean", "gaussian"])
def test_per_voxel_function_is_reproduced_exactly(shape, patch, stride, blend):
    rng = np.random.default_rng(0)
    vol = rng.normal(size=shape).astype(np.float32)
    out = sliding_window_predict(vol, sigmoid_fn, patch, stride, batch_size=3, blend=blend)
    assert out.shape == shape and out.dtype == np.float32
    np.testing.assert_allclose(out, sigmoid_fn(vol), rtol=0, atol=1e-6)


@pytest.mark.parametrize("shape,patch,stride", CASES[:3])
def test_identity_with_channel_less_output(shape, patch, stride):
    vol = np.random.default_rng(1).uniform(-3, 3, size=shape).astype(np.float32)
    out = sliding_window_predict(vol, lambda b: b[..., 0].copy(), patch, stride, batch_size=2)
    np.testing.assert_allclose(out, vol, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape,patch,stride", CASES)
def test_every_voxel_is_covered(shape, patch, stride):
    # counts equal an explicit enumeration of all windows, and are >= 1 everywhere
    padded = tuple(max(n, p) for n, p in zip(shape, (patch,) * 3 if np.isscalar(patch) else patch))
    counts = _coverage(padded, patch, stride)
    _, ref = brute_force(np.zeros(padded, np.float32), lambda w: w, patch, stride)
    np.testing.assert_array_equal(counts, ref)
    assert counts.min() >= 1
    # and a predict_fn returning ones yields exactly ones (no uncovered 0/0 voxel anywhere)
    out = sliding_window_predict(np.zeros(shape, np.float32), lambda b: np.ones_like(b), patch, stride)
    np.testing.assert_array_equal(out, np.ones(shape, np.float32))


def test_window_starts_last_window_flush_with_end():
    assert window_starts(216, 128, 64).tolist() == [0, 64, 88]      # naive loop would stop at 64 -> 192
    assert window_starts(256, 128, 64).tolist() == [0, 64, 128]     # no duplicate flush window
    assert window_starts(128, 128, 64).tolist() == [0]
    assert window_starts(200, 128, 128).tolist() == [0, 72]
    with pytest.raises(ValueError, match="shorter than the patch"):
        window_starts(100, 128, 64)
    with pytest.raises(ValueError, match="stride"):
        window_starts(300, 128, 129)


@pytest.mark.parametrize("blend", ["mean", "gaussian"])
def test_overlaps_are_weighted_averages_of_windows(blend):
    """Each window predicts a constant (its input mean): the result is the weighted window average."""
    shape, patch, stride = (23, 18, 15), (8, 6, 10), (4, 5, 3)
    vol = np.random.default_rng(2).normal(size=shape).astype(np.float32)

    def window_mean(batch):
        return np.broadcast_to(batch.mean(axis=(1, 2, 3, 4), keepdims=True), batch.shape).copy()

    weight = None
    if blend == "gaussian":  # nnU-Net importance map: Gaussian, sigma = patch / 8, centred, max 1
        axes = []
        for p in patch:
            i = np.arange(p)
            g = np.exp(-((i - (p - 1) / 2) ** 2) / (2 * (p / 8) ** 2))
            axes.append(np.maximum(g / g.max(), 1e-3))
        weight = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    ref, _ = brute_force(vol, lambda w: np.full(w.shape, w.mean()), patch, stride, weight)
    out = sliding_window_predict(vol, window_mean, patch, stride, batch_size=4, blend=blend)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)


def test_gaussian_and_mean_agree_for_constant_predict_fn():
    vol = np.random.default_rng(3).normal(size=(30, 26, 20)).astype(np.float32)
    const = lambda b: np.full(b.shape, 0.3, np.float32)  # noqa: E731
    a = sliding_window_predict(vol, const, 16, 8, blend="mean")
    b = sliding_window_predict(vol, const, 16, 8, blend="gaussian")
    np.testing.assert_allclose(a, 0.3, atol=1e-6)
    np.testing.assert_allclose(b, a, atol=1e-6)


def test_gaussian_profile_matches_nnunet_shape():
    w = gaussian_profile(128)
    assert w.dtype == np.float32 and w.shape == (128,)
    np.testing.assert_allclose(w, w[::-1])                 # symmetric
    assert w.max() == pytest.approx(1.0, abs=1e-3)
    # sigma = 16: one sigma from the centre the weight is exp(-1/2)
    i = np.arange(128)
    ref = np.exp(-0.5 * ((i - 63.5) / 16.0) ** 2)
    np.testing.assert_allclose(w, np.maximum(ref / ref.max(), 1e-3), rtol=1e-6)


def test_tta_flip_with_flip_equivariant_fn_equals_fn():
    vol = np.random.default_rng(4).normal(size=(27, 19, 22)).astype(np.float32)
    for blend in ("mean", "gaussian"):
        plain = sliding_window_predict(vol, sigmoid_fn, (16, 8, 8), (8, 4, 5), blend=blend)
        tta = sliding_window_predict(vol, sigmoid_fn, (16, 8, 8), (8, 4, 5), blend=blend, tta_flip=True)
        np.testing.assert_allclose(tta, plain, atol=1e-6)
        np.testing.assert_allclose(tta, sigmoid_fn(vol), atol=1e-6)


def test_tta_flip_really_flips_axis_0():
    """A fn returning a left-right ramp (ignoring input) averages with its mirror to a constant."""
    p = 8
    ramp = (np.arange(p, dtype=np.float32) / (p - 1))[None, :, None, None, None]
    fn = lambda b: np.broadcast_to(ramp, b.shape).copy()  # noqa: E731
    vol = np.zeros((p, p, p), np.float32)
    plain = sliding_window_predict(vol, fn, p, p)
    np.testing.assert_allclose(plain[:, 0, 0], ramp.ravel(), atol=1e-7)
    tta = sliding_window_predict(vol, fn, p, p, tta_flip=True)
    np.testing.assert_allclose(tta, 0.5, atol=1e-6)
    # an asymmetric input: the network sees the mirrored window in the second call
    seen = []

    def spy(b):
        seen.append(b.copy())
        return np.zeros_like(b)

    vol2 = np.random.default_rng(5).normal(size=(p, p, p)).astype(np.float32)
    sliding_window_predict(vol2, spy, p, p, tta_flip=True)
    assert len(seen) == 2
    np.testing.assert_array_equal(seen[0][0, ..., 0], vol2)
    np.testing.assert_array_equal(seen[1][0, ..., 0], vol2[::-1])


def test_batches_are_bounded_and_well_formed():
    shape, patch, stride = (40, 30, 20), 16, 8
    n_windows = math.prod(len(ref_starts(n, patch, stride)) for n in shape)
    sizes = []

    def spy(b):
        assert b.dtype == np.float32 and b.ndim == 5 and b.shape[1:] == (16, 16, 16, 1)
        sizes.append(b.shape[0])
        return sigmoid_fn(b)

    sliding_window_predict(np.zeros(shape, np.float32), spy, patch, stride, batch_size=4)
    assert sum(sizes) == n_windows
    assert max(sizes) == 4 and len(sizes) == math.ceil(n_windows / 4)


def test_pad_value_is_used_for_small_volumes():
    seen = []

    def spy(b):
        seen.append(b.copy())
        return np.zeros_like(b)

    vol = np.ones((4, 8, 8), np.float32)
    sliding_window_predict(vol, spy, 8, 4, pad_value=-7.0)
    x = seen[0][0, ..., 0]
    np.testing.assert_array_equal(x[2:6], 1.0)               # centred
    np.testing.assert_array_equal(x[[0, 1, 6, 7]], -7.0)


def test_input_validation():
    vol = np.zeros((10, 10, 10), np.float32)
    with pytest.raises(ValueError, match="3-D"):
        sliding_window_predict(np.zeros((10, 10)), sigmoid_fn, 8, 4)
    with pytest.raises(ValueError, match="stride"):
        sliding_window_predict(vol, sigmoid_fn, 8, 9)
    with pytest.raises(ValueError, match="blend"):
        sliding_window_predict(vol, sigmoid_fn, 8, 4, blend="max")
    with pytest.raises(ValueError, match="batch_size"):
        sliding_window_predict(vol, sigmoid_fn, 8, 4, batch_size=0)
    with pytest.raises(ValueError, match="patch"):
        sliding_window_predict(vol, sigmoid_fn, (8, 8), 4)
    with pytest.raises(ValueError, match="predict_fn returned shape"):
        sliding_window_predict(vol, lambda b: b[:, :4], 8, 4)
    with pytest.raises(TypeError, match="real-valued"):
        sliding_window_predict(vol.astype(bool), sigmoid_fn, 8, 4)


# --------------------------------------------------------------------------- per-case pipeline
SPACING = (0.9, 0.9, 1.5)
SHAPE = (40, 44, 24)
LESION_CENTRE = (12, 30, 15)  # off-centre: an orientation mistake would misplace the lesion


def lps_affine(spacing=SPACING, origin=(30.0, 20.0, -15.0)) -> np.ndarray:
    """Non-canonical voxel axes: x runs right->left, y anterior->posterior (LPS)."""
    aff = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    aff[:3, 3] = origin
    return aff


def head_arrays(shape=SHAPE, affine=None, seed=0):
    """``(image, brain, lesion)``: brain ellipsoid ~100, lesion sphere 300 (radius ~4 mm), background 0."""
    affine = lps_affine() if affine is None else affine
    rng = np.random.default_rng(seed)
    idx = np.indices(shape).astype(np.float64)
    c = [(n - 1) / 2 for n in shape]
    brain = sum(((idx[i] - c[i]) / (0.45 * shape[i])) ** 2 for i in range(3)) <= 1.0
    # lesion radius ~4 mm in world units (anisotropic voxels)
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    lesion = sum(((idx[i] - LESION_CENTRE[i]) * zooms[i]) ** 2 for i in range(3)) <= 4.0 ** 2
    img = np.where(brain, 100.0 + 5.0 * rng.normal(size=shape), 0.0)
    img[lesion & brain] = 300.0
    return img.astype(np.float32), brain.astype(np.uint8), (lesion & brain).astype(np.uint8)


def write_case(path, shape=SHAPE, affine=None, seed=0):
    """A head-like image (:func:`head_arrays`) written as NIfTI; returns its lesion mask."""
    import nibabel as nib

    affine = lps_affine() if affine is None else affine
    img, _, lesion = head_arrays(shape, affine, seed)
    nib.save(nib.Nifti1Image(img, affine), str(path))
    return lesion


def zscore_threshold_fn(batch):
    """A simple 'network': voxels more than 2.5 SD above the brain mean are lesion."""
    return (batch > 2.5).astype(np.float32)


class CountingFn:
    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, batch):
        self.calls += 1
        return self.fn(batch)


def dice(a, b):
    a, b = a.astype(bool), b.astype(bool)
    return 2 * (a & b).sum() / (a.sum() + b.sum())


@pytest.fixture()
def config():
    """A training config as train() records it (preprocessing params + inference window)."""
    return {"preprocessing": {"skull_strip": "none"}, "inference_patch": 16, "inference_stride": 8}


def test_predict_case_writes_mask_and_prob_in_input_grid(tmp_path, config):
    import nibabel as nib

    from bmstudy.inference import predict_case

    truth = write_case(tmp_path / "p1.nii.gz")
    # a brain mask in the input grid (the 'mask' skull-strip backend), as the manifest's brain_mask
    img = nib.load(str(tmp_path / "p1.nii.gz"))
    brain = (np.asanyarray(img.dataobj) > 0).astype(np.uint8)
    nib.save(nib.Nifti1Image(brain, img.affine), str(tmp_path / "p1_brain.nii.gz"))
    config = {**config, "preprocessing": {"skull_strip": "mask", "target_spacing": [0.833] * 3}}
    row = predict_case(tmp_path / "p1.nii.gz", zscore_threshold_fn, config, tmp_path / "out", "p1",
                       tmp_path / "p1_brain.nii.gz")
    mask_img = nib.load(str(tmp_path / "out" / "p1.nii.gz"))
    prob_img = nib.load(str(tmp_path / "out" / "p1_prob.nii.gz"))
    for im in (mask_img, prob_img):
        assert im.shape == SHAPE
        np.testing.assert_allclose(im.affine, lps_affine(), atol=1e-4)
        assert nib.aff2axcodes(im.affine) == ("L", "P", "S")
    assert mask_img.get_data_dtype() == np.uint8 and prob_img.get_data_dtype() == np.float32
    mask = np.asanyarray(mask_img.dataobj)
    prob = np.asanyarray(prob_img.dataobj)
    assert set(np.unique(mask)) <= {0, 1}
    assert prob.min() >= 0 and prob.max() <= 1
    np.testing.assert_array_equal(mask, (prob >= 0.5).astype(np.uint8))
    assert dice(mask, truth) > 0.8, dice(mask, truth)
    assert row["status"] == "ok" and row["patient_id"] == "p1"
    for key in ("preprocess_s", "model_s", "postprocess_s", "total_s"):
        assert row[key] >= 0
    assert row["total_s"] >= row["model_s"] >= row["network_s"]
    # the network saw the 0.833 mm canonical grid: 40*0.9/0.833, 44*0.9/0.833, 24*1.5/0.833 voxels
    assert row["model_shape"] == "43x48x43" and row["input_shape"] == "40x44x24"
    assert not list((tmp_path / "out").glob(".*tmp*")), "temporary files left behind"


def test_predict_case_restricts_probabilities_to_the_brain(tmp_path, config):
    """A 'network' that fires everywhere: outside the brain mask the output is 0 unless disabled."""
    import nibabel as nib

    from bmstudy.inference import predict_case

    write_case(tmp_path / "p1.nii.gz")
    img = nib.load(str(tmp_path / "p1.nii.gz"))
    brain = (np.asanyarray(img.dataobj) > 0).astype(np.uint8)
    nib.save(nib.Nifti1Image(brain, img.affine), str(tmp_path / "p1_brain.nii.gz"))
    config = {**config, "preprocessing": {"skull_strip": "mask", "target_spacing": None}}
    ones = lambda batch: np.ones(batch.shape, np.float32)  # noqa: E731
    predict_case(tmp_path / "p1.nii.gz", ones, config, tmp_path / "on", "p1", tmp_path / "p1_brain.nii.gz")
    predict_case(tmp_path / "p1.nii.gz", ones, config, tmp_path / "off", "p1", tmp_path / "p1_brain.nii.gz",
                 restrict_to_brain=False)
    on = np.asanyarray(nib.load(str(tmp_path / "on" / "p1.nii.gz")).dataobj)
    off = np.asanyarray(nib.load(str(tmp_path / "off" / "p1.nii.gz")).dataobj)
    np.testing.assert_array_equal(on, brain)
    assert off.all()


def _timings(out_dir):
    import pandas as pd

    return pd.read_csv(out_dir / "timings.csv", dtype={"patient_id": str}, keep_default_na=False)


def test_predict_cohort_reports_failures_and_completes_others(tmp_path, config):
    import nibabel as nib
    import pandas as pd

    from bmstudy.inference import TIMING_COLUMNS, predict_cohort

    src = tmp_path / "in"
    src.mkdir()
    write_case(src / "a_0000.nii.gz", seed=1)
    (src / "b.nii.gz").write_bytes(b"this is not a nifti file")
    nib.save(nib.Nifti1Image(np.ones((8, 8), np.float32), np.eye(4)), str(src / "c.nii.gz"))  # 2-D
    write_case(src / "d_t1c.nii.gz", seed=2)
    out = tmp_path / "out"
    df = predict_cohort(src, None, out, predict_fn=zscore_threshold_fn, config=config, progress=False)
    assert df["patient_id"].tolist() == ["a", "b", "c", "d"]
    assert df["status"].tolist() == ["ok", "failed", "failed", "ok"]
    t = _timings(out)
    assert list(t.columns[: len(TIMING_COLUMNS)]) == list(TIMING_COLUMNS)
    assert t["status"].tolist() == ["ok", "failed", "failed", "ok"]
    for pid in ("b", "c"):
        err = t.loc[t.patient_id == pid, "error"].item()
        assert repr(pid) in err and f"{pid}.nii.gz" in err
        assert not (out / f"{pid}.nii.gz").exists()
        assert t.loc[t.patient_id == pid, "total_s"].item() == ""   # no model time for a failed case
    for pid in ("a", "d"):
        assert (out / f"{pid}.nii.gz").is_file() and (out / f"{pid}_prob.nii.gz").is_file()
    ok = t[t.status == "ok"].apply(lambda col: pd.to_numeric(col, errors="coerce"))
    parts = ok["preprocess_s"] + ok["model_s"] + ok["postprocess_s"]
    assert (ok["total_s"] >= parts - 1e-3).all() and (ok["total_s"] <= parts + 0.05).all()


def test_predict_cohort_rerun_skips_finished_unless_forced(tmp_path, config):
    import json

    import pandas as pd

    from bmstudy.inference import predict_cohort

    rows = []
    for i, split in enumerate(["test", "train", "external"]):
        write_case(tmp_path / f"p{i}.nii.gz", seed=i)
        rows.append({"patient_id": f"p{i}", "image": str(tmp_path / f"p{i}.nii.gz"), "split": split})
    manifest = pd.DataFrame(rows)
    out = tmp_path / "out"
    fn = CountingFn(zscore_threshold_fn)
    df1 = predict_cohort(manifest, None, out, predict_fn=fn, config=config, warmup=False, progress=False)
    assert df1["patient_id"].tolist() == ["p0", "p2"]          # train split not predicted
    assert not (out / "p1.nii.gz").exists()
    first_calls = fn.calls
    assert first_calls > 0
    mtime = (out / "p0.nii.gz").stat().st_mtime_ns

    # interrupted run: p2's timing row is lost -> only p2 is recomputed
    t = _timings(out)
    t[t.patient_id != "p2"].to_csv(out / "timings.csv", index=False)
    fn.calls = 0
    df2 = predict_cohort(manifest, None, out, predict_fn=fn, config=config, warmup=False, progress=False)
    assert fn.calls == first_calls // 2
    assert (out / "p0.nii.gz").stat().st_mtime_ns == mtime
    assert df2.loc[0, "total_s"] == df1.loc[0, "total_s"]        # p0's earlier timing row kept

    fn.calls = 0
    predict_cohort(manifest, None, out, predict_fn=fn, config=config, warmup=False, progress=False)
    assert fn.calls == 0                                         # everything finished: nothing runs
    # settings from a training folder's train_config.json when only predict_fn is given
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "train_config.json").write_text(json.dumps(config), encoding="utf-8")
    predict_cohort(manifest, tmp_path / "model", out, predict_fn=fn, warmup=False, progress=False, force=True)
    assert fn.calls == first_calls
    fn.calls = 0
    predict_cohort(manifest, None, out, predict_fn=fn, config=config, warmup=False, progress=False, force=True)
    assert fn.calls == first_calls
    assert (out / "p0.nii.gz").stat().st_mtime_ns != mtime
    assert sorted(_timings(out)["patient_id"]) == ["p0", "p2"]


def test_cli_arguments_parse():
    import argparse

    from bmstudy.inference.predictor import _cli_window, add_cli_arguments

    p = argparse.ArgumentParser()
    add_cli_arguments(p)
    a = p.parse_args(["-i", "in", "-o", "out", "-m", "model", "--patch", "64", "--stride", "32", "16", "16"])
    assert a.splits == ["test", "external"] and a.blend == "mean" and not a.tta and not a.force
    assert _cli_window(a.patch) == 64 and _cli_window(a.stride) == (32, 16, 16)
    with pytest.raises(ValueError):
        _cli_window([1, 2])


@pytest.mark.slow
def test_cli_predict_with_a_saved_keras_model(tmp_path):
    """End to end with the study's network (random weights): `bmstudy predict -i DIR -o OUT -m MODEL`."""
    import json

    import nibabel as nib

    from bmstudy.cli import main
    from bmstudy.inference import make_predict_fn
    from bmstudy.training.model import build_model

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    model = build_model(None, decoder_dropout=0.5)
    model.save(model_dir / "model_best.keras")
    (model_dir / "train_config.json").write_text(json.dumps(
        {"preprocessing": {"skull_strip": "none"}, "inference_patch": 32, "inference_stride": 16}))
    # the wrapper runs the network in inference mode (dropout 0.5 off): deterministic, equals model(x)
    fn = make_predict_fn(model)
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 32, 1)).astype(np.float32)
    np.testing.assert_allclose(fn(x), np.asarray(model(x, training=False)), atol=1e-5)
    np.testing.assert_array_equal(fn(x), fn(x))

    src = tmp_path / "in"
    src.mkdir()
    write_case(src / "case1_0000.nii.gz")
    out = tmp_path / "out"
    assert main(["predict", "-i", str(src), "-o", str(out), "-m", str(model_dir), "--batch-size", "2"]) == 0
    for name, dtype in (("case1.nii.gz", np.uint8), ("case1_prob.nii.gz", np.float32)):
        img = nib.load(str(out / name))
        assert img.shape == SHAPE and img.get_data_dtype() == dtype
        np.testing.assert_allclose(img.affine, lps_affine(), atol=1e-4)
    prob = np.asanyarray(nib.load(str(out / "case1_prob.nii.gz")).dataobj)
    assert np.isfinite(prob).all() and prob.min() >= 0 and prob.max() <= 1
    t = _timings(out)
    assert t["status"].tolist() == ["ok"] and float(t["model_s"].iloc[0]) > 0
    assert int(t["n_windows"].iloc[0]) >= 1


def test_predict_case_rejects_logits(tmp_path, config):
    from bmstudy.inference import predict_case

    write_case(tmp_path / "p.nii.gz")
    with pytest.raises(ValueError, match="probabilities in \\[0, 1\\]"):
        predict_case(tmp_path / "p.nii.gz", lambda b: 3.0 * b, config, tmp_path / "out", "p")
    assert not (tmp_path / "out" / "p.nii.gz").exists()


def test_predict_cohort_on_tiny_manifest_feeds_evaluate(tiny_cohort, tmp_path):
    """Manifest csv in (brain masks from the manifest, splits test+external); evaluate reads the outputs."""
    import pandas as pd

    from bmstudy.evaluation.evaluate import evaluate_cohort
    from bmstudy.inference import predict_cohort
    from bmstudy.io.manifest import load_manifest

    manifest = load_manifest(tiny_cohort)
    expected = manifest.loc[manifest["split"].isin(["test", "external"]), "patient_id"].tolist()
    assert expected and len(expected) < len(manifest)
    cfg = {"preprocessing": {"skull_strip": "mask"}, "inference_patch": 32, "inference_stride": 16}
    out = tmp_path / "pred"
    df = predict_cohort(tiny_cohort, None, out, predict_fn=zscore_threshold_fn, config=cfg, progress=False)
    assert df["patient_id"].tolist() == expected
    assert (df["status"] == "ok").all(), df["error"].tolist()
    metrics = evaluate_cohort(manifest, out, progress=False)
    assert (metrics["status"] == "ok").all(), metrics["error"].tolist()
    merged = metrics.merge(df, on="patient_id")
    np.testing.assert_allclose(pd.to_numeric(merged["model_seconds"]), merged["total_s"], rtol=1e-6)


# --------------------------------------------------------------------------- layout and inputs of `bmstudy predict`
def test_sliding_window_imports_no_tensorflow():
    """`import bmstudy.inference.sliding_window` (and the package) leaves TensorFlow unimported."""
    import subprocess
    import sys

    code = ("import sys, bmstudy.inference.sliding_window, bmstudy.inference; "
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, encoding="utf-8",
                         check=True).stdout.split()
    assert out == ["False", "False"], out


def ones_fn(batch):
    """A 'network' that fires everywhere: the written mask is then exactly the brain mask used."""
    return np.ones(batch.shape, np.float32)


def _mask_of(out_dir, pid):
    import nibabel as nib

    return np.asanyarray(nib.load(str(out_dir / f"{pid}.nii.gz")).dataobj)


def _write_dicom_series(folder, data_xyz, spacing, origin):
    """Write a 3-D (x, y, z) array as a DICOM series (one int16 file per slice) with SimpleITK."""
    import SimpleITK as sitk

    folder.mkdir(parents=True)
    img = sitk.GetImageFromArray(np.transpose(data_xyz, (2, 1, 0)).astype(np.int16))
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    writer = sitk.ImageFileWriter()
    writer.SetImageIO("GDCMImageIO")
    writer.KeepOriginalImageUIDOn()
    series_uid = "1.2.826.0.1.3680043.2.1125.1.7654321"
    d = img.GetDirection()
    for k in range(img.GetDepth()):
        sl = img[:, :, k]
        tags = {
            "0008|0060": "MR", "0020|000d": "1.2.826.0.1.3680043.2.1125.1.2", "0020|000e": series_uid,
            "0020|0037": "\\".join(map(str, (d[0], d[3], d[6], d[1], d[4], d[7]))),
            "0020|0032": "\\".join(map(str, img.TransformIndexToPhysicalPoint((0, 0, k)))),
            "0020|0013": str(k + 1), "0008|0018": f"{series_uid}.{k + 1}", "0018|0050": str(spacing[2]),
        }
        for key, value in tags.items():
            sl.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"IM{k:04d}"))  # no suffix: found by the DICM preamble
        writer.Execute(sl)


def test_case_ids_from_file_names():
    from bmstudy.inference import case_id_from_path

    assert case_id_from_path("/x/p1_0000.nii.gz") == "p1"
    assert case_id_from_path("p2_t1c.nrrd") == "p2"
    assert case_id_from_path("p3.mha") == "p3"
    assert case_id_from_path("/data/series_7") == "series_7"
    assert case_id_from_path("_0000.nii") == "_0000"


def test_folder_of_nrrd_scans_with_brain_mask_folder(tmp_path):
    """NRRD / MetaImage images and `_brain` masks in one folder: masks are matched, not predicted."""
    from bmstudy.inference import predict_cohort
    from bmstudy.io import read_volume, write_volume

    src = tmp_path / "scans"
    src.mkdir()
    brains = {}
    for i, name in enumerate(["a.nrrd", "b_0000.nrrd", "c.mha"]):
        img, brain, _ = head_arrays(seed=i)
        write_volume(img, lps_affine(), src / name)
        pid = name.split(".")[0].removesuffix("_0000")
        write_volume(brain, lps_affine(), src / f"{pid}_brain.nrrd", dtype=np.uint8)
        brains[pid] = brain
    (src / "notes.txt").write_text("not a volume", encoding="utf-8")
    cfg = {"preprocessing": {"skull_strip": "mask", "target_spacing": None}, "inference_patch": 16,
           "inference_stride": 16}
    out = tmp_path / "out"
    df = predict_cohort(src, None, out, predict_fn=ones_fn, config=cfg, progress=False, brain_mask=src)
    assert df["patient_id"].tolist() == ["a", "b", "c"]
    assert (df["status"] == "ok").all(), df["error"].tolist()
    for pid, brain in brains.items():
        mask = _mask_of(out, pid)
        assert mask.shape == SHAPE
        np.testing.assert_array_equal(mask, brain)              # the matched mask, in the input grid
    # the written NIfTI has the NRRD's geometry
    pred, ref = read_volume(out / "a.nii.gz", kind="mask"), read_volume(src / "a.nrrd")
    np.testing.assert_allclose(pred.source_affine, ref.source_affine, atol=1e-4)
    # without brain masks, the folder's masks are cases too and 'mask' skull stripping fails per case
    df2 = predict_cohort(src, None, tmp_path / "out2", predict_fn=ones_fn, config=cfg, progress=False)
    assert len(df2) == 6 and (df2["status"] == "failed").all()
    assert "a.nrrd" in df2.loc[0, "error"] and "'a'" in df2.loc[0, "error"]


def test_dicom_series_subfolder_and_skull_strip_override(tmp_path):
    """A DICOM series sub-folder is one case (id = folder name); skull_strip overrides the model's."""
    from bmstudy.inference import predict_cohort
    from bmstudy.io import read_volume

    img, _, _ = head_arrays(seed=3)
    _write_dicom_series(tmp_path / "in" / "patient7", img, (0.9, 0.9, 1.5), (-20.0, 10.0, 5.0))
    write_case(tmp_path / "in" / "p8.nii.gz", seed=4)
    cfg = {"preprocessing": {"skull_strip": "mask"}, "inference_patch": 16, "inference_stride": 16}
    out = tmp_path / "out"
    failed = predict_cohort(tmp_path / "in", None, out, predict_fn=ones_fn, config=cfg, progress=False)
    assert failed["status"].tolist() == ["failed", "failed"]        # the model's 'mask' needs brain masks
    df = predict_cohort(tmp_path / "in", None, out, predict_fn=ones_fn, config=cfg, progress=False,
                        skull_strip="none")
    assert df["patient_id"].tolist() == ["p8", "patient7"]
    assert (df["status"] == "ok").all(), df["error"].tolist()
    assert df.loc[1, "image"] == str(tmp_path / "in" / "patient7")
    mask = read_volume(out / "patient7.nii.gz", kind="mask")
    ref = read_volume(tmp_path / "in" / "patient7")
    assert mask.source_shape == ref.source_shape == SHAPE
    np.testing.assert_allclose(mask.source_affine, ref.source_affine, atol=1e-4)
    assert mask.data.all()                                           # 'none': the whole volume is brain
    with pytest.raises(ValueError, match="skull_strip"):
        predict_cohort(tmp_path / "in", None, out, predict_fn=ones_fn, config=cfg, skull_strip="bet")
    # a folder that is itself one DICOM series
    one = predict_cohort(tmp_path / "in" / "patient7", None, tmp_path / "one", predict_fn=ones_fn, config=cfg,
                         progress=False, skull_strip="none")
    assert one["patient_id"].tolist() == ["patient7"] and one["status"].tolist() == ["ok"]


def test_two_column_manifest_and_single_file(tmp_path):
    """A prediction manifest needs only patient_id, image (relative paths); brain_mask is optional."""
    import nibabel as nib
    import pandas as pd

    from bmstudy.inference import predict_cohort

    (tmp_path / "img").mkdir()
    brains = {}
    for i, pid in enumerate(["x1", "x2"]):
        img, brain, _ = head_arrays(seed=i)
        nib.save(nib.Nifti1Image(img, lps_affine()), str(tmp_path / "img" / f"{pid}.nii.gz"))
        nib.save(nib.Nifti1Image(brain, lps_affine()), str(tmp_path / "img" / f"{pid}_bm.nii.gz"))
        brains[pid] = brain
    pd.DataFrame({"patient_id": ["x1", "x2"], "image": ["img/x1.nii.gz", "img/x2.nii.gz"]}).to_csv(
        tmp_path / "two.csv", index=False)
    cfg = {"preprocessing": {"skull_strip": "none", "target_spacing": None}, "inference_patch": 16,
           "inference_stride": 16}
    df = predict_cohort(tmp_path / "two.csv", None, tmp_path / "o1", predict_fn=zscore_threshold_fn, config=cfg,
                        progress=False)                          # default splits: no split column -> all rows
    assert df["patient_id"].tolist() == ["x1", "x2"] and (df["status"] == "ok").all(), df["error"].tolist()
    # with a brain_mask column and the model's 'mask' backend
    pd.DataFrame({"patient_id": ["x1", "x2"], "image": ["img/x1.nii.gz", "img/x2.nii.gz"],
                  "brain_mask": ["img/x1_bm.nii.gz", "img/x2_bm.nii.gz"]}).to_csv(tmp_path / "three.csv", index=False)
    cfg_mask = {**cfg, "preprocessing": {"skull_strip": "mask", "target_spacing": None}}
    df = predict_cohort(tmp_path / "three.csv", None, tmp_path / "o2", predict_fn=ones_fn, config=cfg_mask,
                        progress=False)
    assert (df["status"] == "ok").all(), df["error"].tolist()
    for pid, brain in brains.items():
        np.testing.assert_array_equal(_mask_of(tmp_path / "o2", pid), brain)
    # one file + one brain mask file
    df = predict_cohort(tmp_path / "img" / "x2.nii.gz", None, tmp_path / "o3", predict_fn=ones_fn, config=cfg_mask,
                        progress=False, brain_mask=tmp_path / "img" / "x2_bm.nii.gz")
    assert df["patient_id"].tolist() == ["x2"] and df["status"].tolist() == ["ok"]
    np.testing.assert_array_equal(_mask_of(tmp_path / "o3", "x2"), brains["x2"])
    with pytest.raises(ValueError, match="one brain mask file"):
        predict_cohort(tmp_path / "two.csv", None, tmp_path / "o4", predict_fn=ones_fn, config=cfg,
                       brain_mask=tmp_path / "img" / "x2_bm.nii.gz")
    # bad prediction manifests name the file and the problem
    pd.DataFrame({"patient_id": ["x1"], "path": ["img/x1.nii.gz"]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match="'image'"):
        predict_cohort(tmp_path / "bad.csv", None, tmp_path / "o5", predict_fn=ones_fn, config=cfg)
    pd.DataFrame({"patient_id": ["x1", "x1"], "image": ["img/x1.nii.gz"] * 2}).to_csv(tmp_path / "dup.csv", index=False)
    with pytest.raises(ValueError, match="duplicate patient_id 'x1'"):
        predict_cohort(tmp_path / "dup.csv", None, tmp_path / "o6", predict_fn=ones_fn, config=cfg)


def test_cli_brain_mask_and_skull_strip(tmp_path, monkeypatch, capsys):
    """`bmstudy predict -i FILE --brain-mask FILE` / `--skull-strip none` with a fake predictor (no TF)."""
    import argparse

    import nibabel as nib

    from bmstudy.inference import network, predictor

    img, brain, _ = head_arrays(seed=5)
    nib.save(nib.Nifti1Image(img, lps_affine()), str(tmp_path / "scan.nii.gz"))
    nib.save(nib.Nifti1Image(brain, lps_affine()), str(tmp_path / "scan_brain.nii.gz"))
    cfg = {"preprocessing": {"skull_strip": "mask", "target_spacing": None}, "inference_patch": 16,
           "inference_stride": 16}
    monkeypatch.setattr(network, "load_predictor", lambda model_dir: (ones_fn, dict(cfg)))
    parser = argparse.ArgumentParser()
    predictor.add_cli_arguments(parser)

    def run(*extra):
        args = parser.parse_args(["-i", str(tmp_path / "scan.nii.gz"), "-m", str(tmp_path / "model"), *extra])
        return predictor.cli_main(args)

    assert run("-o", str(tmp_path / "o1")) == 1                      # the model's 'mask' and no mask given
    assert run("-o", str(tmp_path / "o2"), "--brain-mask", str(tmp_path / "scan_brain.nii.gz")) == 0
    np.testing.assert_array_equal(_mask_of(tmp_path / "o2", "scan"), brain)
    assert run("-o", str(tmp_path / "o3"), "--skull-strip", "none") == 0
    assert _mask_of(tmp_path / "o3", "scan").all()
    assert "1 case(s) ok, 0 failed" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        parser.parse_args(["-i", "x", "-o", "y", "-m", "z", "--skull-strip", "bet"])


def test_predict_cohort_takes_inference_params(tmp_path, config):
    """params=InferenceParams(...) gives the same outputs as the keywords; mixing both is an error."""
    from bmstudy.inference import predict_cohort
    from bmstudy.plan import InferenceParams

    write_case(tmp_path / "q.nii.gz")
    kw = predict_cohort(tmp_path / "q.nii.gz", None, tmp_path / "kw", predict_fn=sigmoid_fn, config=config,
                        progress=False, patch=32, stride=16, blend="gaussian", tta_flip=True, threshold=0.4)
    par = predict_cohort(tmp_path / "q.nii.gz", None, tmp_path / "par", predict_fn=sigmoid_fn, config=config,
                         progress=False,
                         params=InferenceParams(patch=32, stride=16, blend="gaussian", tta=True, threshold=0.4))
    assert kw["status"].tolist() == par["status"].tolist() == ["ok"]
    for name in ("q.nii.gz", "q_prob.nii.gz"):
        assert (tmp_path / "kw" / name).read_bytes() == (tmp_path / "par" / name).read_bytes()
    with pytest.raises(ValueError, match="either as params or as keywords"):
        predict_cohort(tmp_path / "q.nii.gz", None, tmp_path / "x", predict_fn=sigmoid_fn, config=config,
                       params=InferenceParams(), blend="gaussian")
