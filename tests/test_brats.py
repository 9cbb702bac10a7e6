"""BraTS-METS 2023 lesion-wise scores on hand-built volumes, expected numbers worked out by hand.

Spacing is 1 mm unless stated, so a voxel is 1 mm^3. A 2x2x2 cube has 8 voxels, all on its surface.
P95 below is numpy's linear percentile: for n sorted distances, rank 0.95 * (n - 1).
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from bmstudy.evaluation import brats as B


def _vol(shape=(16, 16, 16)) -> np.ndarray:
    return np.zeros(shape, dtype=bool)


def _cube(m: np.ndarray, x: int, y: int = 2, z: int = 2, n: int = 2) -> np.ndarray:
    m[x:x + n, y:y + n, z:z + n] = True
    return m


def test_keys_and_perfect_prediction():
    t = _cube(_vol(), 2)
    r = B.brats_lesion_metrics(t.copy(), t, (1, 1, 1))
    assert tuple(r) == B.BRATS_KEYS
    assert r == {"lesionwise_dice": 1.0, "lesionwise_hd95": 0.0, "n_truth": 1, "tp": 1, "fn": 0, "fp": 0,
                 "legacy_dice": 1.0, "legacy_hd95": 0.0}


def test_merge_by_dilation():
    # cubes at x = 2..3 and x = 6..7 (two background voxels between, x = 4, 5). One 18-neighbourhood
    # dilation grows them to x = 1..4 and 5..8: face-adjacent, one dilated component -> ONE lesion of 16.
    t = _cube(_cube(_vol(), 2), 6)
    p = _cube(_vol(), 2)  # the first cube only
    r = B.brats_lesion_metrics(p, t, (1, 1, 1))
    assert (r["n_truth"], r["tp"], r["fn"], r["fp"]) == (1, 1, 0, 0)
    # Dice = 2 * 8 / (16 + 8) = 2/3
    assert r["lesionwise_dice"] == pytest.approx(2 / 3)
    # pred -> truth: 8 zeros. truth -> pred: 8 zeros (first cube), x = 6 face: 3 mm (4 voxels),
    # x = 7 face: 4 mm (4 voxels); 16 values, rank 0.95 * 15 = 14.25 -> between two 4s -> 4.
    assert r["lesionwise_hd95"] == pytest.approx(4.0)
    # any_overlap does not merge: two lesions, the second missed -> Dice (1 + 0) / 2, HD95 (0 + 374) / 2
    a = B.brats_lesion_metrics(p, t, (1, 1, 1), matching="any_overlap")
    assert (a["n_truth"], a["tp"], a["fn"], a["fp"]) == (2, 1, 1, 0)
    assert a["lesionwise_dice"] == pytest.approx(0.5) and a["lesionwise_hd95"] == pytest.approx(187.0)


def test_no_merge_beyond_the_dilation_distance():
    # cubes at x = 2..3 and 7..8 (three background voxels between, x = 4..6): dilated to 1..4 and
    # 6..9, which leave x = 5 empty -> two lesions; the second is missed.
    t = _cube(_cube(_vol(), 2), 7)
    r = B.brats_lesion_metrics(_cube(_vol(), 2), t, (1, 1, 1))
    assert (r["n_truth"], r["tp"], r["fn"], r["fp"]) == (2, 1, 1, 0)
    assert r["lesionwise_dice"] == pytest.approx((1 + 0) / 2)
    assert r["lesionwise_hd95"] == pytest.approx((0 + 374) / 2)
    # with dilation 2 (grown to 0..5 and 5..10) they merge again: Dice 2 * 8 / (16 + 8)
    r2 = B.brats_lesion_metrics(_cube(_vol(), 2), t, (1, 1, 1), dilation=2)
    assert r2["n_truth"] == 1 and r2["lesionwise_dice"] == pytest.approx(2 / 3)


def test_one_prediction_over_two_lesions():
    # lesions at x = 2..3 and x = 10..11; one bar x = 2..11 (10 x 2 x 2 = 40 voxels) covers both.
    t = _cube(_cube(_vol(), 2), 10)
    p = _vol()
    p[2:12, 2:4, 2:4] = True
    r = B.brats_lesion_metrics(p, t, (1, 1, 1))
    # both lesions are true positives, each scored against the whole bar: Dice = 2 * 8 / (8 + 40) = 1/3
    assert (r["n_truth"], r["tp"], r["fn"], r["fp"]) == (2, 2, 0, 0)
    assert r["lesionwise_dice"] == pytest.approx(1 / 3)
    # lesion 1: truth -> bar all 0; bar -> lesion: x = 2, 3 -> 0 (8), x = 4..11 -> 1..8 mm (4 each);
    # 40 values, rank 0.95 * 39 = 37.05, sorted[36..39] = 8 -> 8 mm. Lesion 2 the same by symmetry.
    assert r["lesionwise_hd95"] == pytest.approx(8.0)
    # legacy: Dice = 2 * 16 / (40 + 16) = 4/7
    assert r["legacy_dice"] == pytest.approx(4 / 7)


def test_tiny_lesions_ignored_and_their_predictions_are_not_false_positives():
    t = _vol()
    t[2, 2, 2] = True                 # 1 mm^3 <= 2: ignored
    t[12, 12, 11:13] = True           # 2 mm^3 <= 2 (the bound is inclusive): ignored
    _cube(t, 2, 10, 2)                # 8 mm^3: counted
    p = _vol()
    p[2, 2, 2] = True                 # touches only the ignored lesion
    _cube(p, 2, 10, 2)
    r = B.brats_lesion_metrics(p, t, (1, 1, 1))
    # counted: the cube, perfectly found. The speck prediction is neither TP nor FP (official code).
    assert (r["n_truth"], r["tp"], r["fn"], r["fp"]) == (1, 1, 0, 0)
    assert r["lesionwise_dice"] == 1.0 and r["lesionwise_hd95"] == 0.0
    # with no size filter: 3 lesions, the 2-voxel one missed -> Dice (1 + 1 + 0) / 3, HD95 (0 + 0 + 374) / 3
    r0 = B.brats_lesion_metrics(p, t, (1, 1, 1), min_volume_mm3=0.0)
    assert (r0["n_truth"], r0["tp"], r0["fn"], r0["fp"]) == (3, 2, 1, 0)
    assert r0["lesionwise_dice"] == pytest.approx(2 / 3)
    assert r0["lesionwise_hd95"] == pytest.approx(374 / 3)


def test_only_tiny_lesions_and_nothing_else_scores_like_both_empty():
    t = _vol()
    t[5, 5, 5] = True
    r = B.brats_lesion_metrics(_vol(), t, (1, 1, 1))
    # 0 counted lesions + 0 FP: 0/0 -> Dice 1, HD95 0 (official fallback); the legacy scores see the miss
    assert (r["lesionwise_dice"], r["lesionwise_hd95"], r["n_truth"]) == (1.0, 0.0, 0)
    assert (r["legacy_dice"], r["legacy_hd95"]) == (0.0, 374.0)


def test_false_positive_far_away():
    t = _cube(_vol(), 2)
    p = t.copy()
    p[14, 14, 14] = True              # a 1-voxel component far away (predictions are not size-filtered)
    r = B.brats_lesion_metrics(p, t, (1, 1, 1))
    # Dice = (1) / (1 lesion + 1 FP) = 0.5; HD95 = (0 + 374) / 2 = 187
    assert (r["n_truth"], r["tp"], r["fn"], r["fp"]) == (1, 1, 0, 1)
    assert r["lesionwise_dice"] == pytest.approx(0.5)
    assert r["lesionwise_hd95"] == pytest.approx(187.0)


def test_match_within_the_dilated_lesion_without_overlap():
    t = _cube(_vol(), 2)              # x, y, z = 2..3
    p = _vol()
    p[4, 2, 2] = True                 # face neighbour of (3, 2, 2): inside the dilated lesion
    r = B.brats_lesion_metrics(p, t, (1, 1, 1))
    assert (r["tp"], r["fn"], r["fp"]) == (1, 0, 0)
    assert r["lesionwise_dice"] == 0.0          # 2 * 0 / (8 + 1)
    # pred -> truth: 1. truth -> pred from (x, y, z) to (4, 2, 2): 1, sqrt2, sqrt2, sqrt3, 2, sqrt5, sqrt5,
    # sqrt6; rank 0.95 * 7 = 6.65 -> sqrt5 + 0.65 (sqrt6 - sqrt5)
    assert r["lesionwise_hd95"] == pytest.approx(math.sqrt(5) + 0.65 * (math.sqrt(6) - math.sqrt(5)))
    # with any_overlap it is a miss plus a false positive: Dice 0 / 2, HD95 (374 + 374) / 2
    a = B.brats_lesion_metrics(p, t, (1, 1, 1), matching="any_overlap")
    assert (a["tp"], a["fn"], a["fp"], a["lesionwise_dice"], a["lesionwise_hd95"]) == (0, 1, 1, 0.0, 374.0)
    # a corner neighbour of (3, 3, 3) is outside the 18-neighbourhood dilation (the official structure)
    c = _vol()
    c[4, 4, 4] = True
    rc = B.brats_lesion_metrics(c, t, (1, 1, 1))
    assert (rc["tp"], rc["fn"], rc["fp"]) == (0, 1, 1)


def test_both_empty_and_one_empty():
    z = _vol()
    r = B.brats_lesion_metrics(z, z, (1, 1, 1))
    assert r == {"lesionwise_dice": 1.0, "lesionwise_hd95": 0.0, "n_truth": 0, "tp": 0, "fn": 0, "fp": 0,
                 "legacy_dice": 1.0, "legacy_hd95": 0.0}
    t = _cube(_vol(), 2)
    miss = B.brats_lesion_metrics(z, t, (1, 1, 1))
    assert (miss["lesionwise_dice"], miss["lesionwise_hd95"], miss["fn"]) == (0.0, 374.0, 1)
    assert (miss["legacy_dice"], miss["legacy_hd95"]) == (0.0, 374.0)
    fp = B.brats_lesion_metrics(_cube(_cube(_vol(), 2), 10), z, (1, 1, 1))
    assert (fp["lesionwise_dice"], fp["lesionwise_hd95"], fp["fp"], fp["n_truth"]) == (0.0, 374.0, 2, 0)


def test_anisotropic_spacing():
    t = _vol()
    t[5, 5, 4:7] = True               # 3 voxels x (2 x 1 x 1) mm^3 = 6 mm^3: counted
    p = _vol()
    p[6, 5, 4:7] = True               # shifted one voxel (2 mm) along axis 0: inside the dilated lesion
    r = B.brats_lesion_metrics(p, t, (2.0, 1.0, 1.0))
    # no overlap -> Dice 0; every surface voxel is 2 mm from the other surface -> HD95 2
    assert (r["tp"], r["lesionwise_dice"]) == (1, 0.0)
    assert r["lesionwise_hd95"] == pytest.approx(2.0)
    assert r["legacy_hd95"] == pytest.approx(2.0)
    # the same shift along axis 2 costs 1 mm only
    p2 = _vol()
    p2[5, 5, 5:8] = True
    r2 = B.brats_lesion_metrics(p2, t, (2.0, 1.0, 1.0))
    # overlap 2 voxels: Dice 2 * 2 / (3 + 3) = 2/3; distances: 0, 0, 1 each way -> rank 1.9 -> 0.9
    assert r2["lesionwise_dice"] == pytest.approx(2 / 3)
    assert r2["lesionwise_hd95"] == pytest.approx(0.9)
    # the size bound is in mm^3: one voxel is 2 mm^3 at (2, 1, 1) -> ignored, 3 mm^3 at (2, 1.5, 1) -> counted
    one = _vol()
    one[3, 3, 3] = True
    assert B.brats_lesion_metrics(one, one, (2.0, 1.0, 1.0))["n_truth"] == 0
    assert B.brats_lesion_metrics(one, one, (2.0, 1.5, 1.0))["n_truth"] == 1


def test_lesion_on_the_border():
    t = _vol()
    t[:3, :3, :3] = True              # 3x3x3 in the corner (27 voxels)
    p = _vol()
    p[:2, :2, :2] = True              # 2x2x2 in the same corner (8 voxels)
    r = B.brats_lesion_metrics(p, t, (1, 1, 1))
    assert (r["tp"], r["fn"], r["fp"]) == (1, 0, 0)
    assert r["lesionwise_dice"] == pytest.approx(2 * 8 / (27 + 8))
    # voxels outside the volume are background, so the truth surface is its 26 non-centre voxels.
    # truth -> pred: 7 zeros, 12 ones (one coordinate = 2), 6 sqrt2, 1 sqrt3; rank 0.95 * 25 = 23.75
    # -> sorted[23] = sorted[24] = sqrt2. pred -> truth: 7 zeros and 1 (the voxel (1,1,1)): rank 6.65 -> 0.65.
    assert r["lesionwise_hd95"] == pytest.approx(math.sqrt(2))
    # a prediction next to the border lesion is matched through the (clipped) dilation
    q = _vol()
    q[3, 0, 0] = True
    assert B.brats_lesion_metrics(q, t, (1, 1, 1))["tp"] == 1


def test_match_lesions_pairs():
    t = _cube(_cube(_vol(), 2), 10)
    p = _vol()
    p[2:12, 2:4, 2:4] = True
    p[14, 14, 14] = True
    m = B.match_lesions(p, t, (1, 1, 1))
    assert m.lesion_voxels.tolist() == [8, 8] and sorted(m.pred_voxels.tolist()) == [1, 40]
    assert m.pairs.shape == (2, 2) and set(m.pairs[:, 0]) == {1, 2} and len(set(m.pairs[:, 1])) == 1
    assert m.false_positives().size == 1


def test_errors():
    a = _vol()
    with pytest.raises(ValueError, match="shape"):
        B.brats_lesion_metrics(a, _vol((4, 4, 4)), (1, 1, 1))
    with pytest.raises(ValueError, match="spacing"):
        B.brats_lesion_metrics(a, a, (1, 1))
    with pytest.raises(ValueError, match="dilation"):
        B.brats_lesion_metrics(a, a, (1, 1, 1), dilation=-1)
    with pytest.raises(ValueError, match="matching"):
        B.brats_lesion_metrics(a, a, (1, 1, 1), matching="centroid")
    with pytest.raises(ValueError):
        B.brats_lesion_metrics(a.astype(np.uint8) + 2, a, (1, 1, 1))


def _reference(p: np.ndarray, t: np.ndarray, spacing, dilation: int, min_vol: float) -> dict:
    """The organisers' procedure step by step on whole volumes (one lesion at a time, each lesion
    dilated on its own), written independently of the module's vectorised shortcut."""
    from scipy import ndimage
    from bmstudy.evaluation.surface import hd95
    cc26, st18 = np.ones((3, 3, 3), bool), ndimage.generate_binary_structure(3, 2)
    grown, k = ndimage.label(ndimage.binary_dilation(t, st18, iterations=dilation), cc26)
    merged = np.where(t, grown, 0)
    pl, n_p = ndimage.label(p, cc26)
    voxel = float(np.prod(spacing))
    touched, dices, hds, tp = set(), [], [], 0
    for lesion in range(1, k + 1):
        g = merged == lesion
        zone = ndimage.binary_dilation(g, st18, iterations=dilation)
        hit = set(np.unique(pl[zone & (pl > 0)]).tolist())
        touched |= hit
        if g.sum() * voxel <= min_vol:
            continue
        q = np.isin(pl, list(hit))
        dices.append(2 * (g & q).sum() / (g.sum() + q.sum()))
        hds.append(hd95(q, g, spacing, empty_distance=374.0))
        tp += bool(hit)
    fp = n_p - len(touched)
    den = len(dices) + fp
    return {"lesionwise_dice": sum(dices) / den if den else 1.0,
            "lesionwise_hd95": (sum(hds) + 374 * fp) / den if den else 0.0,
            "n_truth": len(dices), "tp": tp, "fn": len(dices) - tp, "fp": fp}


@pytest.mark.parametrize("seed", range(6))
def test_equals_the_step_by_step_procedure_on_random_volumes(seed):
    from scipy import ndimage
    rng = np.random.default_rng(seed)
    shape = (18, 16, 14)
    t = ndimage.gaussian_filter(rng.random(shape), 1.0) > 0.62
    p = ndimage.gaussian_filter(rng.random(shape), 1.0) > 0.62
    p |= t & (rng.random(shape) < 0.5)
    spacing = [(1.0, 1.0, 1.0), (0.8, 1.1, 2.0)][seed % 2]
    dilation = 1 + seed % 3 // 2
    ours = B.brats_lesion_metrics(p, t, spacing, dilation=dilation, min_volume_mm3=2.0)
    ref = _reference(p, t, spacing, dilation, 2.0)
    assert ref["n_truth"] > 0
    for key, value in ref.items():
        assert ours[key] == pytest.approx(value, abs=1e-12), key


@pytest.mark.parametrize("iterations", [1, 2, 3])
def test_boxed_dilation_equals_whole_volume_dilation(iterations):
    from scipy import ndimage
    rng = np.random.default_rng(iterations)
    t = ndimage.gaussian_filter(rng.random((20, 17, 15)), 1.0) > 0.6
    t[0, 0, 0] = t[-1, -1, -1] = True  # components on the border
    want = ndimage.binary_dilation(t, ndimage.generate_binary_structure(3, 2), iterations=iterations)
    np.testing.assert_array_equal(B._dilate(t, iterations), want)
