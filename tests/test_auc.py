"""bmstudy.evaluation.auc.auc_score_fast against scikit-learn and bmstudy.evaluation.voxel.auc_score."""
from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from bmstudy.evaluation import auc as A
from bmstudy.evaluation.voxel import auc_score


def _data(seed: int, n: int = 20000, prevalence: float = 0.03, levels: int | None = 50, dtype=np.float64):
    rng = np.random.default_rng(seed)
    truth = rng.random(n) < prevalence
    score = 0.6 * rng.random(n) + 0.35 * truth
    if levels:
        score = np.round(score * levels) / levels  # many ties, also between the classes
    return score.astype(dtype), truth


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("levels", [None, 50, 3])
@pytest.mark.parametrize("prevalence", [0.01, 0.3, 0.9])
def test_equals_sklearn_with_ties(seed, levels, prevalence):
    s, t = _data(seed, prevalence=prevalence, levels=levels)
    want = roc_auc_score(t, s)
    assert abs(A.auc_score_fast(s, t) - want) <= 1e-12
    assert abs(A.auc_score_fast(s, t) - auc_score(s, t)) <= 1e-12


def test_float32_integer_bool_scores_and_3d_shapes():
    s, t = _data(7, n=6000, levels=20, dtype=np.float32)
    vol_s, vol_t = s.reshape(20, 30, 10), t.reshape(20, 30, 10)
    assert abs(A.auc_score_fast(vol_s, vol_t) - roc_auc_score(t, s)) <= 1e-12
    ints = np.round(s * 20).astype(np.int16)
    assert abs(A.auc_score_fast(ints, t.astype(np.uint8)) - roc_auc_score(t, ints)) <= 1e-12
    b = s > 0.5
    assert abs(A.auc_score_fast(b, t) - roc_auc_score(t, b)) <= 1e-12


def test_blocks_give_the_same_count(monkeypatch):
    s, t = _data(3, n=5000, levels=30)
    whole = A.auc_score_fast(s, t)
    monkeypatch.setattr(A, "_BLOCK", 7)
    assert A.auc_score_fast(s, t) == whole


def test_extremes_and_separation():
    t = np.array([0, 0, 1, 1], bool)
    assert A.auc_score_fast(np.array([0.1, 0.2, 0.8, 0.9]), t) == 1.0
    assert A.auc_score_fast(np.array([0.9, 0.8, 0.1, 0.2]), t) == 0.0
    assert A.auc_score_fast(np.array([0.5, 0.5, 0.5, 0.5]), t) == 0.5
    # -inf / inf are ordered values
    assert A.auc_score_fast(np.array([-np.inf, 0.0, np.inf, 1.0]), t) == roc_auc_score(t, [-1e300, 0, 1e300, 1])


def test_conventions_match_auc_score():
    s = np.linspace(0, 1, 10)
    for one_class in (np.zeros(10), np.ones(10)):
        assert math.isnan(A.auc_score_fast(s, one_class)) and math.isnan(auc_score(s, one_class))
    assert math.isnan(A.auc_score_fast(np.zeros(0), np.zeros(0)))
    # same number of elements, different shapes: accepted by both
    t = np.arange(10) % 2
    assert A.auc_score_fast(s.reshape(2, 5), t) == auc_score(s.reshape(2, 5), t)
    for fn in (A.auc_score_fast, auc_score):
        with pytest.raises(ValueError, match="shape"):
            fn(s, t[:9])
        with pytest.raises(ValueError):
            fn(s, t * 2)  # not 0/1
        with pytest.raises(TypeError):
            fn(s, np.array(["a"] * 10))
    with pytest.raises(ValueError, match="NaN"):
        A.auc_score_fast(np.where(t, np.nan, 0.0), t)


@pytest.mark.parametrize("buckets", [(1, 1), (1, 4), (1, 64), (1 << 10, 1 << 22)])
@pytest.mark.parametrize("levels", [None, 40])
def test_bucket_path_any_table_size(monkeypatch, buckets, levels):
    """Coarse tables put many distinct positives in one bucket (searched), fine ones none; both exact."""
    monkeypatch.setattr(A, "_MIN_BUCKETS", buckets[0])
    monkeypatch.setattr(A, "_MAX_BUCKETS", buckets[1])
    s, t = _data(11, n=30000, prevalence=0.05, levels=levels, dtype=np.float32)
    assert abs(A.auc_score_fast(s, t) - roc_auc_score(t, s)) <= 1e-12
