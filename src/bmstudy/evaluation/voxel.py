"""Voxel-wise and lesion-wise segmentation metrics, computed from counts and ranks.

All voxel metrics are computed from the confusion counts (``np.count_nonzero``) and the AUC from
the Mann-Whitney rank statistic with midranks (sort-based, exact), so a 300^3 volume takes well under
a second per metric instead of the tens of seconds scikit-learn needs, and the values equal
scikit-learn's to floating-point rounding (tested to 1e-9).

Conventions for degenerate cases (no silent NaN; all documented and tested):

* A ratio whose denominator is zero (precision without predicted positives, recall without true
  positives, specificity without true negatives, Dice/F1/IoU with both masks empty) is **1.0 when
  prediction and truth agree perfectly** (no false positive and no false negative) **and 0.0
  otherwise** -- the BraTS convention (an empty prediction for an empty reference scores 1).
  Example: empty truth and empty prediction -> precision = recall = dice = iou = f1 = 1; empty truth
  and a non-empty prediction -> precision = recall = dice = 0.
* MCC with a zero denominator (one class absent in truth or in prediction) is 1.0 under perfect
  agreement and 0.0 otherwise. scikit-learn returns 0.0 in *both* cases; the only difference is the
  perfectly predicted single-class volume.
* ``auc`` is mathematically undefined when the evaluated region contains only one class (no
  lesion voxel, or lesion everywhere). It is then ``nan`` (the only NaN this module returns) and a
  warning is logged; tables report it as missing together with the number of such patients rather
  than inventing a value.

Lesion-wise analysis follows the BraTS-METS matching rules (see :func:`lesion_table`).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import ndimage

from ..utils import get_logger

__all__ = [
    "METRIC_KEYS",
    "SIZE_BINS",
    "DEFAULT_MIN_VOLUME_MM3",
    "confusion_counts",
    "case_metrics",
    "metrics_from_counts",
    "auc_score",
    "equivalent_diameter_mm",
    "size_bin",
    "lesion_table",
    "lesion_metrics",
    "lesion_metrics_from_table",
    "lesion_summary_by_size",
    "score_histogram",
]

log = get_logger("bmstudy.evaluation.voxel")

#: Keys of :func:`case_metrics`, in the order of the paper's Table 2.
METRIC_KEYS: tuple[str, ...] = ("precision", "recall", "f1", "iou", "dice", "specificity", "mcc", "auc")
#: Lesion size bins by equivalent-sphere diameter: d < 3 mm, 3 <= d <= 10 mm, d > 10 mm.
SIZE_BINS: tuple[str, ...] = ("<3 mm", "3-10 mm", ">10 mm")
#: Connected components smaller than this (mm^3) are ignored as specks (3 voxels at 1 mm isotropic;
#: the equivalent-sphere diameter of 3 mm^3 is 1.8 mm, below any clinically reported metastasis).
DEFAULT_MIN_VOLUME_MM3: float = 3.0


# --------------------------------------------------------------------------- validation helpers
def _as_bool(arr: np.ndarray, name: str) -> np.ndarray:
    """Return ``arr`` as a bool array; integer/float arrays must contain only 0 and 1."""
    a = np.asarray(arr)
    if a.dtype == bool:
        return a
    if a.dtype.kind not in "uif":
        raise TypeError(f"{name} must be a boolean or numeric 0/1 array, got dtype {a.dtype}")
    b = a != 0
    # Strictness: a label map (e.g. BraTS labels 0..4) or probabilities passed as a mask is an error.
    if a.size and np.count_nonzero(a[b] != 1):
        vals = np.unique(a)[:10]
        raise ValueError(f"{name} must be binary (0/1); found values {vals.tolist()}")
    return b


def _check_same_shape(**arrays: np.ndarray) -> None:
    shapes = {k: np.shape(v) for k, v in arrays.items() if v is not None}
    if len(set(shapes.values())) > 1:
        raise ValueError("shape mismatch: " + ", ".join(f"{k}{s}" for k, s in shapes.items()))


def _scores(prob: np.ndarray, name: str = "prob") -> np.ndarray:
    p = np.asarray(prob)
    if p.dtype.kind not in "uifb":
        raise TypeError(f"{name} must be numeric, got dtype {p.dtype}")
    if p.dtype.kind == "f" and p.size and not np.isfinite(p).all():
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    return p


def _ratio(num: int, den: int, perfect: bool) -> float:
    """``num/den``; for ``den == 0``: 1.0 if the masks agree perfectly, else 0.0."""
    if den == 0:
        return 1.0 if perfect else 0.0
    return num / den


# --------------------------------------------------------------------------- voxel metrics
def confusion_counts(
    pred: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None
) -> tuple[int, int, int, int]:
    """Voxel confusion counts ``(tp, fp, fn, tn)`` of binary ``pred`` against binary ``truth``.

    ``pred``/``truth``/``mask`` are same-shape boolean or 0/1 arrays; ``mask`` (e.g. the brain)
    restricts counting to its non-zero voxels. Counts are Python ints (no overflow).
    """
    _check_same_shape(pred=pred, truth=truth, mask=mask)
    p = _as_bool(pred, "pred")
    t = _as_bool(truth, "truth")
    if mask is not None:
        m = _as_bool(mask, "mask")
        p = p[m]
        t = t[m]
    n = int(p.size)
    tp = int(np.count_nonzero(p & t))
    n_pred = int(np.count_nonzero(p))
    n_true = int(np.count_nonzero(t))
    fp = n_pred - tp
    fn = n_true - tp
    tn = n - tp - fp - fn
    return tp, fp, fn, tn


def auc_score(score: np.ndarray, truth: np.ndarray) -> float:
    """Exact ROC AUC (Mann-Whitney U / (n_pos n_neg), ties counted 1/2) of ``score`` for ``truth``.

    Sorts the larger class (only its values within the smaller class's range) and binary-searches
    the smaller class into it: O(n log n) worst case, close to O(n) for confident predictions. Equals
    ``sklearn.metrics.roc_auc_score`` (trapezoidal ROC with ties) to rounding. Returns ``nan`` when
    one class is absent (undefined).
    """
    s = np.asarray(score).ravel()
    t = _as_bool(truth, "truth").ravel()
    if s.shape != t.shape:
        raise ValueError(f"shape mismatch: score{np.shape(score)}, truth{np.shape(truth)}")
    pos = s[t]
    neg = s[~t]
    n_pos, n_neg = pos.size, neg.size
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    # Sort (the relevant part of) the larger class once and binary-search the smaller one into it.
    # Only larger-class values inside [min, max] of the smaller class need sorting: the rest are
    # below (or above) every value of the smaller class -- most voxels for a confident model.
    small, large = (pos, neg) if n_pos <= n_neg else (neg, pos)
    lo_v, hi_v = small.min(), small.max()
    n_below = int(np.count_nonzero(large < lo_v))
    ref = np.sort(large[(large >= lo_v) & (large <= hi_v)])
    # per small-class value: 2 * #(large below) + #(large equal)
    two = 2 * n_below * small.size + int(np.searchsorted(ref, small, side="left").sum(dtype=np.int64)) \
        + int(np.searchsorted(ref, small, side="right").sum(dtype=np.int64))
    twice = two if n_pos <= n_neg else 2 * n_pos * n_neg - two
    return twice / (2.0 * n_pos * n_neg)


def case_metrics(
    prob: np.ndarray, truth: np.ndarray, threshold: float = 0.5, mask: np.ndarray | None = None
) -> dict[str, float]:
    """The paper's eight voxel-wise metrics of one patient.

    Parameters
    ----------
    prob : probability (or any real score) map; the prediction is ``prob >= threshold``.
    truth : binary reference mask, same shape.
    threshold : binarisation threshold (``>=``, as :mod:`bmstudy.evaluation.evaluate` does).
    mask : optional binary region (e.g. the brain) to which evaluation is restricted.

    Returns
    -------
    dict with keys precision, recall, f1, iou, dice, specificity, mcc, auc (floats). f1 and dice are
    the same quantity (both reported, as in the paper). Degenerate cases follow the module
    conventions: zero-denominator ratios are 1.0 under perfect agreement, else 0.0; ``auc`` is
    ``nan`` (logged) only when the region holds a single class.
    """
    _check_same_shape(prob=prob, truth=truth, mask=mask)
    p = _scores(prob)
    t = _as_bool(truth, "truth")
    if mask is not None:
        m = _as_bool(mask, "mask")
        p = p[m]
        t = t[m]
    pred = p >= threshold
    tp, fp, fn, tn = confusion_counts(pred, t)
    out = metrics_from_counts(tp, fp, fn, tn)
    if tp + fn == 0 or tn + fp == 0:
        log.warning("AUC undefined: the evaluated region contains only %s voxels; auc = nan",
                    "background" if tp + fn == 0 else "lesion")
        out["auc"] = float("nan")
    else:
        out["auc"] = auc_score(p, t)
    return {k: float(out[k]) for k in METRIC_KEYS}


def metrics_from_counts(tp: int, fp: int, fn: int, tn: int) -> dict[str, float]:
    """precision, recall, f1, iou, dice, specificity, mcc from confusion counts (no auc).

    Exact integer arithmetic up to the final division (no overflow for any voxel count);
    zero denominators follow the module convention (1.0 under perfect agreement, else 0.0).
    """
    tp, fp, fn, tn = (int(v) for v in (tp, fp, fn, tn))
    if min(tp, fp, fn, tn) < 0:
        raise ValueError(f"confusion counts must be >= 0, got tp={tp} fp={fp} fn={fn} tn={tn}")
    perfect = fp == 0 and fn == 0
    out: dict[str, float] = {
        "precision": _ratio(tp, tp + fp, perfect),
        "recall": _ratio(tp, tp + fn, perfect),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn, perfect),
        "iou": _ratio(tp, tp + fp + fn, perfect),
    }
    out["dice"] = out["f1"]
    out["specificity"] = _ratio(tn, tn + fp, perfect)
    a, b, c, d = tp + fp, tp + fn, tn + fp, tn + fn
    if a == 0 or b == 0 or c == 0 or d == 0:
        out["mcc"] = 1.0 if perfect else 0.0
    else:
        # exact integer numerator; the square root split in two products to stay far from overflow
        out["mcc"] = (tp * tn - fp * fn) / (math.sqrt(a * b) * math.sqrt(c * d))
    return {k: float(v) for k, v in out.items()}


# --------------------------------------------------------------------------- score histograms
def score_histogram(
    prob: np.ndarray, truth: np.ndarray, n_bins: int = 65536, mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Histograms ``(pos_counts, neg_counts)`` (int64, length ``n_bins``) of quantised probabilities.

    Quantisation (floor): a probability ``p`` in [0, 1] goes to bin ``min(floor(p * n_bins),
    n_bins - 1)``; bin ``k`` covers ``[k/n_bins, (k+1)/n_bins)`` and the last bin also holds 1.0.
    With ``n_bins`` a multiple of 2 the 0.5 threshold falls on a bin edge, so thresholded metrics
    are unchanged by quantisation. The histograms are the exact input of
    :func:`bmstudy.statistics.rank.auc_from_hist` / ``delong_unpaired_hist``: they give the AUC of the
    quantised scores (values inside one bin count as ties). ``mask`` restricts to a region.
    """
    if int(n_bins) != n_bins or n_bins < 2:
        raise ValueError(f"n_bins must be an integer >= 2, got {n_bins}")
    n_bins = int(n_bins)
    _check_same_shape(prob=prob, truth=truth, mask=mask)
    p = _scores(prob)
    t = _as_bool(truth, "truth")
    if mask is not None:
        m = _as_bool(mask, "mask")
        p = p[m]
        t = t[m]
    p = p.ravel()
    t = t.ravel()
    if p.size and (p.min() < 0 or p.max() > 1):
        raise ValueError(f"prob must lie in [0, 1] (min {p.min():.4g}, max {p.max():.4g})")
    if p.dtype == np.float32 and n_bins & (n_bins - 1) == 0 and n_bins <= 2**24:
        scaled = p * np.float32(n_bins)  # power-of-two scaling of float32 is exact
    else:
        scaled = p.astype(np.float64) * n_bins
    idx = scaled.astype(np.intp)  # truncation == floor for values >= 0
    np.minimum(idx, n_bins - 1, out=idx)
    total = np.bincount(idx, minlength=n_bins)
    pos = np.bincount(idx[t], minlength=n_bins)
    return pos.astype(np.int64), (total - pos).astype(np.int64)


# --------------------------------------------------------------------------- lesion-wise analysis
def equivalent_diameter_mm(volume_mm3: np.ndarray | float) -> np.ndarray | float:
    """Diameter (mm) of the sphere with the given volume: ``(6 V / pi) ** (1/3)``."""
    return np.cbrt(6.0 * np.asarray(volume_mm3, dtype=np.float64) / np.pi)


def size_bin(diameter_mm: float) -> str:
    """Size bin of an equivalent-sphere diameter: '<3 mm', '3-10 mm' (both ends included), '>10 mm'."""
    if diameter_mm < 3.0:
        return SIZE_BINS[0]
    if diameter_mm <= 10.0:
        return SIZE_BINS[1]
    return SIZE_BINS[2]


def _structure(connectivity: int) -> np.ndarray:
    rank = {6: 1, 18: 2, 26: 3}.get(int(connectivity))
    if rank is None:
        raise ValueError(f"connectivity must be 6, 18 or 26, got {connectivity}")
    return ndimage.generate_binary_structure(3, rank)


def _components(mask: np.ndarray, structure: np.ndarray, min_voxels: float) -> tuple[np.ndarray, np.ndarray]:
    """Label ``mask``; drop components below ``min_voxels``; return (labels 1..K, sizes[K])."""
    lab, n = ndimage.label(mask, structure=structure)
    if n == 0:
        return lab, np.zeros(0, dtype=np.int64)
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    keep = sizes >= min_voxels
    keep[0] = False
    if not keep[1:].all():
        remap = np.zeros(n + 1, dtype=lab.dtype)
        remap[keep] = np.arange(1, int(keep.sum()) + 1, dtype=lab.dtype)
        lab = remap[lab]
    return lab, sizes[keep].astype(np.int64)


def _validate_spacing(spacing: Sequence[float]) -> tuple[float, float, float]:
    sp = tuple(float(s) for s in spacing)
    if len(sp) != 3 or not all(np.isfinite(s) and s > 0 for s in sp):
        raise ValueError(f"spacing must be three positive voxel sizes in mm, got {spacing}")
    return sp  # type: ignore[return-value]


_LESION_COLUMNS = ["origin", "label", "n_voxels", "volume_mm3", "diameter_mm", "size_bin", "matched", "dice"]


def lesion_table(
    pred_mask: np.ndarray,
    truth_mask: np.ndarray,
    spacing: Sequence[float],
    min_volume_mm3: float = DEFAULT_MIN_VOLUME_MM3,
    connectivity: int = 26,
) -> pd.DataFrame:
    """One row per lesion (connected component) of the reference and of the prediction.

    Matching (BraTS-METS style): components are found with ``connectivity`` (26 by default) and
    those smaller than ``min_volume_mm3`` are discarded from both masks. A reference lesion is
    *detected* (``matched``) when any kept predicted component overlaps it by at least one voxel; its
    ``dice`` is computed against the union of all predicted components that overlap it (0 when
    missed). A predicted component is ``matched`` when it overlaps any kept reference lesion (else it
    is a false positive, ``dice`` 0); its ``dice`` is against the union of the reference lesions it
    overlaps. Volumes use ``spacing`` (mm, any anisotropy); ``diameter_mm`` is the
    equivalent-sphere diameter and ``size_bin`` one of :data:`SIZE_BINS`.

    Columns: origin ('truth'|'pred'), label (1..K within its origin), n_voxels, volume_mm3,
    diameter_mm, size_bin, matched, dice. Rows: truth lesions first, then predicted components.
    """
    _check_same_shape(pred_mask=pred_mask, truth_mask=truth_mask)
    if np.ndim(truth_mask) != 3:
        raise ValueError(f"lesion analysis needs 3-D masks, got shape {np.shape(truth_mask)}")
    sp = _validate_spacing(spacing)
    if not (min_volume_mm3 >= 0):
        raise ValueError(f"min_volume_mm3 must be >= 0, got {min_volume_mm3}")
    voxel = sp[0] * sp[1] * sp[2]
    min_voxels = float(min_volume_mm3) / voxel - 1e-9
    st = _structure(connectivity)
    t_lab, t_size = _components(_as_bool(truth_mask, "truth_mask"), st, min_voxels)
    p_lab, p_size = _components(_as_bool(pred_mask, "pred_mask"), st, min_voxels)
    nt, npr = t_size.size, p_size.size

    # overlap counts of every (truth, pred) component pair
    both = (t_lab > 0) & (p_lab > 0)
    tl = t_lab[both].astype(np.int64)
    pl = p_lab[both].astype(np.int64)
    if tl.size:
        key, cnt = np.unique(tl * (npr + 1) + pl, return_counts=True)
        pair_t, pair_p = key // (npr + 1), key % (npr + 1)
    else:
        pair_t = pair_p = cnt = np.zeros(0, dtype=np.int64)

    def _side(n: int, sizes: np.ndarray, own: np.ndarray, other: np.ndarray, other_sizes: np.ndarray):
        inter = np.bincount(own, weights=cnt, minlength=n + 1)[1:]
        matched = np.bincount(own, minlength=n + 1)[1:] > 0
        # size of the union of the (disjoint) partner components: sum over distinct partners
        union = np.bincount(own, weights=other_sizes[other - 1] if other.size else None, minlength=n + 1)[1:]
        dice = np.where(matched, 2.0 * inter / np.maximum(sizes + union, 1), 0.0)
        return matched, dice

    t_matched, t_dice = _side(nt, t_size, pair_t, pair_p, p_size)
    p_matched, p_dice = _side(npr, p_size, pair_p, pair_t, t_size)

    rows = []
    for origin, sizes, matched, dice in (("truth", t_size, t_matched, t_dice), ("pred", p_size, p_matched, p_dice)):
        vol = sizes * voxel
        diam = equivalent_diameter_mm(vol)
        for i in range(sizes.size):
            rows.append((origin, i + 1, int(sizes[i]), float(vol[i]), float(diam[i]), size_bin(float(diam[i])),
                         bool(matched[i]), float(dice[i])))
    df = pd.DataFrame(rows, columns=_LESION_COLUMNS)
    return df.astype({"origin": object, "label": np.int64, "n_voxels": np.int64, "volume_mm3": np.float64,
                      "diameter_mm": np.float64, "size_bin": object, "matched": bool, "dice": np.float64})


def _summary(n_true: int, n_pred: int, n_detected: int, n_tp_pred: int, dice_sum: float) -> dict[str, float]:
    n_fp = n_pred - n_tp_pred
    perfect = n_detected == n_true and n_fp == 0
    sens = _ratio(n_detected, n_true, perfect)
    prec = _ratio(n_tp_pred, n_pred, perfect)
    f1 = 2 * sens * prec / (sens + prec) if sens + prec > 0 else 0.0
    dice = _ratio(dice_sum, n_true + n_fp, perfect)  # type: ignore[arg-type]
    return {
        "n_true": int(n_true), "n_pred": int(n_pred), "n_detected": int(n_detected), "n_fp": int(n_fp),
        "lesion_sensitivity": float(sens), "lesion_precision": float(prec), "lesion_f1": float(f1),
        "lesion_dice": float(dice),
    }


def lesion_metrics(
    pred_mask: np.ndarray,
    truth_mask: np.ndarray,
    spacing: Sequence[float],
    min_volume_mm3: float = DEFAULT_MIN_VOLUME_MM3,
    connectivity: int = 26,
) -> dict[str, float]:
    """Lesion-wise summary of one patient (from :func:`lesion_table`).

    Keys: n_true, n_pred, n_detected (detected reference lesions), n_fp (predicted components
    overlapping no reference lesion = false positives of this patient), lesion_sensitivity =
    n_detected / n_true, lesion_precision = matched predicted components / n_pred, lesion_f1 (their
    harmonic mean, 0 when both are 0), lesion_dice = BraTS-METS lesion-wise Dice = sum of the
    reference lesions' Dice / (n_true + n_fp) (false positives count as Dice 0). Zero denominators
    follow the module rule: 1.0 when there are no reference and no predicted lesions, else 0.0.
    """
    table = lesion_table(pred_mask, truth_mask, spacing, min_volume_mm3=min_volume_mm3, connectivity=connectivity)
    return lesion_metrics_from_table(table)


def lesion_metrics_from_table(table: pd.DataFrame) -> dict[str, float]:
    """:func:`lesion_metrics` of one patient from its :func:`lesion_table` rows (no relabelling)."""
    missing = {"origin", "matched", "dice"} - set(table.columns)
    if missing:
        raise ValueError(f"lesion table lacks columns {sorted(missing)}")
    if "patient_id" in table.columns and table["patient_id"].nunique() > 1:
        raise ValueError("lesion_metrics_from_table expects the rows of ONE patient")
    t = table[table["origin"] == "truth"]
    p = table[table["origin"] == "pred"]
    return _summary(len(t), len(p), int(t["matched"].sum()), int(p["matched"].sum()), float(t["dice"].sum()))


def lesion_summary_by_size(lesions: pd.DataFrame) -> pd.DataFrame:
    """Cohort-level lesion detection by size bin (rows '<3 mm', '3-10 mm', '>10 mm', 'all').

    ``lesions`` is the concatenation of :func:`lesion_table` rows (over any number of patients).
    Reference lesions are binned by their own size, predicted components by theirs. Columns:
    n_true, n_detected, sensitivity (n_detected / n_true; NaN when the bin holds no reference
    lesion -- a missing cell, not a score), mean_dice and median_dice of the reference lesions
    (missed ones count 0), n_pred, n_fp, precision (matched / n_pred; NaN when no prediction).
    With a ``patient_id`` column, ``n_patients`` and ``fp_per_patient`` (n_fp over the patients
    present in ``lesions``) are added.
    """
    missing = {"origin", "size_bin", "matched", "dice"} - set(lesions.columns)
    if missing:
        raise ValueError(f"lesions frame lacks columns {sorted(missing)} (expected lesion_table rows)")
    bad = set(lesions["origin"].unique()) - {"truth", "pred"}
    if bad:
        raise ValueError(f"unknown lesion origin values {sorted(map(str, bad))}")
    n_pat = lesions["patient_id"].nunique() if "patient_id" in lesions.columns else None
    rows = []
    for name in (*SIZE_BINS, "all"):
        sub = lesions if name == "all" else lesions[lesions["size_bin"] == name]
        t = sub[sub["origin"] == "truth"]
        p = sub[sub["origin"] == "pred"]
        n_true, n_det = len(t), int(t["matched"].sum())
        n_pred, n_tp = len(p), int(p["matched"].sum())
        row = {
            "size_bin": name,
            "n_true": n_true,
            "n_detected": n_det,
            "sensitivity": n_det / n_true if n_true else float("nan"),
            "mean_dice": float(t["dice"].mean()) if n_true else float("nan"),
            "median_dice": float(t["dice"].median()) if n_true else float("nan"),
            "n_pred": n_pred,
            "n_fp": n_pred - n_tp,
            "precision": n_tp / n_pred if n_pred else float("nan"),
        }
        if n_pat is not None:
            row["n_patients"] = int(n_pat)
            row["fp_per_patient"] = (n_pred - n_tp) / n_pat if n_pat else float("nan")
        rows.append(row)
    return pd.DataFrame(rows).set_index("size_bin")
