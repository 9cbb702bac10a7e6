"""Cohort split: systematic sampling of the internal site into train/test (the paper: 379/91 of 470)."""
from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from ..io.manifest import ManifestError, load_manifest, write_manifest


def systematic_split(
    manifest: pd.DataFrame,
    test_fraction: float = 0.2,
    seed: int = 0,
    *,
    sort_key: str = "patient_id",
    external_sites: tuple[str, ...] | None = None,
) -> pd.DataFrame:
    """Assign ``split`` by systematic sampling of the internal cases.

    Internal cases (rows whose split is not ``external`` and whose site is not in
    ``external_sites``) are sorted by ``sort_key``; with ``n_test = round(n * test_fraction)`` and
    the interval ``k = n / n_test``, a random start ``u ~ U[0, k)`` (from ``seed``) selects the
    positions ``floor(u + i*k)``, ``i = 0..n_test-1`` for the test set; the others are ``train``.
    External rows keep (or get) ``split='external'``. The paper's 379/91 of 470 corresponds to
    ``test_fraction=91/470``.

    Parameters
    ----------
    manifest : DataFrame
        The data manifest.
    test_fraction : float, default=0.2
        Fraction of internal cases in the test set.
    seed : int, default=0
        Seed of the random start.
    sort_key : str, default='patient_id'
        Column the internal cases are ordered by.
    external_sites : tuple of str, optional
        Sites whose cases are external whatever their split.

    Returns
    -------
    DataFrame
        A new DataFrame, same row order, with ``split`` set.

    Raises
    ------
    ValueError
        For ``test_fraction`` outside (0, 1) or fewer than 2 internal cases.
    ManifestError
        When ``sort_key`` is not a column.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if sort_key not in manifest.columns:
        raise ManifestError(f"sort_key column {sort_key!r} not in manifest")
    out = manifest.copy()
    split = out["split"].fillna("").astype(str).str.lower()
    is_ext = split.eq("external")
    if external_sites:
        is_ext |= out["site"].astype(str).isin(external_sites)
    out.loc[is_ext, "split"] = "external"
    internal = out.index[~is_ext]
    n = len(internal)
    if n < 2:
        raise ValueError(f"need at least 2 internal cases to split, got {n}")
    n_test = int(round(n * test_fraction))
    n_test = min(max(n_test, 1), n - 1)
    order = out.loc[internal].sort_values(sort_key, kind="mergesort").index.to_numpy()
    k = n / n_test
    start = np.random.default_rng(seed).uniform(0.0, k)
    positions = np.floor(start + k * np.arange(n_test)).astype(int)
    test_idx = order[np.clip(positions, 0, n - 1)]
    out.loc[internal, "split"] = "train"
    out.loc[test_idx, "split"] = "test"
    return out


# ---------------------------------------------------------------- CLI: bmstudy split
def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``bmstudy split`` options to ``parser``.

    Parameters
    ----------
    parser : argparse.ArgumentParser
    """
    parser.add_argument("manifest", help="data_manifest.csv to split (rewritten in place unless -o)")
    parser.add_argument("-o", "--output", help="write the split manifest here")
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)


def cli_main(args: argparse.Namespace) -> int:
    """Run ``bmstudy split``: split the manifest and write it (in place unless ``-o``).

    Parameters
    ----------
    args : argparse.Namespace

    Returns
    -------
    int
        0.
    """
    df = load_manifest(args.manifest)
    out = systematic_split(df, args.test_fraction, args.seed)
    dest = args.output or args.manifest
    write_manifest(out, dest)
    print(out["split"].value_counts().to_string())
    return 0
