"""Voxel-wise segmentation metrics of one patient, computed from confusion counts and ranks.

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
  The ``empty=`` option of :func:`case_metrics` / :func:`metrics_from_counts` makes this choice
  explicit: ``'agree'`` (the default, as above and as BraTS: both masks empty -> Dice 1), or a fixed
  value for every zero-denominator ratio: ``'nan'`` (undefined, left out of summaries), ``0`` or ``1``.
  For Dice, F1 and IoU a zero denominator means both masks are empty, so ``'agree'`` equals ``1``
  there (the BraTS-METS convention, which also scores an empty-vs-empty lesion-wise Dice 1); they
  differ for precision (empty prediction, non-empty truth: ``'agree'`` gives 0), recall and
  specificity.
* MCC with a zero denominator (one class absent in truth or in prediction) is 1.0 under perfect
  agreement and 0.0 otherwise. scikit-learn returns 0.0 in *both* cases; the only difference is the
  perfectly predicted single-class volume.
* ``auc`` is mathematically undefined when the evaluated region contains only one class (no
  lesion voxel, or lesion everywhere). It is then ``nan`` (the only NaN under the default ``empty``) and a
  warning is logged; tables report it as missing together with the number of such patients rather
  than inventing a value.

Masks are validated by the one 0/1 validator, :func:`bmstudy.io.as_binary`. Lesion-wise analysis is
in :mod:`bmstudy.evaluation.lesions`, score histograms in :mod:`bmstudy.evaluation.histograms`.
"""
from __future__ import annotations

import math

import numpy as np

from ..io.binary import as_binary
from ..utils import get_logger

__all__ = [
    "METRIC_KEYS",
    "EMPTY_OPTIONS",
    "confusion_counts",
    "case_metrics",
    "metrics_from_counts",
    "auc_score",
]

log = get_logger("bmstudy.evaluation.voxel")

#: Keys of :func:`case_metrics`, in the order of the paper's Table 2.
METRIC_KEYS: tuple[str, ...] = ("precision", "recall", "f1", "iou", "dice", "specificity", "mcc", "auc")
#: Accepted values of ``empty=`` (module docstring); ``'agree'`` is the default.
EMPTY_OPTIONS: tuple[str, ...] = ("agree", "nan", "0", "1")


# --------------------------------------------------------------------------- validation helpers
def _mask(arr: np.ndarray, name: str) -> np.ndarray:
    """``arr`` as a bool array (:func:`bmstudy.io.as_binary`): only 0/1 (or bool) is a mask.

    Strictness: a label map (e.g. BraTS labels 0..4) or probabilities passed as a mask is an error
    (a ``ValueError``); a non-numeric dtype a ``TypeError``.
    """
    return as_binary(arr, f"binary mask {name!r}")


def _check_same_shape(**arrays: np.ndarray | None) -> None:
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


def empty_value(empty: str | float | int) -> str:
    """Normalise an ``empty=`` option to one of :data:`EMPTY_OPTIONS` (``nan``/``0``/``1`` as strings).

    Parameters
    ----------
    empty : {'agree', 'nan', 0, 1} or float NaN

    Returns
    -------
    str

    Raises
    ------
    ValueError
        For any other value.
    """
    if isinstance(empty, str):
        key = empty.strip().lower()
    elif isinstance(empty, (int, float)) and not isinstance(empty, bool):
        key = "nan" if math.isnan(float(empty)) else (str(int(empty)) if float(empty) in (0.0, 1.0) else "?")
    else:
        key = "?"
    if key not in EMPTY_OPTIONS:
        raise ValueError(f"empty must be one of 'agree', 'nan', 0, 1; got {empty!r}")
    return key


def _ratio(num: float, den: float, perfect: bool, empty: str = "agree") -> float:
    """``num/den``; for ``den == 0`` the ``empty`` rule ('agree': 1.0 if the masks agree perfectly, else 0.0)."""
    if den == 0:
        if empty == "agree":
            return 1.0 if perfect else 0.0
        return float(empty)
    return num / den


def _restrict(scores: np.ndarray, truth: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """``(scores, truth)`` inside the non-zero voxels of ``mask`` (unchanged when ``mask`` is None)."""
    if mask is None:
        return scores, truth
    m = _mask(mask, "mask")
    return scores[m], truth[m]


# --------------------------------------------------------------------------- voxel metrics
def confusion_counts(
    pred: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None
) -> tuple[int, int, int, int]:
    """Voxel confusion counts of a binary prediction against a binary reference.

    Parameters
    ----------
    pred, truth : array-like of bool or 0/1
        Same-shape prediction and reference masks.
    mask : array-like of bool or 0/1, optional
        Region (e.g. the brain) to which counting is restricted.

    Returns
    -------
    tp, fp, fn, tn : int
        Python ints (no overflow).

    Raises
    ------
    ValueError
        For different shapes or masks with values other than 0/1.
    TypeError
        For a non-numeric mask dtype.
    """
    _check_same_shape(pred=pred, truth=truth, mask=mask)
    p, t = _restrict(_mask(pred, "pred"), _mask(truth, "truth"), mask)
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
    ``sklearn.metrics.roc_auc_score`` (trapezoidal ROC with ties) to rounding.

    Parameters
    ----------
    score : array-like of float
        Scores (any real values); larger = more likely lesion.
    truth : array-like of bool or 0/1
        Reference, same number of elements.

    Returns
    -------
    float
        The AUC; ``nan`` when one class is absent (undefined).

    Raises
    ------
    ValueError
        For different shapes or a reference with values other than 0/1.
    """
    s = np.asarray(score).ravel()
    t = _mask(truth, "truth").ravel()
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
    prob: np.ndarray, truth: np.ndarray, threshold: float = 0.5, mask: np.ndarray | None = None, *,
    empty: str | float = "agree",
) -> dict[str, float]:
    """The paper's eight voxel-wise metrics of one patient.

    Parameters
    ----------
    prob : array-like of float
        Probability (or any real score) map; the prediction is ``prob >= threshold``.
    truth : array-like of bool or 0/1
        Reference mask, same shape.
    threshold : float, default=0.5
        Binarisation threshold (``>=``, as :func:`bmstudy.evaluation.evaluate_cohort` does).
    mask : array-like of bool or 0/1, optional
        Region (e.g. the brain) to which evaluation is restricted.
    empty : {'agree', 'nan', 0, 1}, default='agree'
        Value of a ratio whose denominator is zero (module docstring; 'agree' is the BraTS rule).

    Returns
    -------
    dict of str to float
        Keys precision, recall, f1, iou, dice, specificity, mcc, auc (:data:`METRIC_KEYS`). f1 and
        dice are the same quantity (both reported, as in the paper). Degenerate cases follow the
        module conventions: zero-denominator ratios are 1.0 under perfect agreement, else 0.0;
        ``auc`` is ``nan`` (logged) only when the region holds a single class.

    Raises
    ------
    ValueError
        For different shapes, non-finite scores, or masks with values other than 0/1.
    TypeError
        For non-numeric arrays.
    """
    _check_same_shape(prob=prob, truth=truth, mask=mask)
    p, t = _restrict(_scores(prob), _mask(truth, "truth"), mask)
    pred = p >= threshold
    tp, fp, fn, tn = confusion_counts(pred, t)
    out = metrics_from_counts(tp, fp, fn, tn, empty=empty)
    if tp + fn == 0 or tn + fp == 0:
        log.warning("AUC undefined: the evaluated region contains only %s voxels; auc = nan",
                    "background" if tp + fn == 0 else "lesion")
        out["auc"] = float("nan")
    else:
        out["auc"] = auc_score(p, t)
    return {k: float(out[k]) for k in METRIC_KEYS}


def metrics_from_counts(tp: int, fp: int, fn: int, tn: int, *, empty: str | float = "agree") -> dict[str, float]:
    """precision, recall, f1, iou, dice, specificity, mcc from confusion counts (no auc).

    Exact integer arithmetic up to the final division (no overflow for any voxel count);
    zero denominators follow the module convention (1.0 under perfect agreement, else 0.0).

    Parameters
    ----------
    tp, fp, fn, tn : int
        Confusion counts (:func:`confusion_counts`).
    empty : {'agree', 'nan', 0, 1}, default='agree'
        Value of precision, recall, F1/Dice, IoU or specificity when its denominator is zero
        (module docstring); MCC keeps its own rule.

    Returns
    -------
    dict of str to float

    Raises
    ------
    ValueError
        For a negative count.
    """
    tp, fp, fn, tn = (int(v) for v in (tp, fp, fn, tn))
    if min(tp, fp, fn, tn) < 0:
        raise ValueError(f"confusion counts must be >= 0, got tp={tp} fp={fp} fn={fn} tn={tn}")
    perfect = fp == 0 and fn == 0
    e = empty_value(empty)
    out: dict[str, float] = {
        "precision": _ratio(tp, tp + fp, perfect, e),
        "recall": _ratio(tp, tp + fn, perfect, e),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn, perfect, e),
        "iou": _ratio(tp, tp + fp + fn, perfect, e),
    }
    out["dice"] = out["f1"]
    out["specificity"] = _ratio(tn, tn + fp, perfect, e)
    a, b, c, d = tp + fp, tp + fn, tn + fp, tn + fn
    if a == 0 or b == 0 or c == 0 or d == 0:
        out["mcc"] = 1.0 if perfect else 0.0
    else:
        # exact integer numerator; the square root split in two products to stay far from overflow
        out["mcc"] = (tp * tn - fp * fn) / (math.sqrt(a * b) * math.sqrt(c * d))
    return {k: float(v) for k, v in out.items()}
