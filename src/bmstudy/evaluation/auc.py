"""Exact ROC AUC of a voxel score map without sorting all voxels.

The AUC is the Mann-Whitney probability ``P(score_pos > score_neg) + P(score_pos == score_neg) / 2``,
counted exactly as ``2 * #(pos > neg pairs) + #(tied pairs)`` in integers with one final division,
so the result equals ``sklearn.metrics.roc_auc_score`` (trapezoidal ROC, ties counted half) to
rounding.

Only the positive (lesion) voxels are sorted -- P of them, P << N in a brain volume. Every negative
voxel then needs the number of positives above and equal to it:

* Reference route (:func:`_searched`): ``np.searchsorted`` of each negative into the sorted
  positives, O(N log P). Used for small inputs and degenerate ranges.
* Fast route (:func:`_bucket_counts`, used from a few thousand voxels on): the positives' range is
  cut into K ~ 16 P equal buckets by a monotone floating-point formula applied to both classes. A
  negative in a bucket without positives is counted from the cumulative bucket counts -- one
  ``np.bincount`` over the volume does this for all of them at once; a negative in a bucket holding
  a single distinct positive value (a quantised score level included) is compared with that value;
  only negatives in buckets holding two or more distinct positive values are binary-searched. O(N + P
  log P + K) and no array of the negatives is built. (Random-order binary search costs hundreds of ns
  per value -- more than numpy's SIMD sort -- so the plain O(N log P) search is slower in practice
  than sorting the in-range negatives, as :func:`bmstudy.evaluation.voxel.auc_score` does.)

Counts are int64: exact for volumes below ~3e9 voxels.

Speed, measured (benchmarks/surface.py, 300^3 float32 map, 10 lesions, numpy 1.26 on an AVX-512 CPU):
this is *not* faster than :func:`bmstudy.evaluation.voxel.auc_score`, whose sort of the in-range
negatives uses numpy's AVX-512 sort; the bucket pass touches every voxel a few times. It is kept as
an independent exact route (and for CPUs without a SIMD sort); measure before swapping it in.
"""
from __future__ import annotations

import numpy as np

from ..io import as_binary

__all__ = ["auc_score_fast"]

#: negatives handled per block (bounds the temporary arrays to a few tens of MB)
_BLOCK = 1 << 22
#: bucket-table size limits of the fast route (:func:`_bucket_counts`)
_MIN_BUCKETS, _MAX_BUCKETS = 1 << 10, 1 << 22


def _searched(pos_sorted: np.ndarray, neg: np.ndarray) -> int:
    """``sum over neg of 2 * #(pos > neg) + #(pos == neg)`` by binary search of every negative."""
    n_pos, total = pos_sorted.size, 0
    for start in range(0, neg.size, _BLOCK):
        block = neg[start:start + _BLOCK]
        left = np.searchsorted(pos_sorted, block, side="left").sum(dtype=np.int64)
        right = np.searchsorted(pos_sorted, block, side="right").sum(dtype=np.int64)
        # per negative: 2 * (n_pos - right) positives above it, (right - left) tied with it
        total += 2 * n_pos * block.size - int(left) - int(right)
    return total


def _bucketing(pos_sorted: np.ndarray, dtype: np.dtype) -> tuple | None:
    """Bucket table of the sorted positives, or None when the range is degenerate or not finite."""
    lo, hi = pos_sorted[0], pos_sorted[-1]
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo == hi:
        return None
    work = dtype if dtype.kind == "f" else np.dtype(np.float64)
    k = int(np.clip(16 * pos_sorted.size, _MIN_BUCKETS, _MAX_BUCKETS))
    lo_w = work.type(lo)
    with np.errstate(over="ignore"):
        scale = work.type(k - 1) / (work.type(hi) - lo_w)
    if not np.isfinite(scale):
        return None

    def bucket(x: np.ndarray) -> np.ndarray:
        """Monotone in x: 0 below the positives' range, 1..k inside, k + 1 above."""
        y = (x.astype(work, copy=False) - lo_w) * scale
        np.floor(y, out=y)
        np.clip(y, -1, k, out=y)
        return y.astype(np.int64) + 1

    cnt = np.bincount(bucket(pos_sorted), minlength=k + 2)
    distinct = pos_sorted[np.concatenate([[True], pos_sorted[1:] != pos_sorted[:-1]])]
    ub = bucket(distinct)
    value = np.zeros(k + 2, dtype=pos_sorted.dtype)
    value[ub] = distinct  # the value of buckets holding one distinct positive value
    simple = np.bincount(ub, minlength=k + 2) <= 1
    return bucket, cnt, np.cumsum(cnt) - cnt, value, simple


def _bucket_counts(s: np.ndarray, t: np.ndarray, pos_sorted: np.ndarray, table: tuple) -> int:
    """``sum over negatives of 2 * #(pos > neg) + #(pos == neg)`` with the bucket table (module doc)."""
    bucket, cnt, below, value, simple = table
    n_pos = pos_sorted.size
    has = cnt > 0
    every = np.zeros(cnt.size, dtype=np.int64)
    total = 0
    for start in range(0, s.size, _BLOCK):
        sb, tb = s[start:start + _BLOCK], t[start:start + _BLOCK]
        b = bucket(sb)
        every += np.bincount(b, minlength=cnt.size)
        sel = has[b] & ~tb  # negatives sharing a bucket with positives
        x, bx = sb[sel], b[sel]
        ok = simple[bx]
        xo, bo = x[ok], bx[ok]
        c, v = cnt[bo], value[bo]
        left = int(below[bo].sum(dtype=np.int64) + c[v < xo].sum(dtype=np.int64))  # positives below
        ties = int(c[v == xo].sum(dtype=np.int64))
        total += 2 * n_pos * xo.size - 2 * left - ties
        total += _searched(pos_sorted, x[~ok])
    neg = every - cnt  # negatives per bucket
    clear = ~has
    return total + int((neg[clear] * (2 * (n_pos - below[clear]))).sum(dtype=np.int64))


def auc_score_fast(score: np.ndarray, truth: np.ndarray) -> float:
    """Exact ROC AUC of ``score`` for binary ``truth``, sorting only the positive voxels.

    Parameters
    ----------
    score : ndarray
        Real scores (e.g. probabilities), any shape; compared as given (no rounding).
    truth : ndarray
        Binary reference (bool or 0/1) with the same number of elements as ``score``.

    Returns
    -------
    float
        The AUC (ties counted 1/2), equal to ``sklearn.metrics.roc_auc_score``; ``nan`` when
        ``truth`` holds only one class (undefined), as :func:`bmstudy.evaluation.voxel.auc_score`.

    Raises
    ------
    TypeError
        For a non-numeric ``truth`` or ``score``.
    ValueError
        When the element counts differ, ``truth`` is not 0/1, or ``score`` contains NaN (an unordered value;
        ``auc_score`` does not check this and returns an arbitrary number). ``inf`` is allowed.
    """
    s = np.asarray(score)
    if s.dtype.kind not in "uifb":
        raise TypeError(f"score must be numeric, got dtype {s.dtype}")
    t = as_binary(truth, "truth")
    s, t = s.ravel(), t.ravel()
    if s.shape != t.shape:  # as auc_score: any shapes with the same number of elements
        raise ValueError(f"shape mismatch: score{np.shape(score)}, truth{np.shape(truth)}")
    if s.dtype.kind == "f" and np.isnan(s).any():
        raise ValueError("score contains NaN")
    pos = np.sort(s[t])
    n_pos, n_neg = pos.size, s.size - pos.size
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    table = _bucketing(pos, s.dtype) if s.size >= 4 * _MIN_BUCKETS else None
    twice = _bucket_counts(s, t, pos, table) if table is not None else _searched(pos, s[~t])
    return twice / (2.0 * n_pos * n_neg)
