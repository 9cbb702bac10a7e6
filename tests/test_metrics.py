"""bmstudy.evaluation (voxel, lesion, histogram metrics) vs scikit-learn, brute force and hand-built lesions."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage
from sklearn import metrics as skm

from bmstudy import evaluation as M
from bmstudy.statistics import auc_from_hist


def _sk(prob: np.ndarray, truth: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    t = truth.ravel().astype(int)
    p = (prob.ravel() >= threshold).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(t, p, labels=[0, 1]).ravel()
    return {
        "precision": skm.precision_score(t, p, zero_division=0),
        "recall": skm.recall_score(t, p, zero_division=0),
        "f1": skm.f1_score(t, p, zero_division=0),
        "iou": skm.jaccard_score(t, p, zero_division=0),
        "dice": skm.f1_score(t, p, zero_division=0),
        "specificity": tn / (tn + fp) if tn + fp else float("nan"),
        "mcc": skm.matthews_corrcoef(t, p),
        "auc": skm.roc_auc_score(t, prob.ravel()) if 0 < t.sum() < t.size else float("nan"),
    }


def _volume(seed: int, shape=(24, 20, 16), prevalence=0.08, quantise: int | None = None):
    rng = np.random.default_rng(seed)
    truth = rng.random(shape) < prevalence
    prob = np.clip(0.35 * truth + 0.75 * rng.random(shape), 0, 1).astype(np.float32)
    if quantise:
        prob = (np.round(prob * quantise) / quantise).astype(np.float32)  # many ties
    return prob, truth


@pytest.mark.parametrize(
    "seed,prev,quant", [(0, 0.08, None), (1, 0.3, None), (2, 0.02, 10), (3, 0.5, 3), (4, 0.001, None)]
)
def test_case_metrics_equal_sklearn_random(seed, prev, quant):
    prob, truth = _volume(seed, prevalence=prev, quantise=quant)
    assert truth.any() and (~truth).any()
    got = M.case_metrics(prob, truth)
    ref = _sk(prob, truth)
    assert list(got) == list(M.METRIC_KEYS)
    for k in M.METRIC_KEYS:
        assert got[k] == pytest.approx(ref[k], abs=1e-9, rel=1e-9), k


@pytest.mark.parametrize("threshold", [0.2, 0.5, 0.9])
def test_case_metrics_threshold_and_mask_equal_sklearn(threshold):
    prob, truth = _volume(7, prevalence=0.15)
    mask = np.zeros(truth.shape, dtype=np.uint8)
    mask[3:20, 2:18, 1:14] = 1
    got = M.case_metrics(prob, truth.astype(np.uint8), threshold=threshold, mask=mask)
    ref = _sk(prob[mask == 1], truth[mask == 1], threshold)
    for k in M.METRIC_KEYS:
        assert got[k] == pytest.approx(ref[k], abs=1e-9), k
    # the mask really restricts: the full-volume values differ
    assert M.case_metrics(prob, truth, threshold=threshold)["auc"] != got["auc"]


def test_auc_score_equals_sklearn_both_search_directions():
    rng = np.random.default_rng(11)
    for prev in (0.01, 0.5, 0.97):  # smaller class positive, balanced, smaller class negative
        t = rng.random(3000) < prev
        s = np.round(rng.normal(size=3000) + t, 1)  # ties
        assert M.auc_score(s, t) == pytest.approx(skm.roc_auc_score(t, s), abs=1e-12)
    assert math.isnan(M.auc_score(np.arange(5.0), np.zeros(5, bool)))


def test_confusion_counts_match_sklearn_with_mask():
    rng = np.random.default_rng(5)
    p = rng.random((10, 11, 12)) < 0.3
    t = rng.random((10, 11, 12)) < 0.2
    m = rng.random((10, 11, 12)) < 0.7
    tn, fp, fn, tp = skm.confusion_matrix(t[m], p[m], labels=[False, True]).ravel()
    assert M.confusion_counts(p, t, mask=m) == (tp, fp, fn, tn)
    assert sum(M.confusion_counts(p, t)) == p.size


# ----------------------------------------------------------------------------- edge cases
def test_empty_truth_and_empty_prediction_is_perfect():
    prob = np.full((8, 8, 8), 0.1, np.float32)
    truth = np.zeros((8, 8, 8), np.uint8)
    got = M.case_metrics(prob, truth)
    for k in ("precision", "recall", "f1", "iou", "dice", "specificity", "mcc"):
        assert got[k] == 1.0, k
    assert math.isnan(got["auc"])  # undefined: only one class


def test_empty_truth_with_false_positives_scores_zero():
    prob = np.zeros((8, 8, 8), np.float32)
    prob[2:4, 2:4, 2:4] = 0.9
    truth = np.zeros((8, 8, 8), bool)
    got = M.case_metrics(prob, truth)
    ref = _sk(prob, truth)
    assert got["precision"] == got["recall"] == got["f1"] == got["iou"] == got["dice"] == 0.0
    assert got["specificity"] == pytest.approx(ref["specificity"]) == pytest.approx(1 - 8 / 512)
    assert got["mcc"] == 0.0 == ref["mcc"]
    assert math.isnan(got["auc"])


def test_missed_lesion_empty_prediction():
    prob = np.full((8, 8, 8), 0.2, np.float32)
    prob[0, 0, 0] = 0.3
    truth = np.zeros((8, 8, 8), bool)
    truth[0:2, 0:2, 0:2] = True
    got = M.case_metrics(prob, truth)
    ref = _sk(prob, truth)
    for k in M.METRIC_KEYS:  # everything defined here, equal to sklearn (zero_division=0)
        assert got[k] == pytest.approx(ref[k], abs=1e-12), k
    assert got["precision"] == 0.0 and got["recall"] == 0.0 and got["specificity"] == 1.0
    assert 0.5 < got["auc"] < 1.0


def test_all_lesion_volume():
    truth = np.ones((4, 4, 4), bool)
    got = M.case_metrics(np.ones((4, 4, 4)), truth)
    assert got["precision"] == got["recall"] == got["dice"] == got["specificity"] == got["mcc"] == 1.0
    assert math.isnan(got["auc"])
    got = M.case_metrics(np.zeros((4, 4, 4)), truth)
    assert got["recall"] == got["dice"] == got["precision"] == got["specificity"] == got["mcc"] == 0.0


def test_perfect_prediction_and_all_positive_prediction_vs_sklearn():
    prob, truth = _volume(3)
    got = M.case_metrics(truth.astype(np.float32), truth)
    assert all(got[k] == 1.0 for k in M.METRIC_KEYS)
    ones = np.ones_like(prob)
    got = M.case_metrics(ones, truth)
    ref = _sk(ones, truth)
    for k in M.METRIC_KEYS:
        assert got[k] == pytest.approx(ref[k], abs=1e-12), k  # mcc 0 (denominator 0), auc 0.5


def test_validation_errors():
    prob, truth = _volume(0)
    with pytest.raises(ValueError, match="shape mismatch"):
        M.case_metrics(prob, truth[:-1])
    with pytest.raises(ValueError, match="binary"):
        M.case_metrics(prob, truth.astype(np.uint8) * 4)
    bad = prob.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        M.case_metrics(bad, truth)
    with pytest.raises(ValueError, match="binary"):
        M.confusion_counts(prob, truth)  # probabilities are not a mask
    from bmstudy.io import VolumeError  # the one 0/1 validator (bmstudy.io.as_binary) names the array

    with pytest.raises(VolumeError, match=r"binary mask 'truth' must contain only 0/1, found values \[4\]"):
        M.case_metrics(prob, truth.astype(np.uint8) * 4)
    with pytest.raises(VolumeError, match="binary mask 'mask'"):
        M.score_histogram(prob, truth, mask=np.full(truth.shape, 2, np.uint8))
    with pytest.raises(TypeError, match="truth_mask"):
        M.lesion_table(truth, truth.astype(str), (1, 1, 1))


def test_metrics_from_counts_large_counts_exact():
    """Voxel counts far beyond int64 products: compare with exact rational arithmetic."""
    from decimal import Decimal, getcontext

    getcontext().prec = 60
    tp, fp, fn, tn = 3_000_000_017, 1_000_000_003, 500_000_001, 5_000_000_000_000
    got = M.metrics_from_counts(tp, fp, fn, tn)
    D = Decimal
    mcc = (D(tp) * D(tn) - D(fp) * D(fn)) / ((D(tp + fp) * D(tp + fn) * D(tn + fp) * D(tn + fn)).sqrt())
    assert got["mcc"] == pytest.approx(float(mcc), rel=1e-13)
    assert got["dice"] == pytest.approx(2 * tp / (2 * tp + fp + fn), rel=1e-15)
    assert got["specificity"] == pytest.approx(tn / (tn + fp), rel=1e-15)
    with pytest.raises(ValueError):
        M.metrics_from_counts(-1, 0, 0, 0)


# ----------------------------------------------------------------------------- histograms
def test_score_histogram_floor_binning_and_edges():
    prob = np.array([0.0, 0.49999, 0.5, 0.74, 0.75, 1.0, 1.0], np.float32)
    truth = np.array([0, 0, 1, 1, 0, 1, 0], bool)
    pos, neg = M.score_histogram(prob, truth, n_bins=4)
    assert pos.dtype == np.int64 and neg.dtype == np.int64
    np.testing.assert_array_equal(pos, [0, 0, 2, 1])  # 0.5, 0.74 -> bin 2; 1.0 -> last bin
    np.testing.assert_array_equal(neg, [1, 1, 0, 2])  # 0.75 -> bin 3; 1.0 -> last bin
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        M.score_histogram(prob + 0.5, truth)


def test_score_histogram_threshold_boundary_and_mask():
    prob, truth = _volume(4, prevalence=0.2)
    mask = np.zeros(truth.shape, bool)
    mask[:, :10] = True
    pos, neg = M.score_histogram(prob, truth, n_bins=65536, mask=mask)
    assert pos.sum() == np.count_nonzero(truth & mask) and neg.sum() == np.count_nonzero(~truth & mask)
    # bins >= n/2 hold exactly the voxels with prob >= 0.5
    assert pos[32768:].sum() == np.count_nonzero(truth & mask & (prob >= 0.5))
    assert neg[32768:].sum() == np.count_nonzero(~truth & mask & (prob >= 0.5))


def test_histogram_auc_is_auc_of_quantised_scores():
    prob, truth = _volume(6, prevalence=0.1)
    for n_bins in (16, 1000, 65536):
        pos, neg = M.score_histogram(prob, truth, n_bins=n_bins)
        q = np.minimum(np.floor(prob.astype(np.float64) * n_bins), n_bins - 1)
        assert auc_from_hist(pos, neg) == pytest.approx(skm.roc_auc_score(truth.ravel(), q.ravel()), abs=1e-12)


# ----------------------------------------------------------------------------- lesions
def _ball(shape, center, radius_vox, spacing=(1.0, 1.0, 1.0)):
    grid = np.ogrid[tuple(slice(0, s) for s in shape)]
    d2 = sum(((g - c) * sp) ** 2 for g, c, sp in zip(grid, center, spacing))
    return d2 <= radius_vox**2


def test_equivalent_diameter_and_bins():
    assert M.equivalent_diameter_mm(4 / 3 * np.pi * 5**3) == pytest.approx(10.0)
    assert M.size_bin(2.99) == "<3 mm" and M.size_bin(3.0) == "3-10 mm"
    assert M.size_bin(10.0) == "3-10 mm" and M.size_bin(10.01) == ">10 mm"


def test_lesion_table_hand_built_counts_sizes_and_matching():
    shape = (40, 40, 40)
    truth = np.zeros(shape, bool)
    pred = np.zeros(shape, bool)
    truth[2:6, 2:6, 2:6] = True            # T1: 64 vox, detected by P1 (partial overlap)
    pred[3:7, 3:7, 3:7] = True             # P1: 64 vox, overlap 27
    truth[10:12, 10:12, 10:12] = True      # T2: 8 vox, missed
    truth[20, 20, 20] = True               # speck (1 vox < 3 mm^3): ignored
    pred[30:33, 30:33, 30:33] = True       # P2: 27 vox, false positive
    truth[20:30, 2:4, 2:4] = True          # T3: 40 vox
    truth[20:30, 6:8, 2:4] = True          # T4: 40 vox; one prediction P3 bridges T3 and T4
    pred[24:26, 2:8, 2:4] = True           # P3: 24 vox, overlaps T3 by 8 and T4 by 8
    df = M.lesion_table(pred, truth, (1, 1, 1))
    # issue 14 added the RANO-BM longest axial diameter and its bin after the original columns
    assert list(df.columns) == [
        "origin", "label", "n_voxels", "volume_mm3", "diameter_mm", "size_bin", "matched", "dice",
        "axial_diameter_mm", "size_bin_axial"]
    t = df[df.origin == "truth"].sort_values("n_voxels").reset_index(drop=True)
    # axial plane = axes (0, 1): T2 is a 2x2 square (diagonal 2*sqrt(2) mm), T1 a 4x4 one (4*sqrt(2))
    assert t.axial_diameter_mm[0] == pytest.approx(2 * np.sqrt(2)) and t.axial_diameter_mm[3] == pytest.approx(4 * np.sqrt(2))
    # T3, T4: 10 x 2 mm in plane, longer than 10 mm axially though 4.2 mm as equivalent spheres
    assert list(t.size_bin_axial) == ["<3 mm", ">10 mm", ">10 mm", "3-10 mm"]
    p = df[df.origin == "pred"].sort_values("n_voxels").reset_index(drop=True)
    assert sorted(t.n_voxels) == [8, 40, 40, 64]
    assert sorted(p.n_voxels) == [24, 27, 64]
    t64 = t[t.n_voxels == 64].iloc[0]
    assert t64.matched and t64.dice == pytest.approx(2 * 27 / 128)
    t8 = t[t.n_voxels == 8].iloc[0]
    assert not t8.matched and t8.dice == 0.0 and t8.size_bin == "<3 mm"
    for _, r in t[t.n_voxels == 40].iterrows():
        assert r.matched and r.dice == pytest.approx(2 * 8 / (40 + 24))
    p27 = p[p.n_voxels == 27].iloc[0]
    assert not p27.matched and p27.dice == 0.0
    p24 = p[p.n_voxels == 24].iloc[0]
    assert p24.matched and p24.dice == pytest.approx(2 * 16 / (24 + 80))  # vs union of T3 and T4
    s = M.lesion_metrics(pred, truth, (1, 1, 1))
    assert s == {
        "n_true": 4, "n_pred": 3, "n_detected": 3, "n_fp": 1,
        "lesion_sensitivity": 0.75, "lesion_precision": pytest.approx(2 / 3),
        "lesion_f1": pytest.approx(2 * 0.75 * (2 / 3) / (0.75 + 2 / 3)),
        "lesion_dice": pytest.approx((2 * 27 / 128 + 2 * (2 * 8 / 64)) / (4 + 1)),
    }


def test_lesion_union_of_several_predictions():
    truth = np.zeros((20, 20, 20), bool)
    truth[2:12, 2:6, 2:6] = True  # 160 vox
    pred = np.zeros_like(truth)
    pred[2:5, 2:6, 2:6] = True    # 48 vox inside
    pred[8:14, 2:6, 2:6] = True   # 96 vox, 64 inside
    df = M.lesion_table(pred, truth, (1, 1, 1))
    t = df[df.origin == "truth"].iloc[0]
    assert t.dice == pytest.approx(2 * (48 + 64) / (160 + 48 + 96))
    assert df[df.origin == "pred"].matched.all()


def test_connectivity_26_vs_6_and_min_volume_anisotropic():
    truth = np.zeros((10, 10, 10), bool)
    truth[2:4, 2:4, 2:4] = True
    truth[4:6, 4:6, 4:6] = True  # touches the first block only at a corner
    empty = np.zeros_like(truth)
    assert M.lesion_metrics(empty, truth, (1, 1, 1))["n_true"] == 1
    assert M.lesion_metrics(empty, truth, (1, 1, 1), connectivity=6)["n_true"] == 2
    # anisotropic spacing: 8 voxels of 0.5 x 0.5 x 2 mm = 4 mm^3 each block
    df = M.lesion_table(empty, truth, (0.5, 0.5, 2.0), min_volume_mm3=0, connectivity=6)
    assert df.volume_mm3.tolist() == [4.0, 4.0]
    assert df.diameter_mm.iloc[0] == pytest.approx((6 * 4 / np.pi) ** (1 / 3))
    # min volume 5 mm^3 drops both 4 mm^3 blocks, but keeps the 8 mm^3 26-connected lesion
    assert M.lesion_metrics(empty, truth, (0.5, 0.5, 2.0), min_volume_mm3=5, connectivity=6)["n_true"] == 0
    assert M.lesion_metrics(empty, truth, (0.5, 0.5, 2.0), min_volume_mm3=5)["n_true"] == 1
    with pytest.raises(ValueError, match="spacing"):
        M.lesion_table(empty, truth, (1, 1))
    with pytest.raises(ValueError, match="connectivity"):
        M.lesion_table(empty, truth, (1, 1, 1), connectivity=8)


def test_sphere_sizes_land_in_bins_with_anisotropic_spacing():
    spacing = (0.8, 0.8, 1.6)
    shape = (80, 80, 40)
    truth = _ball(shape, (15, 15, 10), 1.2, spacing) | _ball(shape, (40, 40, 20), 3.0, spacing) \
        | _ball(shape, (62, 62, 25), 7.0, spacing)
    df = M.lesion_table(truth, truth, spacing, min_volume_mm3=0)
    t = df[df.origin == "truth"].sort_values("volume_mm3")
    assert t.size_bin.tolist() == ["<3 mm", "3-10 mm", ">10 mm"]
    assert (t.dice == 1.0).all() and t.matched.all()
    vox = 0.8 * 0.8 * 1.6
    assert np.allclose(t.volume_mm3, t.n_voxels * vox)
    big = t.iloc[-1]
    assert big.diameter_mm == pytest.approx(14.0, rel=0.08)  # discretised sphere of radius 7 mm


def test_lesion_dice_matches_brute_force_on_random_blobs():
    rng = np.random.default_rng(3)
    truth = ndimage.binary_dilation(rng.random((30, 30, 30)) < 0.003, iterations=2)
    pred = ndimage.binary_dilation(rng.random((30, 30, 30)) < 0.003, iterations=2) | (
        ndimage.binary_erosion(truth) & (rng.random((30, 30, 30)) < 0.8))
    df = M.lesion_table(pred, truth, (1, 1, 1), min_volume_mm3=0)
    st = np.ones((3, 3, 3), bool)
    tl, nt = ndimage.label(truth, st)
    pl, npd = ndimage.label(pred, st)
    ref = []
    for i in range(1, nt + 1):
        T = tl == i
        hits = np.unique(pl[T & (pl > 0)])
        U = np.isin(pl, hits) & (pl > 0)
        ref.append(2 * np.count_nonzero(T & U) / (T.sum() + U.sum()) if hits.size else 0.0)
    got = df[df.origin == "truth"].sort_values("label").dice.to_numpy()
    assert nt > 3 and np.allclose(got, ref)
    fp_ref = sum(1 for j in range(1, npd + 1) if not np.any(truth[pl == j]))
    assert M.lesion_metrics(pred, truth, (1, 1, 1), min_volume_mm3=0)["n_fp"] == fp_ref


def test_lesion_metrics_empty_cases():
    z = np.zeros((6, 6, 6), bool)
    s = M.lesion_metrics(z, z, (1, 1, 1))
    assert s["n_true"] == s["n_pred"] == 0
    assert s["lesion_sensitivity"] == s["lesion_precision"] == s["lesion_dice"] == s["lesion_f1"] == 1.0
    p = z.copy()
    p[1:4, 1:4, 1:4] = True
    s = M.lesion_metrics(p, z, (1, 1, 1))
    assert s["n_fp"] == 1 and s["lesion_sensitivity"] == 0.0 and s["lesion_dice"] == 0.0
    s = M.lesion_metrics(z, p, (1, 1, 1))
    assert s["n_true"] == 1 and s["lesion_sensitivity"] == 0.0 and s["lesion_precision"] == 0.0
    assert len(M.lesion_table(z, z, (1, 1, 1))) == 0


def test_lesion_summary_by_size():
    a = pd.DataFrame({
        "patient_id": ["p1"] * 4 + ["p2"] * 2,
        "origin": ["truth", "truth", "pred", "pred", "truth", "pred"],
        "size_bin": ["<3 mm", ">10 mm", "3-10 mm", ">10 mm", "<3 mm", "<3 mm"],
        "matched": [False, True, False, True, True, True],
        "dice": [0.0, 0.8, 0.0, 0.8, 0.5, 0.5],
    })
    s = M.lesion_summary_by_size(a)
    assert s.index.tolist() == ["<3 mm", "3-10 mm", ">10 mm", "all"]
    assert s.loc["<3 mm", "n_true"] == 2 and s.loc["<3 mm", "sensitivity"] == 0.5
    assert s.loc["<3 mm", "mean_dice"] == pytest.approx(0.25)
    assert math.isnan(s.loc["3-10 mm", "sensitivity"]) and s.loc["3-10 mm", "n_fp"] == 1
    assert s.loc["all", "n_true"] == 3 and s.loc["all", "n_fp"] == 1
    assert s.loc["all", "fp_per_patient"] == 0.5 and s.loc["all", "precision"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="lacks columns"):
        M.lesion_summary_by_size(a.drop(columns="dice"))


@pytest.mark.slow
def test_real_case_enhancing_tumour_components(real_cases):
    """pat0004's enhancing tumour has two components (17.2 + 0.5 mL) per the data README."""
    import nibabel as nib

    case = next((c for c in real_cases if "0004" in c.name), None)
    if case is None:
        pytest.skip("pat0004 not present")
    img = nib.load(str(case / "OTMultiClass.nii.gz"))
    et = np.asarray(img.dataobj) == 4
    spacing = img.header.get_zooms()[:3]
    df = M.lesion_table(np.zeros_like(et), et, spacing, min_volume_mm3=100)
    vols = sorted(df[df.origin == "truth"].volume_mm3 / 1000, reverse=True)
    assert len(vols) == 2 and vols[0] == pytest.approx(17.2, abs=0.1) and vols[1] == pytest.approx(0.5, abs=0.1)


def test_auc_range_shortcut_with_ties_at_range_edges():
    rng = np.random.default_rng(16)
    for pos_first in (True, False):
        a = np.round(rng.uniform(0.4, 0.6, 40), 2)
        b = np.round(rng.uniform(0.0, 1.0, 5000), 2)
        s = np.r_[a, b]
        t = np.r_[np.ones(40, bool), np.zeros(5000, bool)]
        if not pos_first:
            t = ~t  # the positive class is now the large one
        assert M.auc_score(s, t) == pytest.approx(skm.roc_auc_score(t, s), abs=1e-12)


def test_lesion_metrics_from_table_equals_lesion_metrics():
    rng = np.random.default_rng(17)
    truth = ndimage.binary_dilation(rng.random((25, 25, 25)) < 0.004, iterations=1)
    pred = ndimage.binary_dilation(rng.random((25, 25, 25)) < 0.004, iterations=1)
    pred |= truth & (rng.random(truth.shape) < 0.5)
    table = M.lesion_table(pred, truth, (1.0, 1.2, 2.0))
    assert M.lesion_metrics_from_table(table) == M.lesion_metrics(pred, truth, (1.0, 1.2, 2.0))
    two = pd.concat([table.assign(patient_id="a"), table.assign(patient_id="b")])
    with pytest.raises(ValueError, match="ONE patient"):
        M.lesion_metrics_from_table(two)


def test_score_histogram_float32_fast_path_equals_float64_floor():
    rng = np.random.default_rng(18)
    p32 = rng.random(20000, dtype=np.float32)
    p32[:5] = [0.0, 1.0, np.float32(0.5), np.nextafter(np.float32(0.5), np.float32(0)), np.float32(1 - 2**-24)]
    t = rng.random(20000) < 0.3
    for n_bins in (65536, 4096, 1000):
        pos, neg = M.score_histogram(p32, t, n_bins=n_bins)
        idx = np.minimum(np.floor(p32.astype(np.float64) * n_bins), n_bins - 1).astype(int)
        np.testing.assert_array_equal(pos, np.bincount(idx[t], minlength=n_bins))
        np.testing.assert_array_equal(neg, np.bincount(idx[~t], minlength=n_bins))


# ============================================================================ issue 14: empty= and axial diameters
def test_empty_option_for_zero_denominators():
    both_empty = M.metrics_from_counts(0, 0, 0, 100)
    assert both_empty["dice"] == both_empty["iou"] == both_empty["precision"] == 1.0  # default 'agree' = BraTS
    for empty, want in (("nan", np.nan), (0, 0.0), (1, 1.0), ("agree", 1.0)):
        r = M.metrics_from_counts(0, 0, 0, 100, empty=empty)
        np.testing.assert_equal([r["dice"], r["iou"], r["precision"], r["recall"]], [want] * 4)
        assert r["specificity"] == 1.0  # its denominator is not zero
    # missed lesion (empty prediction, truth not empty): precision 0/0 -> 'agree' 0 (not perfect), else the value
    assert M.metrics_from_counts(0, 0, 5, 95)["precision"] == 0.0
    assert M.metrics_from_counts(0, 0, 5, 95, empty=1)["precision"] == 1.0
    assert np.isnan(M.metrics_from_counts(0, 0, 5, 95, empty="nan")["precision"])
    assert M.metrics_from_counts(0, 0, 5, 95, empty="nan")["dice"] == 0.0  # 0 / 5: defined
    t = np.zeros((4, 4, 4), bool)
    assert np.isnan(M.case_metrics(np.zeros(t.shape), t, empty="nan")["dice"])
    with pytest.raises(ValueError, match="empty"):
        M.metrics_from_counts(0, 0, 0, 1, empty=0.5)


def test_axial_diameters_hand_built():
    from bmstudy.evaluation.diameters import axial_axis, axial_diameters_mm

    lab = np.zeros((20, 20, 6), int)
    lab[2:9, 3, 1] = 1                  # a row of 7 pixels: 7 mm
    lab[12:17, 12:17, 2:5] = 2          # 5 x 5 square on three slices: its diagonal 5*sqrt(2)
    lab[0, 19, 5] = 3                   # one pixel: the larger in-plane pixel size
    np.testing.assert_allclose(axial_diameters_mm(lab, 3, (1, 1, 3)), [7, 5 * np.sqrt(2), 1])
    # anisotropic pixels 0.5 x 2 mm: the square's corner centres are (2, 8) mm apart and the two end pixels
    # add (2 * 0.5 + 8 * 2) / |(2, 8)| mm along that line; the row: 6 * 0.5 + 0.5; one pixel: 2 mm
    d = np.hypot(2, 8)
    np.testing.assert_allclose(axial_diameters_mm(lab, 3, (0.5, 2, 3)), [3.5, d + 17 / d, 2])
    # slice axis 0 instead: label 1 spans 1 pixel per slice
    assert axial_diameters_mm(lab, 3, (1, 1, 1), axis=0)[0] == pytest.approx(1.0)
    assert axial_axis(np.diag([1, 1, 2, 1])) == 2 and axial_axis(None) == 2
    sag = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], float)  # voxel axis 0 along world S
    assert axial_axis(sag) == 0
