"""Rank tests: the two-sample Wilcoxon / Mann-Whitney test with the Hodges-Lehmann shift and its CI.

:func:`mann_whitney` reproduces R's ``wilcox.test(x, y, conf.int=TRUE)``: the exact permutation
distribution of W for small samples without ties (as R's d/p/qwilcox, exact integer arithmetic),
otherwise the normal approximation with tie and continuity correction; the confidence interval of the
shift is R's, found exactly (the standardised statistic is a step function of the shift). The paper's
Table 3 ``Z`` (SPSS's, tie-corrected, no continuity correction) is reported for every method.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any, Literal, Sequence

import numpy as np
from scipy import stats as sps

from ..utils import get_logger

__all__ = ["Alternative", "MannWhitneyResult", "mann_whitney"]

log = get_logger("bmstudy.statistics.rank")

#: Alternative hypotheses, spelled as R's.
Alternative = Literal["two.sided", "less", "greater"]
_ALTERNATIVES = ("two.sided", "less", "greater")
#: above this many pairwise differences the asymptotic CI is found by bisection instead of from the
#: sorted differences (memory).
_MAX_PAIRS = 20_000_000


@dataclass(frozen=True)
class MannWhitneyResult:
    """Result of :func:`mann_whitney` (fields as R's ``wilcox.test(x, y, conf.int=TRUE)``)."""

    statistic: float  #: W = sum of x's ranks - n_x (n_x + 1) / 2 (= Mann-Whitney U of x)
    p_value: float
    z: float  #: normal approximation (tie-corrected, no continuity correction), sign of x - y
    estimate: float  #: Hodges-Lehmann shift x - y (median of all pairwise differences)
    ci_low: float
    ci_high: float
    method: str  #: 'exact' or 'normal approximation (tie and continuity corrected)'
    n_x: int = 0
    n_y: int = 0
    conf_level: float = 0.95  #: achieved level (can be below the requested one for tiny exact samples)
    alternative: str = "two.sided"

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict."""
        return asdict(self)


# --------------------------------------------------------------------------- exact null distribution
def _wilcox_counts(m: int, n: int) -> list[int]:
    """Exact frequencies c(k), k = 0..m*n, of the Mann-Whitney statistic (Gaussian binomial coefficients)."""
    # generating function prod_{i=1..m} (1 - q^(n+i)) / (1 - q^i), exact integer arithmetic
    size = m * n + 1
    poly = [0] * size
    poly[0] = 1
    for i in range(1, m + 1):
        # multiply by (1 - q^(n+i))
        s = n + i
        for k in range(size - 1, s - 1, -1):
            poly[k] -= poly[k - s]
        # divide by (1 - q^i): running sum with stride i
        for k in range(i, size):
            poly[k] += poly[k - i]
    return poly


class _WilcoxDist:
    """Exact null distribution of W for sample sizes (m, n) (as R's d/p/qwilcox)."""

    def __init__(self, m: int, n: int):
        self.m, self.n = m, n
        self.counts = _wilcox_counts(m, n)
        self.total = math.comb(m + n, m)
        cum, acc = [], 0
        for c in self.counts:
            acc += c
            cum.append(acc)
        self.cum = cum

    def cdf(self, q: float) -> float:
        """P(W <= q)."""
        k = math.floor(q)
        if k < 0:
            return 0.0
        if k >= self.m * self.n:
            return 1.0
        return float(Fraction(self.cum[k], self.total))

    def sf(self, q: float) -> float:
        """P(W > q)."""
        k = math.floor(q)
        if k < 0:
            return 1.0
        if k >= self.m * self.n:
            return 0.0
        return float(Fraction(self.total - self.cum[k], self.total))

    def quantile(self, x: float) -> int:
        """R's qwilcox (including its 10*DBL_EPSILON fuzz)."""
        eps = 10 * np.finfo(float).eps
        p = 0.0
        q = 0
        if x <= 0.5:
            x = x - eps
            while True:
                p += self.counts[q] / self.total
                if p >= x:
                    return q
                q += 1
        x = 1 - x + eps
        while True:
            p += self.counts[q] / self.total
            if p > x:
                return self.m * self.n - q
            q += 1


def _tie_sigma(nx: int, ny: int, values: np.ndarray) -> float:
    _, t = np.unique(values, return_counts=True)
    t = t.astype(np.float64)
    N = nx + ny
    return math.sqrt((nx * ny / 12.0) * ((N + 1) - float(np.sum(t**3 - t)) / (N * (N - 1))))


def _cc(dz: float, alternative: str, correct: bool) -> float:
    if not correct:
        return 0.0
    return {"two.sided": float(np.sign(dz)) * 0.5, "greater": 0.5, "less": -0.5}[alternative]


# --------------------------------------------------------------------------- the test
def _samples(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Both samples as float64 vectors without NaN; infinite values and empty samples are errors."""
    xa = np.asarray(x, dtype=np.float64).ravel()
    ya = np.asarray(y, dtype=np.float64).ravel()
    xa = xa[~np.isnan(xa)]
    ya = ya[~np.isnan(ya)]
    if np.isinf(xa).any() or np.isinf(ya).any():
        raise ValueError("mann_whitney: infinite values are not allowed")
    if xa.size == 0 or ya.size == 0:
        raise ValueError(f"mann_whitney needs at least one non-missing value per sample "
                         f"(got n_x={xa.size}, n_y={ya.size})")
    return xa, ya


def _exact_p(dist: _WilcoxDist, W: float, alternative: str) -> float:
    """p-value of W under its exact permutation distribution (as R)."""
    half = dist.m * dist.n / 2
    if alternative == "two.sided":
        p1 = dist.sf(W - 1) if W > half else dist.cdf(W)
        return min(2 * p1, 1.0)
    if alternative == "greater":
        return dist.sf(W - 1)
    return dist.cdf(W)


def _exact_ci(dist: _WilcoxDist, diffs: np.ndarray, alpha: float, alternative: str) -> tuple[float, float, float]:
    """R's exact CI ``(lo, hi, achieved_alpha)``: order statistics of the sorted pairwise differences."""
    N = dist.m * dist.n
    qu = dist.quantile(alpha / 2 if alternative == "two.sided" else alpha) or 1
    if alternative == "two.sided":
        return diffs[qu - 1], diffs[N - qu], 2 * dist.cdf(qu - 1)
    if alternative == "greater":
        return diffs[qu - 1], math.inf, dist.cdf(qu - 1)
    return -math.inf, diffs[N - qu], dist.cdf(qu - 1)


def _exact(xa: np.ndarray, ya: np.ndarray, W: float, conf_level: float, alternative: str,
           ) -> tuple[float, float, float, float, float]:
    """Exact ``(p, ci_low, ci_high, estimate, achieved conf_level)`` for samples without ties."""
    alpha = 1.0 - conf_level
    dist = _WilcoxDist(xa.size, ya.size)
    p = _exact_p(dist, W, alternative)
    diffs = np.sort(np.subtract.outer(xa, ya).ravel())
    lo, hi, ach_alpha = _exact_ci(dist, diffs, alpha, alternative)
    achieved = conf_level
    if ach_alpha - alpha > alpha / 2:
        log.warning("mann_whitney: requested conf_level %.3g not achievable; using %.4g", conf_level, 1 - ach_alpha)
        achieved = 1 - ach_alpha
    return p, lo, hi, float(np.median(diffs)), achieved


def _normal_p(dz0: float, sigma: float, alternative: str, correct: bool) -> float:
    """p-value of the normal approximation (tie-corrected ``sigma``, optional continuity correction)."""
    if sigma == 0:
        return 1.0
    zc = (dz0 - _cc(dz0, alternative, correct)) / sigma
    return {"less": sps.norm.cdf(zc), "greater": sps.norm.sf(zc),
            "two.sided": 2 * min(sps.norm.cdf(zc), sps.norm.sf(zc))}[alternative]


def mann_whitney(
    x: Sequence[float],
    y: Sequence[float],
    conf_level: float = 0.95,
    exact: bool | None = None,
    *,
    alternative: Alternative = "two.sided",
    correct: bool = True,
) -> MannWhitneyResult:
    """Two-sample Wilcoxon rank-sum / Mann-Whitney test, as R's ``wilcox.test(x, y, conf.int=TRUE)``.

    * ``statistic`` W = sum of x's midranks - n_x (n_x + 1) / 2.
    * p-value: exact (the permutation distribution of W) when ``exact`` is None and both samples have
      fewer than 50 values and there are no ties, or when ``exact=True`` and there are no ties; otherwise
      the normal approximation with tie correction and (``correct=True``) continuity correction.
    * ``estimate``: Hodges-Lehmann shift x - y = median of all pairwise differences x_i - y_j (R's
      exact estimate; R's asymptotic estimate is the root of the standardised statistic, found by
      ``uniroot`` to 1e-4, which is that same median up to R's tolerance).
    * CI: exact case as R (order statistics of the pairwise differences at ``qwilcox``; the achieved
      level is reported in ``conf_level`` when the requested one is not attainable); asymptotic case as
      R's root finding on the tie- and continuity-corrected statistic, solved exactly (the statistic is
      a step function of the shift, the root is the pairwise difference where it changes sign).
    * ``z``: the normal-approximation statistic (W - n_x n_y / 2) / sigma with tie correction and no
      continuity correction (SPSS's "Z", as reported in the paper's Table 3); reported for every method.

    Parameters
    ----------
    x, y : sequence of float
        The two samples; NaNs are removed (as R's default ``na.action``).
    conf_level : float, default=0.95
        Confidence level of the interval for the shift, in (0, 1).
    exact : bool or None, default=None
        Exact p-value and CI (None: when both samples have fewer than 50 values). Never with ties.
    alternative : {'two.sided', 'less', 'greater'}, default='two.sided'
        Alternative hypothesis about the shift x - y.
    correct : bool, default=True
        Continuity correction of the normal approximation.

    Returns
    -------
    MannWhitneyResult

    Raises
    ------
    ValueError
        For an unknown ``alternative``, ``conf_level`` outside (0, 1), infinite values or a sample
        without any non-missing value.
    """
    if alternative not in _ALTERNATIVES:
        raise ValueError(f"alternative must be one of {_ALTERNATIVES}, got {alternative!r}")
    if not 0 < conf_level < 1:
        raise ValueError(f"conf_level must lie in (0, 1), got {conf_level}")
    xa, ya = _samples(x, y)
    nx, ny = xa.size, ya.size
    allv = np.concatenate([xa, ya])
    r = sps.rankdata(allv)
    W = float(r[:nx].sum() - nx * (nx + 1) / 2.0)
    ties = np.unique(allv).size != allv.size
    sigma = _tie_sigma(nx, ny, allv)
    dz0 = W - nx * ny / 2.0
    z = dz0 / sigma if sigma > 0 else 0.0
    use_exact = (nx < 50 and ny < 50) if exact is None else bool(exact)
    if use_exact and ties:
        if exact:
            log.warning("mann_whitney: cannot compute exact p-value with ties; using the normal approximation")
        use_exact = False
    alpha = 1.0 - conf_level
    achieved = conf_level
    if use_exact:
        p, lo, hi, est, achieved = _exact(xa, ya, W, conf_level, alternative)
        method = "exact"
    else:
        p = _normal_p(dz0, sigma, alternative, correct)
        lo, hi, est = _asymptotic_ci(xa, ya, alpha, alternative, correct)
        method = "normal approximation (tie" + (" and continuity" if correct else "") + " corrected)"
    return MannWhitneyResult(
        statistic=W, p_value=float(min(p, 1.0)), z=float(z), estimate=float(est), ci_low=float(lo),
        ci_high=float(hi), method=method, n_x=nx, n_y=ny, conf_level=float(achieved), alternative=alternative,
    )


# --------------------------------------------------------------------------- asymptotic CI of the shift
def _root_on_diffs(diffs: np.ndarray, nx: int, ny: int, sigma_open: float, zq: float, alternative: str,
                   corr: bool) -> float:
    """Root of the standardised statistic from the sorted pairwise differences (exact).

    The statistic is constant on the open intervals between distinct differences, so it is
    evaluated at their midpoints (where no cross-sample tie occurs and ``sigma_open`` applies).
    """
    u = np.unique(diffs)
    mids = (u[:-1] + u[1:]) / 2.0
    gt = diffs.size - np.searchsorted(diffs, mids, side="right")  # #(x_i - y_j > d)
    dz = gt - nx * ny / 2.0
    cc = np.where(dz > 0, 0.5, np.where(dz < 0, -0.5, 0.0)) if (corr and alternative == "two.sided") else (
        np.full(dz.shape, _cc(1.0, alternative, corr)))
    f = (dz - cc) / sigma_open - zq
    neg = np.nonzero(f <= 0)[0]
    k = int(neg[0]) if neg.size else mids.size
    if k < mids.size and f[k] == 0:
        # flat zero stretch: R's uniroot returns a point inside; take its middle
        j = k
        while j + 1 < mids.size and f[j + 1] == 0:
            j += 1
        return float((u[k] + u[j + 1]) / 2.0)
    return float(u[k])


def _asymptotic_ci(
    x: np.ndarray, y: np.ndarray, alpha: float, alternative: str, correct: bool
) -> tuple[float, float, float]:
    """R's asymptotic CI and estimate for the shift (roots of the standardised W as a function of d)."""
    nx, ny = x.size, y.size
    N = nx + ny
    # within-sample ties do not depend on the shift; cross ties only occur at pairwise differences
    _, tx = np.unique(x, return_counts=True)
    _, ty = np.unique(y, return_counts=True)
    within = float(np.sum(tx.astype(float) ** 3 - tx) + np.sum(ty.astype(float) ** 3 - ty))
    sigma_open = math.sqrt((nx * ny / 12.0) * ((N + 1) - within / (N * (N - 1))))

    def wdiff(d: float, zq: float, corr: bool) -> float:
        v = np.concatenate([x - d, y])
        rr = sps.rankdata(v)
        dz = rr[:nx].sum() - nx * (nx + 1) / 2.0 - nx * ny / 2.0
        sig = _tie_sigma(nx, ny, v)
        if sig == 0:
            raise ValueError("cannot compute confidence interval when all observations are tied")
        return (dz - _cc(dz, alternative, corr)) / sig - zq

    mumin = float(x.min() - y.max())
    mumax = float(x.max() - y.min())
    if mumin == mumax:  # every pairwise difference is the same value: a degenerate, exact interval
        return mumin, mumax, mumin
    diffs = np.sort(np.subtract.outer(x, y).ravel()) if nx * ny <= _MAX_PAIRS else None

    def root(zq: float, corr: bool) -> float:
        if wdiff(mumin, zq, corr) <= 0:
            return mumin
        if wdiff(mumax, zq, corr) >= 0:
            return mumax
        if diffs is not None:
            return _root_on_diffs(diffs, nx, ny, sigma_open, zq, alternative, corr)
        lo_, hi_ = mumin, mumax  # too many pairs to sort: bisection on the statistic itself
        for _ in range(200):
            mid = (lo_ + hi_) / 2.0
            if wdiff(mid, zq, corr) > 0:
                lo_ = mid
            else:
                hi_ = mid
            if hi_ - lo_ <= 1e-12 * max(1.0, abs(mid)):
                break
        return (lo_ + hi_) / 2.0

    if alternative == "two.sided":
        lo = root(sps.norm.isf(alpha / 2), correct)
        hi = root(sps.norm.ppf(alpha / 2), correct)
    elif alternative == "greater":
        lo, hi = root(sps.norm.isf(alpha), correct), math.inf
    else:
        lo, hi = -math.inf, root(sps.norm.ppf(alpha), correct)
    est = float(np.median(diffs)) if diffs is not None else root(0.0, False)
    return lo, hi, est
