"""bmstudy.statistics.permutation against exact enumeration written out in the test."""
from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from bmstudy.statistics import permutation as P


def _enumerate(values, n_a, stat):
    """All C(n, n_a) splits, T = stat(A) - stat(B); the first n_a values are the observed group A."""
    v = np.asarray(values, dtype=float)
    t_obs = stat(v[:n_a]) - stat(v[n_a:])
    null = []
    for a in combinations(range(v.size), n_a):
        b = [i for i in range(v.size) if i not in a]
        null.append(stat(v[list(a)]) - stat(v[b]))
    null = np.asarray(null)
    return t_obs, np.mean(np.abs(null) >= abs(t_obs) - 1e-12)


def test_exact_by_hand():
    # A = {1, 2, 3}, B = {4, 5, 6}: mean difference -3; only this split and its mirror reach |3|:
    # p = 2 / C(6, 3) = 2 / 20 = 0.1
    r = P.permutation_test([1, 2, 3, 4, 5, 6], list("AAABBB"), "mean_difference", exact=True)
    assert (r.statistic, r.p_value, r.n_permutations, r.method) == (-3.0, 0.1, 20, "exact")
    assert (r.group_a, r.group_b, r.n_a, r.n_b) == ("A", "B", 3, 3)


@pytest.mark.parametrize("statistic, fn", [("median_difference", np.median), ("mean_difference", np.mean)])
def test_exact_and_monte_carlo_equal_enumeration(statistic, fn):
    rng = np.random.default_rng(4)
    values = np.round(rng.normal(size=9), 1)  # ties
    values[:4] += 0.8
    t_obs, p_exact = _enumerate(values, 4, fn)
    groups = [1] * 4 + [2] * 5
    ex = P.permutation_test(values, groups, statistic, exact=True)
    assert ex.statistic == pytest.approx(t_obs) and ex.p_value == pytest.approx(p_exact)
    mc = P.permutation_test(values, groups, statistic, n_permutations=20000, seed=1)
    # Monte Carlo within 4 standard errors of the exact p
    se = np.sqrt(p_exact * (1 - p_exact) / 20000)
    assert abs(mc.p_value - p_exact) < 4 * se + 1 / 20001
    # a callable statistic gives the same numbers
    cal = P.permutation_test(values, groups, lambda a, b: fn(a) - fn(b), exact=True)
    assert cal.p_value == pytest.approx(p_exact)


def test_monte_carlo_formula_and_seed():
    values = np.arange(10.0)
    groups = [0] * 5 + [1] * 5
    r = P.permutation_test(values, groups, "mean_difference", n_permutations=999, seed=3)
    perms = P.label_permutations(10, 5, 999, 3)
    null = values[perms[:, :5]].mean(1) - values[perms[:, 5:]].mean(1)
    hits = np.count_nonzero(np.abs(null) >= 5.0 - 1e-12)
    assert r.p_value == (1 + hits) / 1000
    assert P.permutation_test(values, groups, "mean_difference", n_permutations=999, seed=3) == r
    one = P.permutation_test(values, groups, n_permutations=1, seed=0)
    assert one.p_value in (0.5, 1.0)


def test_one_sided():
    v = [1, 2, 3, 4, 5, 6]
    # T = -3 is the smallest of the 20 splits: 'less' p = 1/20, 'greater' p = 20/20
    assert P.permutation_test(v, list("AAABBB"), "mean_difference", exact=True, alternative="less").p_value == 0.05
    assert P.permutation_test(v, list("AAABBB"), "mean_difference", exact=True, alternative="greater").p_value == 1.0
    g = P.permutation_test(v, list("AAABBB"), "mean_difference", exact=True, alternative="greater", group_a="B")
    assert g.statistic == 3.0 and g.p_value == 0.05


def _hists(seed, n=5, bins=4):
    rng = np.random.default_rng(seed)
    pos = rng.integers(0, 4, size=(n, bins))
    neg = rng.integers(0, 6, size=(n, bins))
    pos[:, -1] += 1
    neg[:, 0] += 1
    return pos, neg


def _auc_of(pos, neg):
    """AUC of pooled histograms by expanding them to voxels (scores = bin index) and scikit-learn."""
    p, q = pos.sum(0), neg.sum(0)
    score = np.concatenate([np.repeat(np.arange(p.size), p), np.repeat(np.arange(q.size), q)])
    truth = np.concatenate([np.ones(p.sum()), np.zeros(q.sum())])
    return roc_auc_score(truth, score)


def test_pooled_auc_exact_equals_enumeration_with_sklearn():
    pos, neg = _hists(0)
    groups = ["x", "x", "y", "y", "y"]
    t_obs = _auc_of(pos[:2], neg[:2]) - _auc_of(pos[2:], neg[2:])
    null = []
    for a in combinations(range(5), 2):
        b = [i for i in range(5) if i not in a]
        null.append(_auc_of(pos[list(a)], neg[list(a)]) - _auc_of(pos[b], neg[b]))
    p_exact = np.mean(np.abs(null) >= abs(t_obs) - 1e-12)
    r = P.pooled_auc_permutation_test(pos, neg, groups, exact=True)
    assert r.statistic == pytest.approx(t_obs, abs=1e-12) and r.p_value == pytest.approx(p_exact)
    mc = P.pooled_auc_permutation_test(pos, neg, groups, n_permutations=5000, seed=2)
    assert abs(mc.p_value - p_exact) < 4 * np.sqrt(p_exact * (1 - p_exact) / 5000) + 1e-3


def test_errors():
    with pytest.raises(ValueError, match="two labels"):
        P.permutation_test([1, 2, 3], [0, 1, 2])
    with pytest.raises(ValueError, match="patients"):
        P.permutation_test([1, 2, 3], [0, 1])
    with pytest.raises(ValueError, match="alternative"):
        P.permutation_test([1, 2, 3, 4], [0, 0, 1, 1], alternative="two-sided")
    with pytest.raises(ValueError, match="exact enumeration"):
        P.permutation_test(np.arange(60.0), [0] * 30 + [1] * 30, exact=True)
    with pytest.raises(ValueError, match="group_a"):
        P.permutation_test([1, 2, 3, 4], [0, 0, 1, 1], group_a=5)
    pos, neg = _hists(1)
    with pytest.raises(ValueError, match="not finite"):
        P.pooled_auc_permutation_test(pos * 0, neg, [0, 0, 1, 1, 1], exact=True)
