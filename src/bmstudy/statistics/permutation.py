"""Patient-level permutation tests of a subgroup difference (patients, not voxels, are the units).

Under the null hypothesis that the subgroup label is unrelated to the outcome, the patients' group
labels are exchangeable: the labels are permuted across patients (group sizes kept), the statistic
``T = stat(group A) - stat(group B)`` is recomputed from the patients' data for every permutation,
and the p-value is the share of permuted statistics at least as extreme as the observed one.

* Monte Carlo (default, seeded): ``p = (1 + #{|T*| >= |T|}) / (1 + B)`` over ``B`` random
  permutations (the observed labelling counted once, so p is never 0 and the test is exact in size
  at every ``B``; Phipson & Smyth 2010).
* Exact (``exact=True``): all ``C(n, n_A)`` label assignments, the observed one included:
  ``p = #{|T*| >= |T|} / C(n, n_A)``.

"At least as extreme" allows a relative slack of ``100 * machine eps * |T|`` (as
``scipy.stats.permutation_test``) so that relabellings giving the same value up to rounding count.
One-sided alternatives use ``T* >= T`` ('greater') or ``T* <= T`` ('less').

:func:`permutation_test` takes one value per patient (e.g. a Dice; statistic median or mean
difference, or any function of the two groups' values); :func:`pooled_auc_permutation_test` takes
each patient's score histograms (lesion and background voxels, as
:func:`bmstudy.evaluation.voxel.score_histogram`) and tests the difference of the groups' pooled
AUCs -- the paper's subgroup comparison, with the patient as the unit of independence.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from itertools import combinations
from typing import Any, Callable, Literal, Sequence

import numpy as np

__all__ = ["PermutationResult", "permutation_test", "pooled_auc_permutation_test", "label_permutations"]

Alternative = Literal["two.sided", "less", "greater"]
Statistic = Literal["median_difference", "mean_difference"]
#: the largest number of label assignments ``exact=True`` enumerates
MAX_EXACT = 1_000_000
_CHUNK = 512


@dataclass(frozen=True)
class PermutationResult:
    """Result of a permutation test."""

    statistic: float  #: observed stat(A) - stat(B)
    p_value: float
    n_permutations: int  #: B (Monte Carlo) or C(n, n_A) (exact)
    method: str  #: 'monte carlo' or 'exact'
    alternative: str
    n_a: int
    n_b: int
    group_a: Any = None
    group_b: Any = None

    def to_dict(self) -> dict:
        return asdict(self)


def _split_groups(groups: Sequence[Any], group_a: Any) -> tuple[np.ndarray, Any, Any]:
    g = np.asarray(groups, dtype=object)
    labels = list(dict.fromkeys(sorted(g.tolist(), key=str)))
    if len(labels) != 2:
        raise ValueError(f"groups must hold exactly two labels, got {labels[:5]}")
    a = labels[0] if group_a is None else group_a
    if a not in labels:
        raise ValueError(f"group_a {group_a!r} is not one of the labels {labels}")
    b = labels[1] if a == labels[0] else labels[0]
    is_a = np.array([x == a for x in g.tolist()], dtype=bool)
    return is_a, a, b


def label_permutations(n: int, n_a: int, n_permutations: int | None, seed: int | None) -> np.ndarray:
    """Patient orderings whose first ``n_a`` entries form group A, one row per relabelling.

    Parameters
    ----------
    n, n_a : int
        Number of patients and of group-A patients.
    n_permutations : int or None
        ``B`` random orderings (seeded), or ``None`` for every one of the ``C(n, n_a)`` splits.
    seed : int or None
        Seed of ``numpy.random.default_rng``.

    Returns
    -------
    ndarray of shape (B or C(n, n_a), n), int64

    Raises
    ------
    ValueError
        When exact enumeration would exceed :data:`MAX_EXACT` rows.
    """
    if n_permutations is None:
        total = math.comb(n, n_a)
        if total > MAX_EXACT:
            raise ValueError(f"exact enumeration needs {total} relabellings (> {MAX_EXACT}); use Monte Carlo")
        everyone = set(range(n))
        rows = [list(c) + sorted(everyone.difference(c)) for c in combinations(range(n), n_a)]
        return np.asarray(rows, dtype=np.int64).reshape(total, n)
    rng = np.random.default_rng(seed)
    return rng.permuted(np.tile(np.arange(n, dtype=np.int64), (int(n_permutations), 1)), axis=1)


def _p_value(t_obs: float, t_null: np.ndarray, alternative: str, monte_carlo: bool) -> float:
    if not np.isfinite(t_obs) or not np.all(np.isfinite(t_null)):
        raise ValueError("the statistic is not finite for the observed or a permuted labelling")
    gamma = 100 * np.finfo(np.float64).eps * abs(t_obs)
    if alternative == "two.sided":
        hits = np.count_nonzero(np.abs(t_null) >= abs(t_obs) - gamma)
    elif alternative == "greater":
        hits = np.count_nonzero(t_null >= t_obs - gamma)
    else:
        hits = np.count_nonzero(t_null <= t_obs + gamma)
    if monte_carlo:
        return (1 + int(hits)) / (1 + t_null.size)
    return int(hits) / t_null.size


def _check(alternative: str, n_permutations: int, exact: bool, n_a: int, n_b: int) -> None:
    if alternative not in ("two.sided", "less", "greater"):
        raise ValueError(f"alternative must be 'two.sided', 'less' or 'greater', got {alternative!r}")
    if not exact and (int(n_permutations) != n_permutations or n_permutations < 1):
        raise ValueError(f"n_permutations must be a positive integer, got {n_permutations}")
    if n_a == 0 or n_b == 0:
        raise ValueError("both groups need at least one patient")


def _as_units(values: Any, statistic: Any) -> np.ndarray:
    """Per-patient values as an array indexable by patient (an object array for a callable's data)."""
    if not callable(statistic):
        v = np.asarray(values, dtype=np.float64)
        if v.ndim != 1:
            raise ValueError(f"values must be one number per patient for {statistic!r}, got shape {v.shape}")
        return v
    if isinstance(values, np.ndarray):
        return values
    v = np.empty(len(values), dtype=object)
    for i, x in enumerate(values):
        v[i] = x
    return v


def _rows_statistic(values: np.ndarray, perms: np.ndarray, n_a: int, statistic: Any) -> np.ndarray:
    """``stat(A) - stat(B)`` for every row of ``perms`` (first ``n_a`` columns are group A)."""
    if statistic == "median_difference":
        v = values[perms]
        return np.median(v[:, :n_a], axis=1) - np.median(v[:, n_a:], axis=1)
    if statistic == "mean_difference":
        v = values[perms]
        return v[:, :n_a].mean(axis=1) - v[:, n_a:].mean(axis=1)
    if not callable(statistic):
        raise ValueError(f"statistic must be 'median_difference', 'mean_difference' or a callable, got {statistic!r}")
    return np.array([float(statistic(values[r[:n_a]], values[r[n_a:]])) for r in perms], dtype=np.float64)


def permutation_test(
    values: Sequence[float] | np.ndarray, groups: Sequence[Any],
    statistic: Statistic | Callable[[np.ndarray, np.ndarray], float] = "median_difference", *,
    group_a: Any = None, n_permutations: int = 9999, exact: bool = False,
    alternative: Alternative = "two.sided", seed: int | None = 0,
) -> PermutationResult:
    """Permutation test of a difference between two subgroups of patients.

    Parameters
    ----------
    values : array-like
        One entry per patient along axis 0 (a scalar such as the patient's Dice, or any array a
        callable ``statistic`` understands).
    groups : sequence
        Each patient's subgroup label; exactly two distinct labels.
    statistic : {'median_difference', 'mean_difference'} or callable
        ``T = stat(A) - stat(B)``; a callable gets ``(values_a, values_b)`` and returns a float.
    group_a : optional
        The label of group A (default: the first label in sorted order).
    n_permutations : int
        Random relabellings B (ignored when ``exact``).
    exact : bool
        Enumerate all ``C(n, n_A)`` relabellings instead.
    alternative : {'two.sided', 'greater', 'less'}
        'greater': A larger than B.
    seed : int or None
        Seed of the relabellings (results are reproducible for a given seed).

    Returns
    -------
    PermutationResult

    Raises
    ------
    ValueError
        Lengths differ, not two groups, bad options, or a non-finite statistic.
    """
    v = _as_units(values, statistic)
    is_a, a, b = _split_groups(groups, group_a)
    if v.shape[0] != is_a.size:
        raise ValueError(f"values has {v.shape[0]} patients, groups {is_a.size}")
    n_a, n_b = int(is_a.sum()), int((~is_a).sum())
    _check(alternative, n_permutations, exact, n_a, n_b)
    observed = np.concatenate([np.flatnonzero(is_a), np.flatnonzero(~is_a)])[None, :]
    t_obs = float(_rows_statistic(v, observed, n_a, statistic)[0])
    perms = label_permutations(is_a.size, n_a, None if exact else n_permutations, seed)
    t_null = np.concatenate([_rows_statistic(v, perms[i:i + _CHUNK], n_a, statistic)
                             for i in range(0, perms.shape[0], _CHUNK)])
    return PermutationResult(statistic=t_obs, p_value=_p_value(t_obs, t_null, alternative, not exact),
                             n_permutations=int(perms.shape[0]), method="exact" if exact else "monte carlo",
                             alternative=alternative, n_a=n_a, n_b=n_b, group_a=a, group_b=b)


def _pooled_auc(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """Row-wise AUC (ties half) of pooled histograms ``pos``, ``neg`` of shape (R, bins)."""
    below = np.cumsum(neg, axis=1) - neg  # negatives in lower bins
    num = (pos * below).sum(axis=1) + 0.5 * (pos * neg).sum(axis=1)
    den = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return num / den


def pooled_auc_permutation_test(
    pos_hist: np.ndarray, neg_hist: np.ndarray, groups: Sequence[Any], *, group_a: Any = None,
    n_permutations: int = 9999, exact: bool = False, alternative: Alternative = "two.sided",
    seed: int | None = 0,
) -> PermutationResult:
    """Permutation test of ``AUC(pooled voxels of A) - AUC(pooled voxels of B)``, patients permuted.

    Parameters
    ----------
    pos_hist, neg_hist : ndarray of shape (n_patients, n_bins)
        Each patient's counts of lesion / background voxels per (ascending) score bin.
    groups, group_a, n_permutations, exact, alternative, seed
        As :func:`permutation_test`.

    Returns
    -------
    PermutationResult
        ``statistic`` is the observed AUC difference (ties within a bin counted half);
        ``n_permutations`` counts the relabellings used: those leaving a group without lesion or
        background voxels (AUC undefined) are dropped.

    Raises
    ------
    ValueError
        Shapes differ, negative counts, not two groups, bad options, the observed groups have no
        finite AUC, or no relabelling has one.
    """
    pos = np.asarray(pos_hist, dtype=np.float64)
    neg = np.asarray(neg_hist, dtype=np.float64)
    if pos.ndim != 2 or pos.shape != neg.shape:
        raise ValueError(f"pos_hist and neg_hist must be (n_patients, n_bins) alike, got {pos.shape}, {neg.shape}")
    if (pos < 0).any() or (neg < 0).any():
        raise ValueError("histogram counts must be >= 0")
    is_a, a, b = _split_groups(groups, group_a)
    if is_a.size != pos.shape[0]:
        raise ValueError(f"histograms have {pos.shape[0]} patients, groups {is_a.size}")
    n_a, n_b = int(is_a.sum()), int((~is_a).sum())
    _check(alternative, n_permutations, exact, n_a, n_b)

    def diff(rows: np.ndarray) -> np.ndarray:
        m = np.zeros((rows.shape[0], is_a.size))
        np.put_along_axis(m, rows[:, :n_a], 1.0, axis=1)
        return _pooled_auc(m @ pos, m @ neg) - _pooled_auc((1 - m) @ pos, (1 - m) @ neg)

    observed = np.concatenate([np.flatnonzero(is_a), np.flatnonzero(~is_a)])[None, :]
    t_obs = float(diff(observed)[0])
    perms = label_permutations(is_a.size, n_a, None if exact else n_permutations, seed)
    t_null = np.concatenate([diff(perms[i:i + _CHUNK]) for i in range(0, perms.shape[0], _CHUNK)])
    if np.isfinite(t_obs):
        # relabellings leaving a group without lesion (or background) voxels have no AUC: dropped
        t_null = t_null[np.isfinite(t_null)]
        if t_null.size == 0:
            raise ValueError("no relabelling gives both groups lesion and background voxels (AUC not finite)")
    return PermutationResult(statistic=t_obs, p_value=_p_value(t_obs, t_null, alternative, not exact),
                             n_permutations=int(t_null.size), method="exact" if exact else "monte carlo",
                             alternative=alternative, n_a=n_a, n_b=n_b, group_a=a, group_b=b)
