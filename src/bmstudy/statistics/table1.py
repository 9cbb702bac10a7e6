"""Table 1 tests: a continuous or a categorical characteristic compared between two patient groups."""
from __future__ import annotations

from typing import Any, Literal, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from .rank import mann_whitney

__all__ = ["compare_continuous", "compare_categorical"]


def compare_continuous(
    x: Sequence[float], y: Sequence[float], test: Literal["auto", "t", "mwu"] = "auto", alpha_normal: float = 0.05
) -> dict[str, Any]:
    """Compare a continuous variable between two groups (Table 1).

    Parameters
    ----------
    x, y : sequence of float
        Values of the two groups; NaNs are dropped.
    test : {'auto', 't', 'mwu'}, default='auto'
        ``'t'``: Welch's two-sample t-test; ``'mwu'``: :func:`~bmstudy.statistics.rank.mann_whitney`
        (statistic W); ``'auto'``: the t-test when Shapiro-Wilk does not reject normality
        (p > ``alpha_normal``) in either group (each needs >= 3 values), else Mann-Whitney.
    alpha_normal : float, default=0.05
        Level of the Shapiro-Wilk normality check of ``'auto'``.

    Returns
    -------
    dict
        ``test`` ('t' or 'mwu'), ``statistic``, ``p_value``.

    Raises
    ------
    ValueError
        For fewer than 2 values in a group or an unknown ``test``.
    """
    xa = np.asarray(x, dtype=np.float64).ravel()
    ya = np.asarray(y, dtype=np.float64).ravel()
    xa, ya = xa[~np.isnan(xa)], ya[~np.isnan(ya)]
    if xa.size < 2 or ya.size < 2:
        raise ValueError(f"compare_continuous needs >= 2 values per group (got {xa.size} and {ya.size})")
    if test == "auto":
        test = "t" if _normal(xa, alpha_normal) and _normal(ya, alpha_normal) else "mwu"
    if test == "t":
        r = sps.ttest_ind(xa, ya, equal_var=False)
        return {"test": "t", "statistic": float(r.statistic), "p_value": float(r.pvalue)}
    if test == "mwu":
        r = mann_whitney(xa, ya)
        return {"test": "mwu", "statistic": r.statistic, "p_value": r.p_value}
    raise ValueError(f"test must be 'auto', 't' or 'mwu', got {test!r}")


def _normal(v: np.ndarray, alpha_normal: float) -> bool:
    """Shapiro-Wilk does not reject normality (False for fewer than 3 or constant values)."""
    if v.size < 3 or np.ptp(v) == 0:
        return False
    return bool(sps.shapiro(v).pvalue > alpha_normal)


def compare_categorical(a: Sequence[Any], b: Sequence[Any], correction: bool = True) -> dict[str, Any]:
    """Chi-square test of a categorical variable between two groups (Table 1).

    The contingency table has one row per group and one column per category seen in either group
    (missing values, None/NaN, are dropped); ``scipy.stats.chi2_contingency`` with Yates' correction
    for 2x2 tables when ``correction`` (as R's chisq.test). A variable with a single category gives
    p = 1, statistic 0.

    Parameters
    ----------
    a, b : sequence
        Category labels of the members of group A and of group B.
    correction : bool, default=True
        Yates' continuity correction (2x2 tables only).

    Returns
    -------
    dict
        ``test`` ('chi2'), ``statistic``, ``p_value``, ``dof``, ``table`` (2 x categories, int64).

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
        return {"test": "chi2", "statistic": 0.0, "p_value": 1.0, "dof": 0, "table": table}
    res = sps.chi2_contingency(table, correction=correction)
    return {"test": "chi2", "statistic": float(res.statistic), "p_value": float(res.pvalue), "dof": int(res.dof),
            "table": table}
