"""Table 1 tests: a continuous or a categorical characteristic compared between two patient groups.

Continuous: a test fixed per variable in advance (Welch's t or Mann-Whitney; no normality pre-test).
Categorical: chi-square, or Fisher's exact test when an expected cell count is below 5.
"""
from __future__ import annotations

from typing import Any, Literal, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from .rank import mann_whitney

__all__ = ["compare_continuous", "compare_categorical", "fisher_exact_2xk"]


def compare_continuous(
    x: Sequence[float], y: Sequence[float], test: Literal["t", "mwu"] = "t"
) -> dict[str, Any]:
    """Compare a continuous variable between two groups (Table 1) with a test fixed in advance.

    No normality pre-test picks the test from the data (a Shapiro-Wilk gate changes the test's
    size and is not what a statistical reviewer accepts): choose it per variable before looking,
    and report which on the table.

    Parameters
    ----------
    x, y : sequence of float
        Values of the two groups; NaNs are dropped.
    test : {'t', 'mwu'}, default='t'
        ``'t'``: Welch's two-sample t-test (unequal variances); ``'mwu'``:
        :func:`~bmstudy.statistics.rank.mann_whitney` (statistic W, as R's ``wilcox.test``).

    Returns
    -------
    dict
        ``test`` ('t' or 'mwu'), ``statistic``, ``p_value``.

    Raises
    ------
    ValueError
        For fewer than 2 values in a group or an unknown ``test`` (``'auto'``, the former
        Shapiro-Wilk choice, is refused).
    """
    if test not in ("t", "mwu"):
        raise ValueError(f"test must be 't' or 'mwu' (fixed in advance; no normality pre-test), got {test!r}")
    xa = np.asarray(x, dtype=np.float64).ravel()
    ya = np.asarray(y, dtype=np.float64).ravel()
    xa, ya = xa[~np.isnan(xa)], ya[~np.isnan(ya)]
    if xa.size < 2 or ya.size < 2:
        raise ValueError(f"compare_continuous needs >= 2 values per group (got {xa.size} and {ya.size})")
    if test == "t":
        r = sps.ttest_ind(xa, ya, equal_var=False)
        return {"test": "t", "statistic": float(r.statistic), "p_value": float(r.pvalue)}
    r = mann_whitney(xa, ya)
    return {"test": "mwu", "statistic": r.statistic, "p_value": r.p_value}


def fisher_exact_2xk(table: np.ndarray, max_tables: int = 2_000_000) -> float:
    """Two-sided exact p of a 2 x k contingency table (Fisher; Freeman-Halton for k > 2), as R's fisher.test.

    Every table with the observed margins is enumerated; its probability is multivariate
    hypergeometric, and p sums the probabilities ``<= p_observed * (1 + 1e-7)`` (R's relative
    tolerance).

    Parameters
    ----------
    table : ndarray of int, shape (2, k)
    max_tables : int
        Refuse to enumerate more tables than this.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        For a table that is not 2 x k with non-negative counts, or too many tables.
    """
    t = np.asarray(table, dtype=np.int64)
    if t.ndim != 2 or t.shape[0] != 2 or (t < 0).any():
        raise ValueError(f"fisher_exact_2xk needs a 2 x k table of counts, got {t.tolist()}")
    cols, n1 = t.sum(axis=0), int(t[0].sum())
    lf = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, int(t.sum()) + 1)))])  # log factorials
    # log P(x) = sum_j log C(c_j, x_j) - log C(N, n1): enumerate x column by column, row-1 total so far
    sums, logp = np.zeros(1, np.int64), np.zeros(1)
    for c in cols:
        x = np.arange(int(c) + 1)
        lc = lf[c] - lf[x] - lf[c - x]
        sums = (sums[:, None] + x[None, :]).ravel()
        logp = (logp[:, None] + lc[None, :]).ravel()
        keep = sums <= n1
        sums, logp = sums[keep], logp[keep]
        if sums.size > max_tables:
            raise ValueError(f"fisher_exact_2xk: more than {max_tables} tables to enumerate")
    logp = logp[sums == n1] - (lf[int(t.sum())] - lf[n1] - lf[int(t.sum()) - n1])
    obs = float(np.sum(lf[cols] - lf[t[0]] - lf[cols - t[0]]) - (lf[int(t.sum())] - lf[n1] - lf[int(t.sum()) - n1]))
    p = np.exp(logp)
    return float(min(1.0, p[logp <= obs + np.log1p(1e-7)].sum()))


def compare_categorical(a: Sequence[Any], b: Sequence[Any], correction: bool = True,
                        min_expected: float = 5.0) -> dict[str, Any]:
    """Chi-square or Fisher's exact test of a categorical variable between two groups (Table 1).

    The contingency table has one row per group and one column per category seen in either group
    (missing values, None/NaN, are dropped). When every expected count is ``>= min_expected`` the
    test is ``scipy.stats.chi2_contingency`` with Yates' correction for 2x2 tables when
    ``correction`` (as R's chisq.test); when any expected count is below it (the chi-square
    approximation's usual limit), Fisher's exact test (:func:`fisher_exact_2xk`; for 2x2 it equals
    ``scipy.stats.fisher_exact``, two-sided). A variable with a single category gives p = 1, statistic 0.

    Parameters
    ----------
    a, b : sequence
        Category labels of the members of group A and of group B.
    correction : bool, default=True
        Yates' continuity correction (2x2 chi-square only).
    min_expected : float, default=5.0
        Smallest expected cell count for the chi-square test.

    Returns
    -------
    dict
        ``test`` ('chi2' or 'fisher'), ``statistic`` (chi-square; NaN for Fisher), ``p_value``,
        ``dof``, ``table`` (2 x categories, int64), ``min_expected`` (smallest expected count).

    Raises
    ------
    ValueError
        When a group has no non-missing value.
    """
    def clean(v: Sequence[Any]) -> list[Any]:
        return [u for u in list(v) if not pd.isna(u)]

    la, lb = clean(a), clean(b)
    if not la or not lb:
        raise ValueError(f"compare_categorical needs values in both groups (got {len(la)} and {len(lb)})")
    cats = sorted(set(la) | set(lb), key=str)
    table = np.array([[la.count(c) for c in cats], [lb.count(c) for c in cats]], dtype=np.int64)
    if len(cats) < 2:
        return {"test": "chi2", "statistic": 0.0, "p_value": 1.0, "dof": 0, "table": table,
                "min_expected": float(table.sum())}
    expected = np.outer(table.sum(1), table.sum(0)) / table.sum()
    dof = len(cats) - 1
    if expected.min() < min_expected:
        return {"test": "fisher", "statistic": float("nan"), "p_value": fisher_exact_2xk(table), "dof": dof,
                "table": table, "min_expected": float(expected.min())}
    res = sps.chi2_contingency(table, correction=correction)
    return {"test": "chi2", "statistic": float(res.statistic), "p_value": float(res.pvalue), "dof": int(res.dof),
            "table": table, "min_expected": float(expected.min())}
