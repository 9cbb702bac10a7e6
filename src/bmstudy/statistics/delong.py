"""DeLong's test of ROC AUCs (as pROC): paired, unpaired, and from score histograms.

Why the paper's voxel-level DeLong p-values are anti-conservative
-----------------------------------------------------------------
The paper compared subgroup AUCs with DeLong's test on the pooled *voxels* of all patients of each
subgroup. DeLong's variance assumes every case (voxel) is an independent draw. Voxels of one patient
are strongly correlated (neighbouring voxels share the image, the lesion and the model's errors), so
the effective sample size is close to the number of *patients*, not the 10^7-10^9 voxels. The
variance is underestimated by roughly the design effect (1 + (m - 1) * ICC, m voxels per patient),
so Z is inflated by its square root and almost any AUC difference becomes "significant".
:func:`delong_unpaired_hist` reproduces the paper's analysis faithfully;
:func:`bmstudy.statistics.bootstrap.cluster_bootstrap_auc_diff` (resampling patients) and
:func:`bmstudy.statistics.bootstrap.patient_level_auc_test` (per-patient AUCs compared with
Mann-Whitney) respect the patient as the unit of independence and should be reported beside it.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats as sps

from ..io.binary import as_binary

__all__ = [
    "DeLongResult",
    "delong_paired",
    "delong_unpaired",
    "delong_unpaired_hist",
    "delong_placements",
    "auc_from_hist",
]


@dataclass(frozen=True)
class DeLongResult:
    """Result of a DeLong test of AUC_a - AUC_b (fields as pROC's roc.test / var / cov)."""

    auc_a: float
    auc_b: float
    var_a: float
    var_b: float
    cov: float
    z: float  #: (auc_a - auc_b) / sqrt(var_a + var_b - 2 cov)
    p_value: float  #: two-sided
    df: float = math.inf  #: Welch-Satterthwaite df of pROC's unpaired test (t distribution); inf = normal
    method: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict."""
        return asdict(self)


def _split_scores(y_true: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = as_binary(y_true, "y_true").ravel()
    s = np.asarray(score).ravel()
    if s.shape != t.shape:
        raise ValueError(f"y_true and score differ in length: {t.size} vs {s.size}")
    if s.dtype.kind not in "uifb":
        raise TypeError(f"score must be numeric, got dtype {s.dtype}")
    if s.dtype.kind == "f" and not np.isfinite(s).all():
        raise ValueError("score contains non-finite values")
    pos, neg = s[t], s[~t]
    if pos.size < 2 or neg.size < 2:
        raise ValueError(f"DeLong needs at least 2 positives and 2 negatives (got {pos.size} and {neg.size})")
    return pos, neg


def _sorted_positions(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted positives and, for each, the number of negatives < it (left) and <= it (right).

    Negatives below min(pos) (above max(pos)) precede (follow) every positive: only the rest is sorted.
    """
    spos = np.sort(pos)
    n_lo = int(np.count_nonzero(neg < spos[0]))
    mid = np.sort(neg[(neg >= spos[0]) & (neg <= spos[-1])])
    left = n_lo + np.searchsorted(mid, spos, "left")
    right = n_lo + np.searchsorted(mid, spos, "right")
    return spos, left, right


def delong_placements(
    y_true: np.ndarray, score: np.ndarray, keep_order: bool = True
) -> tuple[float, np.ndarray, np.ndarray]:
    """DeLong structural components ("placements") of one ROC curve.

    Returns ``(auc, v10, v01)``: ``v10[i]`` = fraction of negatives below positive i (ties 1/2),
    ``v01[j]`` = fraction of positives above negative j (ties 1/2). These are Sun & Xu's midrank
    expressions (T_z - T_x) / n and 1 - (T_z - T_y) / m, obtained by sorting and binary search
    (O(n log n), exact with ties). Direction as pROC's '<': larger score = positive.

    Parameters
    ----------
    y_true : array-like of 0/1 or bool
        Labels (1 = case/positive); validated by :func:`bmstudy.io.as_binary`.
    score : array-like of float
        Scores, same length; larger = more likely positive.
    keep_order : bool, default=True
        Return v10/v01 in input order; ``False`` returns them in increasing-score order (faster:
        no argsort; enough for variances, not for the paired covariance).

    Returns
    -------
    auc : float
    v10 : ndarray of shape (n_positives,)
    v01 : ndarray of shape (n_negatives,)

    Raises
    ------
    ValueError
        For labels other than 0/1, lengths that differ, non-finite scores, or fewer than 2
        positives or 2 negatives.
    TypeError
        For non-numeric labels or scores.
    """
    pos, neg = _split_scores(y_true, score)
    m, n = pos.size, neg.size
    if keep_order:
        order_p, order_n = np.argsort(pos), np.argsort(neg)  # tie order is irrelevant
        spos, sneg = pos[order_p], neg[order_n]
        left, right = np.searchsorted(sneg, spos, "left"), np.searchsorted(sneg, spos, "right")
    else:
        spos, left, right = _sorted_positions(pos, neg)
    # per sorted negative j: #pos < y_j = #{i: right_i <= j}, #pos <= y_j = #{i: left_i <= j}
    n_less = np.cumsum(np.bincount(right, minlength=n + 1)[:n])
    n_leq = np.cumsum(np.bincount(left, minlength=n + 1)[:n])
    two_v01 = 2 * m - n_less - n_leq
    two_v10 = left + right  # per sorted positive: 2 * #neg below + #neg equal
    if keep_order:
        tmp = np.empty_like(two_v10)
        tmp[order_p] = two_v10
        two_v10 = tmp
        tmp = np.empty_like(two_v01)
        tmp[order_n] = two_v01
        two_v01 = tmp
    auc = float(two_v10.sum(dtype=np.int64)) / (2.0 * m * n)
    return auc, two_v10 / (2.0 * n), two_v01 / (2.0 * m)


def _delong_moments(y_true: np.ndarray, score: np.ndarray) -> tuple[float, float, int, int]:
    """AUC and DeLong variance S10/m + S01/n without materialising per-negative placements.

    v01 is constant between consecutive positions where a positive sits among the sorted
    negatives, so its variance is a weighted sum over at most 2m + 1 runs: O(n) + O(m log m) memory-light.
    """
    pos, neg = _split_scores(y_true, score)
    m, n = pos.size, neg.size
    _, left, right = _sorted_positions(pos, neg)
    two_v10 = left + right
    auc = float(two_v10.sum(dtype=np.int64)) / (2.0 * m * n)
    s10 = float(np.sum((two_v10 / (2.0 * n) - auc) ** 2) / (m - 1))
    bounds = np.unique(np.concatenate([[0, n], left, right]))
    starts, width = bounds[:-1], np.diff(bounds)
    n_less = np.searchsorted(right, starts, "right")  # left/right are sorted (positives sorted)
    n_leq = np.searchsorted(left, starts, "right")
    v01 = (2 * m - n_less - n_leq) / (2.0 * m)
    s01 = float(np.dot(width.astype(np.float64), (v01 - auc) ** 2) / (n - 1))
    return auc, s10 / m + s01 / n, m, n


def _p_two_sided(z: float, df: float = math.inf) -> float:
    if math.isnan(z):
        return float("nan")
    if math.isinf(df):
        return float(2 * sps.norm.sf(abs(z)))
    return float(2 * sps.t.sf(abs(z), df))


def _z(diff: float, var: float) -> float:
    if var <= 0:
        return 0.0 if diff == 0 else math.copysign(math.inf, diff)
    return diff / math.sqrt(var)


def delong_paired(y_true: np.ndarray, score_a: np.ndarray, score_b: np.ndarray) -> DeLongResult:
    """DeLong's test for two correlated ROC curves (same cases, two scores), as pROC's ``roc.test``.

    Fast algorithm of Sun & Xu (2014) with midranks (ties handled exactly). ``y_true`` 0/1 (1 =
    case); larger scores indicate cases (pROC direction '<' with controls = 0). Two-sided normal p.

    Parameters
    ----------
    y_true : array-like of 0/1 or bool
        Labels of the cases, shared by both scores.
    score_a, score_b : array-like of float
        The two scores of the same cases.

    Returns
    -------
    DeLongResult
        ``cov`` is the covariance of the two AUCs; ``df`` is infinite (normal p-value).

    Raises
    ------
    ValueError, TypeError
        As :func:`delong_placements`.
    """
    auc_a, xa, ya = delong_placements(y_true, score_a)
    auc_b, xb, yb = delong_placements(y_true, score_b)
    m, n = xa.size, ya.size
    var_a = _var(xa) / m + _var(ya) / n
    var_b = _var(xb) / m + _var(yb) / n
    cov = _cov(xa, xb) / m + _cov(ya, yb) / n
    z = _z(auc_a - auc_b, var_a + var_b - 2 * cov)
    return DeLongResult(auc_a, auc_b, var_a, var_b, cov, z, _p_two_sided(z), math.inf, "DeLong paired")


def _var(v: np.ndarray) -> float:
    return float(np.var(v, ddof=1))


def _cov(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a - a.mean(), b - b.mean()) / (a.size - 1))


def _unpaired_result(auc_a: float, var_a: float, nt_a: int, auc_b: float, var_b: float, nt_b: int) -> DeLongResult:
    s = var_a + var_b
    z = _z(auc_a - auc_b, s)
    den = var_a**2 / (nt_a - 1) + var_b**2 / (nt_b - 1)
    df = s**2 / den if den > 0 else math.inf
    return DeLongResult(auc_a, auc_b, var_a, var_b, 0.0, z, _p_two_sided(z, df), df, "DeLong unpaired")


def delong_unpaired(y_a: np.ndarray, score_a: np.ndarray, y_b: np.ndarray, score_b: np.ndarray) -> DeLongResult:
    """DeLong's test for two independent ROC curves, as pROC's ``roc.test(paired=FALSE)``.

    z = (AUC_a - AUC_b) / sqrt(var_a + var_b); the p-value uses pROC's Student t with
    Welch-Satterthwaite ``df`` (identical to the normal p for voxel-sized samples). ``cov`` is 0.
    Memory-light O(n log n): only negatives within the positives' score range are sorted and the
    negatives' placements are summarised by runs (2 x 27 M voxels in a few seconds on 2 cores).

    Parameters
    ----------
    y_a, score_a : array-like
        Labels (0/1) and scores of group a.
    y_b, score_b : array-like
        Labels (0/1) and scores of group b.

    Returns
    -------
    DeLongResult

    Raises
    ------
    ValueError, TypeError
        As :func:`delong_placements`.
    """
    auc_a, var_a, ma, na = _delong_moments(y_a, score_a)
    auc_b, var_b, mb, nb = _delong_moments(y_b, score_b)
    return _unpaired_result(auc_a, var_a, ma + na, auc_b, var_b, mb + nb)


def _hist_arrays(pos: np.ndarray, neg: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pos)
    q = np.asarray(neg)
    if p.ndim != 1 or p.shape != q.shape:
        raise ValueError(f"{name}: pos and neg histograms must be 1-D of equal length, got {p.shape} and {q.shape}")
    if p.dtype.kind not in "ui" or q.dtype.kind not in "ui":
        raise TypeError(f"{name}: histograms must hold integer counts")
    if (p < 0).any() or (q < 0).any():
        raise ValueError(f"{name}: negative counts")
    return p.astype(np.int64), q.astype(np.int64)


def _hist_placements(pos: np.ndarray, neg: np.ndarray) -> tuple[float, float, int, int]:
    """AUC and DeLong variance from score histograms (bins ordered by increasing score)."""
    m, n = int(pos.sum()), int(neg.sum())
    if m < 2 or n < 2:
        raise ValueError(f"DeLong needs at least 2 positives and 2 negatives (got {m} and {n})")
    neg_below = np.cumsum(neg) - neg
    pos_above = m - np.cumsum(pos)
    v10 = (neg_below + 0.5 * neg) / n  # per bin, for each positive in it
    v01 = (pos_above + 0.5 * pos) / m  # per bin, for each negative in it
    pf, nf = pos.astype(np.float64), neg.astype(np.float64)
    auc = float(np.dot(pf, v10) / m)
    sx = float(np.dot(pf, (v10 - auc) ** 2) / (m - 1))
    sy = float(np.dot(nf, (v01 - auc) ** 2) / (n - 1))
    return auc, sx / m + sy / n, m, n


def auc_from_hist(pos: np.ndarray, neg: np.ndarray) -> float:
    """Exact AUC of histogrammed scores (bins in increasing score order; same-bin pairs count 1/2).

    Parameters
    ----------
    pos, neg : 1-D integer arrays of equal length
        Counts of positives and negatives per score bin.

    Returns
    -------
    float
        The AUC; ``nan`` when one class is empty.

    Raises
    ------
    ValueError
        For histograms of different shapes or negative counts.
    TypeError
        For non-integer counts.
    """
    p, q = _hist_arrays(pos, neg, "auc_from_hist")
    m, n = int(p.sum()), int(q.sum())
    if m == 0 or n == 0:
        return float("nan")
    neg_below = np.cumsum(q) - q
    pf = p.astype(np.float64)
    twice = 2 * np.dot(pf, neg_below.astype(np.float64)) + np.dot(pf, q.astype(np.float64))
    return float(twice / (2.0 * m * n))


def delong_unpaired_hist(pos_a: np.ndarray, neg_a: np.ndarray, pos_b: np.ndarray, neg_b: np.ndarray) -> DeLongResult:
    """:func:`delong_unpaired` computed from score histograms (e.g. pooled voxels of many patients).

    Equals the array version on the quantised scores. Cost O(n_bins), independent of voxel counts.
    This is the paper's voxel-level comparison; see the module docstring for why its p-values are
    anti-conservative and :func:`bmstudy.statistics.bootstrap.cluster_bootstrap_auc_diff` for the
    patient-level alternative.

    Parameters
    ----------
    pos_a, neg_a : 1-D integer arrays
        Score histograms of group a (e.g. :func:`bmstudy.evaluation.score_histogram`).
    pos_b, neg_b : 1-D integer arrays
        Score histograms of group b, same binning.

    Returns
    -------
    DeLongResult

    Raises
    ------
    ValueError
        For malformed histograms or fewer than 2 positives or negatives in a group.
    TypeError
        For non-integer counts.
    """
    pa, na = _hist_arrays(pos_a, neg_a, "group a")
    pb, nb = _hist_arrays(pos_b, neg_b, "group b")
    auc_a, var_a, ma, da = _hist_placements(pa, na)
    auc_b, var_b, mb, db = _hist_placements(pb, nb)
    return _unpaired_result(auc_a, var_a, ma + da, auc_b, var_b, mb + db)


