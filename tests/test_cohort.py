"""Systematic-sampling split."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bmstudy.io.split import systematic_split


def _cohort(n_int: int, n_ext: int) -> pd.DataFrame:
    ids = [f"INT{i:03d}" for i in range(n_int)] + [f"EXT{i:03d}" for i in range(n_ext)]
    rng = np.random.default_rng(1)
    return pd.DataFrame({
        "patient_id": rng.permutation(ids),
    }).assign(site=lambda d: np.where(d.patient_id.str.startswith("EXT"), "external", "internal"),
              split=lambda d: np.where(d.site == "external", "external", ""))


@pytest.mark.parametrize("n,frac,n_test", [(470, 91 / 470, 91), (470, 0.2, 94), (40, 0.2, 8), (7, 0.2, 1)])
def test_sizes(n, frac, n_test):
    out = systematic_split(_cohort(n, 5), frac, seed=3)
    counts = out["split"].value_counts()
    assert counts["test"] == n_test
    assert counts["train"] == n - n_test
    assert counts["external"] == 5


def test_deterministic_and_seed_dependent():
    df = _cohort(100, 10)
    a = systematic_split(df, 0.2, seed=0)
    b = systematic_split(df, 0.2, seed=0)
    pd.testing.assert_frame_equal(a, b)
    tests = {frozenset(systematic_split(df, 0.2, seed=s).query("split == 'test'").patient_id) for s in range(10)}
    assert len(tests) > 1


def test_systematic_positions_and_disjoint():
    df = _cohort(100, 10)
    out = systematic_split(df, 0.2, seed=5)
    internal = out[out.site == "internal"].sort_values("patient_id").reset_index(drop=True)
    pos = np.flatnonzero(internal["split"].to_numpy() == "test")
    # every k-th case in sorted order: constant interval 5
    assert set(np.diff(pos)) == {5}
    assert set(out.loc[out.site == "external", "split"]) == {"external"}
    # each patient in exactly one split, row order preserved
    assert out["patient_id"].is_unique and list(out["patient_id"]) == list(df["patient_id"])


def test_order_of_rows_does_not_matter():
    df = _cohort(60, 0)
    a = systematic_split(df, 0.2, seed=2).set_index("patient_id")["split"]
    b = systematic_split(df.sample(frac=1, random_state=9), 0.2, seed=2).set_index("patient_id")["split"]
    assert a.sort_index().equals(b.sort_index())


def test_bad_fraction():
    with pytest.raises(ValueError):
        systematic_split(_cohort(10, 0), 1.5)
