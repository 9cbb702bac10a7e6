"""bmstudy.statistics against R's documented values, pROC's test-suite, brute force and scipy."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from sklearn.metrics import roc_auc_score

from bmstudy import statistics as S

# Hollander & Wolfe (1973), p. 69: R's ?wilcox.test two-sample example
HW_X = [0.80, 0.83, 1.89, 1.04, 1.45, 1.38, 1.91, 1.64, 0.73, 1.46]
HW_Y = [1.15, 0.88, 0.90, 0.74, 1.21]


# ============================================================================ Mann-Whitney
def test_mann_whitney_r_documented_example_two_sided_conf_int():
    r = S.mann_whitney(HW_Y, HW_X)
    assert r.method == "exact"
    assert r.statistic == 15
    assert r.p_value == pytest.approx(0.2544, abs=5e-5)
    assert r.estimate == pytest.approx(-0.305, abs=1e-12)
    assert r.ci_low == pytest.approx(-0.76, abs=1e-12) and r.ci_high == pytest.approx(0.15, abs=1e-12)
    assert r.conf_level == 0.95


def test_mann_whitney_r_documented_example_greater():
    r = S.mann_whitney(HW_X, HW_Y, alternative="greater")
    assert r.statistic == 35
    assert r.p_value == pytest.approx(0.1272, abs=5e-5)
    assert r.ci_high == math.inf


def _brute_exact_p(x, y, alternative="two.sided"):
    """Permutation distribution of W by enumerating every split of the pooled sample."""
    allv = np.concatenate([x, y])
    nx = len(x)
    ranks = sps.rankdata(allv)
    w_obs = ranks[:nx].sum() - nx * (nx + 1) / 2
    ws = np.array([ranks[list(c)].sum() - nx * (nx + 1) / 2 for c in itertools.combinations(range(len(allv)), nx)])
    le, ge = np.mean(ws <= w_obs), np.mean(ws >= w_obs)
    if alternative == "less":
        return le
    if alternative == "greater":
        return ge
    return min(1.0, 2 * (ge if w_obs > nx * len(y) / 2 else le))


@pytest.mark.parametrize("seed,nx,ny", [(0, 4, 5), (1, 6, 3), (2, 7, 7), (3, 1, 8)])
def test_mann_whitney_exact_p_vs_enumeration_and_hl_vs_pairwise(seed, nx, ny):
    rng = np.random.default_rng(seed)
    x = rng.normal(0.7, 1, nx)
    y = rng.normal(0, 1, ny)
    for alt in ("two.sided", "less", "greater"):
        r = S.mann_whitney(x, y, alternative=alt)
        assert r.method == "exact"
        assert r.p_value == pytest.approx(_brute_exact_p(x, y, alt), abs=1e-12), alt
    r = S.mann_whitney(x, y)
    assert r.estimate == pytest.approx(np.median([a - b for a in x for b in y]), abs=1e-12)
    U = sum(1.0 for a in x for b in y if a > b)
    assert r.statistic == U
    sc = sps.mannwhitneyu(x, y, method="exact")
    assert r.statistic == sc.statistic and r.p_value == pytest.approx(sc.pvalue, abs=1e-12)


def test_mann_whitney_exact_ci_is_order_statistics_of_pairwise_differences():
    rng = np.random.default_rng(4)
    x, y = rng.normal(1, 1, 12), rng.normal(0, 1, 9)
    r = S.mann_whitney(x, y)
    d = np.sort(np.subtract.outer(x, y).ravel())
    # brute-force qwilcox(0.025): smallest q with P(W <= q) >= 0.025 under the null
    # W = sum of x's 1-based ranks - 12*13/2 = sum of 0-based ranks - 12*11/2, over all C(21, 12) splits
    ws = np.array([sum(c) for c in itertools.combinations(range(21), 12)]) - 12 * 11 / 2
    cdf = lambda q: np.mean(ws <= q)  # noqa: E731
    qu = next(q for q in range(12 * 9 + 1) if cdf(q) >= 0.025 - 1e-12)
    assert r.ci_low == d[qu - 1] and r.ci_high == d[12 * 9 - qu]
    # coverage of the exact interval is at least the nominal level
    assert 1 - 2 * cdf(qu - 1) >= 0.95


def test_mann_whitney_asymptotic_with_ties_vs_scipy():
    rng = np.random.default_rng(5)
    x = np.round(rng.normal(0.4, 1, 70), 1)
    y = np.round(rng.normal(0, 1, 60), 1)
    r = S.mann_whitney(x, y)
    assert r.method.startswith("normal")
    sc = sps.mannwhitneyu(x, y, method="asymptotic", use_continuity=True)
    assert r.statistic == sc.statistic
    assert r.p_value == pytest.approx(sc.pvalue, rel=1e-10)
    # z: tie-corrected, no continuity correction -> matches scipy's uncorrected p
    sc0 = sps.mannwhitneyu(x, y, method="asymptotic", use_continuity=False)
    assert 2 * sps.norm.sf(abs(r.z)) == pytest.approx(sc0.pvalue, rel=1e-10)
    assert r.z > 0  # x is shifted up
    # ties force the normal approximation even for small samples
    r_small = S.mann_whitney([1, 2, 2, 3], [2, 3, 4, 4, 5])
    assert r_small.method.startswith("normal")
    assert r_small.p_value == pytest.approx(
        sps.mannwhitneyu([1, 2, 2, 3], [2, 3, 4, 4, 5], method="asymptotic").pvalue, rel=1e-10)


def _r_root_bisection(x, y, zq, correct=True):
    """R's wdiff root by plain bisection on the rank statistic (independent of the fast path)."""
    nx, ny = len(x), len(y)

    def f(d):
        v = np.concatenate([x - d, y])
        rr = sps.rankdata(v)
        dz = rr[:nx].sum() - nx * (nx + 1) / 2 - nx * ny / 2
        _, t = np.unique(v, return_counts=True)
        sig = math.sqrt(nx * ny / 12 * ((nx + ny + 1) - np.sum(t**3 - t) / ((nx + ny) * (nx + ny - 1))))
        cc = np.sign(dz) * 0.5 if correct else 0.0
        return (dz - cc) / sig - zq

    lo, hi = x.min() - y.max(), x.max() - y.min()
    for _ in range(100):
        mid = (lo + hi) / 2
        if f(mid) > 0:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def test_mann_whitney_asymptotic_ci_matches_r_root_finding():
    rng = np.random.default_rng(6)
    x = np.round(rng.normal(0.5, 1, 55), 2)
    y = np.round(rng.normal(0, 1, 52), 2)
    r = S.mann_whitney(x, y)
    assert r.method.startswith("normal")
    z = sps.norm.isf(0.025)
    assert r.ci_low == pytest.approx(_r_root_bisection(x, y, z), abs=1e-9)
    assert r.ci_high == pytest.approx(_r_root_bisection(x, y, -z), abs=1e-9)
    assert r.estimate == pytest.approx(_r_root_bisection(x, y, 0.0, correct=False), abs=1e-9)
    assert r.ci_low < r.estimate < r.ci_high
    # forcing the normal approximation on the R example gives R's exact=FALSE interval shape
    a = S.mann_whitney(HW_Y, HW_X, exact=False)
    assert a.statistic == 15 and a.ci_low < a.estimate < a.ci_high


def test_mann_whitney_validation_and_nan_dropping():
    with pytest.raises(ValueError, match="at least one"):
        S.mann_whitney([], [1.0])
    with pytest.raises(ValueError, match="alternative"):
        S.mann_whitney([1.0], [2.0], alternative="bigger")
    a = S.mann_whitney([1.0, np.nan, 3.0, 5.0], [2.0, 4.0, 6.0])
    b = S.mann_whitney([1.0, 3.0, 5.0], [2.0, 4.0, 6.0])
    assert a == b


# ============================================================================ DeLong
def _delong_slow(y, a, b=None):
    """O(n^2) DeLong (1988) with the Heaviside kernel psi (ties 1/2)."""
    y = np.asarray(y, bool)

    def comps(s):
        X, Y = s[y], s[~y]
        psi = (X[:, None] > Y[None, :]) + 0.5 * (X[:, None] == Y[None, :])
        return psi.mean(), psi.mean(axis=1), psi.mean(axis=0)

    A, v10a, v01a = comps(np.asarray(a, float))
    m, n = v10a.size, v01a.size
    var_a = np.var(v10a, ddof=1) / m + np.var(v01a, ddof=1) / n
    if b is None:
        return A, var_a
    B, v10b, v01b = comps(np.asarray(b, float))
    var_b = np.var(v10b, ddof=1) / m + np.var(v01b, ddof=1) / n
    cov = np.cov(v10a, v10b)[0, 1] / m + np.cov(v01a, v01b)[0, 1] / n
    return A, B, var_a, var_b, cov


@pytest.fixture(scope="module")
def asah(asah_csv):
    d = pd.read_csv(asah_csv)
    assert set(d.outcome) == {"Good", "Poor"} and len(d) == 113
    return d.assign(y=(d.outcome == "Poor").astype(int))  # pROC: controls = Good, cases = Poor


def test_asah_aucs_verified_against_slow_reference(asah):
    expected = {"wfns": 0.823678861788618, "s100b": 0.731368563685637, "ndka": 0.611957994579946}
    for col, auc in expected.items():
        slow_auc, _ = _delong_slow(asah.y, asah[col])
        assert slow_auc == pytest.approx(auc, abs=1e-12)
        got, _, _ = S.delong_placements(asah.y, asah[col])
        assert got == pytest.approx(auc, abs=1e-12)


def test_delong_paired_reproduces_proc(asah):
    r = S.delong_paired(asah.y, asah.wfns, asah.s100b)
    assert r.z == pytest.approx(2.20898359144091, rel=1e-10)
    assert r.p_value == pytest.approx(0.0271757822291882, rel=1e-10)
    assert r.auc_a == pytest.approx(0.823678861788618, abs=1e-12)
    assert r.auc_b == pytest.approx(0.731368563685637, abs=1e-12)
    # pROC var() / cov() test-suite values
    assert r.var_a == pytest.approx(0.00146991470882363, rel=1e-10)
    assert r.var_b == pytest.approx(0.00266868245717244, rel=1e-10)
    assert r.cov == pytest.approx(0.00119615567376754, rel=1e-10)
    r2 = S.delong_paired(asah.y, asah.wfns, asah.ndka)
    assert r2.z == pytest.approx(2.79777591868904, rel=1e-10)
    assert r2.p_value == pytest.approx(0.00514557970691098, rel=1e-10)
    assert r2.cov == pytest.approx(-0.000532967856762438, rel=1e-10)
    assert r2.var_b == pytest.approx(0.0031908105493913, rel=1e-10)
    r3 = S.delong_paired(asah.y, asah.ndka, asah.s100b)
    assert r3.z == pytest.approx(-1.39077002573558, rel=1e-10)
    assert r3.p_value == pytest.approx(0.164295175223054, rel=1e-10)
    assert r3.cov == pytest.approx(-0.000756164938056579, rel=1e-10)
    # reversed order: same p, opposite Z; identical curves: Z = 0, p = 1
    rb = S.delong_paired(asah.y, asah.s100b, asah.wfns)
    assert rb.z == pytest.approx(-r.z) and rb.p_value == pytest.approx(r.p_value)
    same = S.delong_paired(asah.y, asah.wfns, asah.wfns)
    assert same.z == 0 and same.p_value == 1


def test_delong_unpaired_reproduces_proc(asah):
    for a, b, D, p in [("wfns", "s100b", 1.43490640926908, 0.152825378808796),
                       ("wfns", "ndka", 3.10125096778969, 0.00220950791756457),
                       ("ndka", "s100b", -1.55995743389685, 0.120192832430845)]:
        r = S.delong_unpaired(asah.y, asah[a], asah.y, asah[b])
        assert r.z == pytest.approx(D, rel=1e-10)
        assert r.p_value == pytest.approx(p, rel=1e-9)
        assert r.cov == 0.0


def test_delong_fast_equals_slow_reference_with_ties():
    rng = np.random.default_rng(8)
    y = rng.random(400) < 0.3
    a = np.round(rng.normal(size=400) + y, 1)  # heavy ties
    b = np.round(0.5 * a + rng.normal(size=400), 0)
    A, B, va, vb, cov = _delong_slow(y, a, b)
    r = S.delong_paired(y, a, b)
    assert (r.auc_a, r.auc_b) == pytest.approx((A, B), abs=1e-13)
    assert (r.var_a, r.var_b, r.cov) == pytest.approx((va, vb, cov), rel=1e-10)
    assert r.auc_a == pytest.approx(roc_auc_score(y, a), abs=1e-12)
    y2 = rng.random(300) < 0.5
    c = np.round(rng.normal(size=300) + 0.3 * y2, 1)
    A2, v2 = _delong_slow(y2, c)
    u = S.delong_unpaired(y, a, y2, c)
    assert (u.auc_a, u.auc_b, u.var_a, u.var_b) == pytest.approx((A, A2, va, v2), rel=1e-10)
    z = (A - A2) / math.sqrt(va + v2)
    assert u.z == pytest.approx(z, rel=1e-10)


def test_delong_hist_equals_array_version_on_quantised_scores():
    from bmstudy.evaluation import score_histogram

    rng = np.random.default_rng(9)
    ya = rng.random(5000) < 0.1
    sa = np.clip(rng.normal(0.3, 0.2, 5000) + 0.3 * ya, 0, 1)
    yb = rng.random(4000) < 0.2
    sb = np.clip(rng.normal(0.3, 0.2, 4000) + 0.2 * yb, 0, 1)
    nb = 256
    qa = np.minimum(np.floor(sa * nb), nb - 1)
    qb = np.minimum(np.floor(sb * nb), nb - 1)
    ref = S.delong_unpaired(ya, qa, yb, qb)
    got = S.delong_unpaired_hist(*score_histogram(sa, ya, nb), *score_histogram(sb, yb, nb))
    for k in ("auc_a", "auc_b", "var_a", "var_b", "z", "p_value", "df"):
        assert getattr(got, k) == pytest.approx(getattr(ref, k), rel=1e-10), k
    assert S.auc_from_hist(*score_histogram(sa, ya, nb)) == pytest.approx(roc_auc_score(ya, qa), abs=1e-12)


def test_delong_validation():
    with pytest.raises(ValueError, match="at least 2"):
        S.delong_paired([1, 0, 0], [0.3, 0.2, 0.1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="0/1"):
        S.delong_unpaired([2, 0, 1, 0], [1, 2, 3, 4], [1, 0, 1, 0], [1, 2, 3, 4])
    with pytest.raises(ValueError, match="equal length"):
        S.delong_unpaired_hist(np.ones(3, int), np.ones(4, int), np.ones(3, int), np.ones(3, int))
    assert math.isnan(S.auc_from_hist(np.zeros(4, int), np.ones(4, int)))


def test_labels_use_the_io_validator():
    """y_true goes through bmstudy.io.as_binary: VolumeError (a ValueError) for non-0/1 or NaN labels,
    TypeError for non-numeric ones; a boolean vector is accepted as it is."""
    from bmstudy.io import VolumeError

    with pytest.raises(VolumeError, match=r"y_true must contain only 0/1, found values \[0.5\]"):
        S.delong_paired([0, 1, 0.5, 1, 0], [1, 2, 3, 4, 5], [5, 4, 3, 2, 1])
    with pytest.raises(VolumeError, match="non-finite"):
        S.delong_unpaired([0, 1, np.nan, 1], [1, 2, 3, 4], [0, 1, 0, 1], [1, 2, 3, 4])
    with pytest.raises(TypeError, match="y_true"):
        S.delong_placements(np.array(["a", "b", "a", "b"]), [1, 2, 3, 4])
    y = np.array([False, True, False, True, True])
    assert S.delong_placements(y, [1, 2, 3, 4, 5])[0] == S.delong_placements(y.astype(int), [1, 2, 3, 4, 5])[0]


# ============================================================================ Table 1 helpers
def test_compare_continuous():
    rng = np.random.default_rng(10)
    x, y = rng.normal(60, 10, 80), rng.normal(55, 10, 70)
    r = S.compare_continuous(x, y)  # default: Welch's t, fixed in advance
    assert r["test"] == "t"
    ref = sps.ttest_ind(x, y, equal_var=False)
    assert r["statistic"] == pytest.approx(ref.statistic) and r["p_value"] == pytest.approx(ref.pvalue)
    e1, e2 = rng.exponential(1, 80), rng.exponential(2, 70)
    # issue 14: no Shapiro-Wilk gate -- skewed data keep the test asked for
    assert S.compare_continuous(e1, e2)["test"] == "t"
    r = S.compare_continuous(e1, e2, test="mwu")
    assert r["test"] == "mwu"
    assert r["p_value"] == pytest.approx(S.mann_whitney(e1, e2).p_value)
    with pytest.raises(ValueError, match="fixed in advance"):
        S.compare_continuous(x, y, test="auto")
    assert S.compare_continuous(x, y, test="mwu")["test"] == "mwu"
    with pytest.raises(ValueError):
        S.compare_continuous(x, y, test="anova")


def test_compare_categorical():
    a = ["M"] * 30 + ["F"] * 20
    b = ["M"] * 10 + ["F"] * 25 + [None]
    r = S.compare_categorical(a, b)
    table = np.array([[20, 30], [25, 10]])  # columns sorted: F, M
    np.testing.assert_array_equal(r["table"], table)
    ref = sps.chi2_contingency(table, correction=True)
    assert r["statistic"] == pytest.approx(ref.statistic) and r["p_value"] == pytest.approx(ref.pvalue)
    assert r["dof"] == 1 and r["test"] == "chi2"
    # Yates-corrected 2x2 by hand
    n = table.sum()
    ad_bc = abs(20 * 10 - 30 * 25)
    chi = n * (ad_bc - n / 2) ** 2 / (50 * 35 * 45 * 40)
    assert r["statistic"] == pytest.approx(chi)
    r3 = S.compare_categorical(["lung", "other", "lung", "x"], ["other", "other", "lung"])
    assert r3["dof"] == 2
    assert S.compare_categorical(["a", "a"], ["a"])["p_value"] == 1.0


def _brute_fisher(table):
    """Two-sided exact p of a 2 x k table by enumerating every table with its margins (itertools)."""
    import itertools
    from math import comb
    table = np.asarray(table)
    cols, n1, n = table.sum(0), table[0].sum(), table.sum()
    prob = lambda row: np.prod([comb(int(c), int(x)) for c, x in zip(cols, row)]) / comb(int(n), int(n1))  # noqa: E731
    p_obs = prob(table[0])
    total = 0.0
    for row in itertools.product(*[range(int(c) + 1) for c in cols]):
        if sum(row) == n1 and prob(row) <= p_obs * (1 + 1e-7):
            total += prob(row)
    return total


def test_compare_categorical_uses_fisher_when_expected_below_5():
    # 2x2: expected counts (4 x 4 / 8 = 2) < 5 -> Fisher, equal to scipy's two-sided fisher_exact
    a, b = ["M"] * 3 + ["F"], ["M"] + ["F"] * 3
    r = S.compare_categorical(a, b)
    assert r["test"] == "fisher" and np.isnan(r["statistic"]) and r["min_expected"] == 2.0
    assert r["p_value"] == pytest.approx(sps.fisher_exact([[1, 3], [3, 1]]).pvalue, rel=1e-12)
    assert r["p_value"] == pytest.approx(34 / 70, rel=1e-12)  # (1 + 16 + 16 + 1) / C(8, 4) by hand
    # 2x3 (Freeman-Halton) against brute-force enumeration
    t = np.array([[3, 1, 2], [1, 3, 6]])
    a = ["x"] * 3 + ["y"] + ["z"] * 2
    b = ["x"] + ["y"] * 3 + ["z"] * 6
    r = S.compare_categorical(a, b)
    np.testing.assert_array_equal(r["table"], t)
    assert r["test"] == "fisher" and r["p_value"] == pytest.approx(_brute_fisher(t), rel=1e-10)
    # large cells: chi-square
    assert S.compare_categorical(["M"] * 30 + ["F"] * 20, ["M"] * 10 + ["F"] * 25)["test"] == "chi2"


# ============================================================================ patient-level alternatives
def _patient_hists(rng, n_patients, shift, n_bins=64):
    out = []
    for _ in range(n_patients):
        n = int(rng.integers(200, 600))
        y = rng.random(n) < 0.1
        s = np.clip(rng.normal(0.35 + rng.normal(0, 0.1), 0.15, n) + shift * y, 0, 1)
        idx = np.minimum(np.floor(s * n_bins), n_bins - 1).astype(int)
        out.append((np.bincount(idx[y], minlength=n_bins), np.bincount(idx[~y], minlength=n_bins)))
    return out


def test_cluster_bootstrap_matches_loop_reference_and_is_seeded():
    rng = np.random.default_rng(12)
    ha, hb = _patient_hists(rng, 7, 0.3), _patient_hists(rng, 5, 0.1)
    res = S.cluster_bootstrap_auc_diff(ha, hb, n_boot=150, seed=3, chunk=40)
    assert res == S.cluster_bootstrap_auc_diff(ha, hb, n_boot=150, seed=3, chunk=40)
    pool = lambda hs: (sum(h[0] for h in hs), sum(h[1] for h in hs))  # noqa: E731
    assert res["auc_a"] == pytest.approx(S.auc_from_hist(*pool(ha)), abs=1e-12)
    assert res["diff"] == pytest.approx(res["auc_a"] - res["auc_b"], abs=1e-15)
    # loop reference with the same random draws
    g = np.random.default_rng(3)
    boots = []
    for start in range(0, 150, 40):
        b = min(40, 150 - start)
        Wa = g.multinomial(7, np.full(7, 1 / 7), size=b)
        Wb = g.multinomial(5, np.full(5, 1 / 5), size=b)
        for wa, wb in zip(Wa, Wb):
            ia, ib = np.repeat(np.arange(7), wa), np.repeat(np.arange(5), wb)
            boots.append(S.auc_from_hist(*pool([ha[i] for i in ia])) - S.auc_from_hist(*pool([hb[i] for i in ib])))
    boots = np.array(boots)
    lo, hi = np.quantile(boots, [0.025, 0.975])
    assert res["ci_low"] == pytest.approx(lo, abs=1e-12) and res["ci_high"] == pytest.approx(hi, abs=1e-12)
    p = min(1.0, 2 * min((boots <= 0).sum() + 1, (boots >= 0).sum() + 1) / 151)
    # issue 14: the inverted-interval p is kept as p_bootstrap; p_value is the null (permutation) p
    assert res["p_bootstrap"] == pytest.approx(p)
    assert res["n_valid"] == 150
    pos = np.array([h[0] for h in ha + hb]); neg = np.array([h[1] for h in ha + hb])
    perm = S.pooled_auc_permutation_test(pos, neg, [1] * 7 + [0] * 5, group_a=1, n_permutations=150, seed=3)
    assert res["p_method"] == "permutation" and res["p_value"] == perm.p_value
    assert perm.statistic == pytest.approx(res["diff"], abs=1e-12)


def test_cluster_bootstrap_detects_real_difference_not_null():
    rng = np.random.default_rng(13)
    diff = S.cluster_bootstrap_auc_diff(_patient_hists(rng, 15, 0.45), _patient_hists(rng, 15, 0.0), n_boot=300)
    assert diff["ci_low"] > 0 and diff["p_value"] < 0.01
    same = S.cluster_bootstrap_auc_diff(_patient_hists(rng, 15, 0.2), _patient_hists(rng, 15, 0.2), n_boot=300)
    assert same["ci_low"] < same["diff"] < same["ci_high"] and same["p_value"] > 0.05


def test_voxel_delong_is_anticonservative_where_bootstrap_is_not():
    """Patients differ by random offsets only (no group effect): pooled-voxel DeLong calls the
    difference highly significant, the patient-level bootstrap does not."""
    rng = np.random.default_rng(21)
    nb = 64

    def group(n_pat):
        hs = []
        for _ in range(n_pat):
            n = 4000
            y = rng.random(n) < 0.05
            sep = rng.uniform(0.0, 0.6)  # patient-specific difficulty (clustered effect)
            s = np.clip(rng.normal(0.3, 0.12, n) + sep * y, 0, 1)
            idx = np.minimum(np.floor(s * nb), nb - 1).astype(int)
            hs.append((np.bincount(idx[y], minlength=nb), np.bincount(idx[~y], minlength=nb)))
        return hs

    ha, hb = group(8), group(8)
    pool = lambda hs: (sum(h[0] for h in hs), sum(h[1] for h in hs))  # noqa: E731
    dl = S.delong_unpaired_hist(*pool(ha), *pool(hb))
    boot = S.cluster_bootstrap_auc_diff(ha, hb, n_boot=400, seed=1)
    assert boot["diff"] == pytest.approx(dl.auc_a - dl.auc_b)
    assert dl.p_value < 1e-4  # voxel-level DeLong: "highly significant"
    assert boot["p_value"] > 0.05 and boot["ci_low"] < 0 < boot["ci_high"]  # patient level: no evidence


def test_patient_level_auc_test_drops_nan():
    a = [0.9, 0.8, np.nan, 0.95, 0.85]
    b = [0.7, 0.75, 0.6, np.nan]
    r = S.patient_level_auc_test(a, b)
    assert r == S.mann_whitney([0.9, 0.8, 0.95, 0.85], [0.7, 0.75, 0.6])
    assert r.n_x == 4 and r.n_y == 3


def test_cluster_bootstrap_drops_replicates_without_lesion_voxels():
    rng = np.random.default_rng(14)
    ha = _patient_hists(rng, 2, 0.3)
    ha[1] = (np.zeros_like(ha[1][0]), ha[1][1])  # a lesion-free patient
    hb = _patient_hists(rng, 4, 0.3)
    res = S.cluster_bootstrap_auc_diff(ha, hb, n_boot=400, seed=0)
    assert 0.15 * 400 < res["n_boot"] - res["n_valid"] < 0.35 * 400  # P(both draws lesion-free) = 1/4
    assert np.isfinite([res["ci_low"], res["ci_high"], res["p_value"]]).all()
    with pytest.raises(ValueError, match="bin counts"):
        S.cluster_bootstrap_auc_diff(ha, [(np.ones(3, int), np.ones(3, int))])
    with pytest.raises(ValueError, match="no patients"):
        S.cluster_bootstrap_auc_diff([], hb)


def test_mann_whitney_degenerate_ties_and_categorical_missing():
    r = S.mann_whitney([2.0] * 60, [1.0] * 55)  # normal approximation, every difference equals 1
    assert r.estimate == r.ci_low == r.ci_high == 1.0 and r.p_value < 1e-20
    same = S.mann_whitney([1.0] * 60, [1.0] * 55)
    assert same.p_value == 1.0 and same.z == 0.0
    c = S.compare_categorical(["a", pd.NA, "b", np.nan], ["a", None, "a"])
    np.testing.assert_array_equal(c["table"], [[1, 1], [2, 0]])


def test_placements_range_shortcut_equals_full_sort():
    """Negatives outside the positives' range are not sorted (fast path): same placements."""
    rng = np.random.default_rng(15)
    y = np.r_[np.ones(50, bool), np.zeros(3000, bool)]
    s = np.r_[np.round(rng.uniform(0.4, 0.6, 50), 2), np.round(rng.uniform(0, 1, 3000), 2)]  # ties at the edges
    a1, x1, y1 = S.delong_placements(y, s, keep_order=True)
    a2, x2, y2 = S.delong_placements(y, s, keep_order=False)
    assert a1 == a2 == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    np.testing.assert_allclose(np.sort(x1), np.sort(x2), atol=0, rtol=0)
    np.testing.assert_allclose(np.sort(y1), np.sort(y2), atol=0, rtol=0)
    A, va = _delong_slow(y, s)
    assert np.var(y1, ddof=1) / 3000 + np.var(x1, ddof=1) / 50 == pytest.approx(va, rel=1e-12)


def test_unpaired_moments_equal_full_placements():
    rng = np.random.default_rng(19)
    for prev, dec in ((0.02, 2), (0.4, 1), (0.9, 3)):
        y = rng.random(4000) < prev
        s = np.round(rng.normal(size=4000) + y, dec)
        auc, v10, v01 = S.delong_placements(y, s)
        var = np.var(v10, ddof=1) / v10.size + np.var(v01, ddof=1) / v01.size
        r = S.delong_unpaired(y, s, y, s)
        assert r.auc_a == pytest.approx(auc, abs=1e-14) and r.var_a == pytest.approx(var, rel=1e-10)
        assert r.z == 0 and r.p_value == 1


def test_mann_whitney_r_outputs_with_ties():
    """R printouts of wilcox.test(x, y) (normal approximation because of ties), endmemo.com/r/wilcoxon.php."""
    x = [1, 5, 9, 24, 56, 21, 3, 7, 21, 4]
    r = S.mann_whitney(x, [12, 15, 5, 9, 9, 14, 56, 22, 3, 7, 32, 5])
    assert r.statistic == 51.5 and r.p_value == pytest.approx(0.5966, abs=5e-5)
    r = S.mann_whitney(x, [1233, 4356, 987, 39999, 1111, 200000])
    assert r.statistic == 0 and r.p_value == pytest.approx(0.001364, abs=5e-7)
