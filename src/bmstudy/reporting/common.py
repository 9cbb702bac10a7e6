"""Helpers shared by the reporting modules: evaluated rows, column checks, median (IQR) text, saving figures."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..utils import PathLike, atomic_path

__all__ = ["finite_values", "median_iqr", "ok_rows", "require_columns", "splits_present", "save_figure", "finish_figure"]


def finite_values(x: Any) -> np.ndarray:
    """``x`` as a float array without the non-numeric and non-finite values."""
    a = pd.to_numeric(pd.Series(x), errors="coerce").to_numpy(dtype=float)
    return a[np.isfinite(a)]


def median_iqr(x: Any, digits: int = 3) -> str:
    """``'median (Q1, Q3)'`` with R's default (type 7, linear) quantiles.

    Parameters
    ----------
    x : array-like
        Values; non-numeric and non-finite ones are left out.
    digits : int, default 3
        Decimals.

    Returns
    -------
    str
        ``''`` when no value is left.
    """
    a = finite_values(x)
    if a.size == 0:
        return ""
    q1, med, q3 = np.percentile(a, [25, 50, 75])
    return f"{med:.{digits}f} ({q1:.{digits}f}, {q3:.{digits}f})"


def ok_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The rows whose ``status`` is ``'ok'`` (all rows without a ``status`` column)."""
    if "status" in df.columns:
        df = df[df["status"].astype(str) == "ok"]
    return df


def require_columns(df: pd.DataFrame, cols: Iterable[str], what: str) -> None:
    """Raise ``ValueError`` naming ``what`` and the missing columns of ``df``."""
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"{what}: missing column(s) {missing}")


def splits_present(df: pd.DataFrame, splits: Sequence[str]) -> list[str]:
    """The ``splits`` that have rows in ``df``, in order; ``ValueError`` when none has."""
    present = [s for s in splits if (df["split"] == s).any()]
    if not present:
        raise ValueError(f"no rows with split in {list(splits)}")
    return present


def save_figure(fig: Figure, out: PathLike, formats: Sequence[str] = ("png", "svg"), dpi: int = 150) -> list[Path]:
    """Save ``fig`` as ``out`` with each suffix in ``formats`` (``out``'s own suffix is dropped), atomically.

    Parameters
    ----------
    fig : Figure
        The figure.
    out : path
        File name (``.png`` / ``.svg`` / ``.pdf`` suffix optional).
    formats : sequence of str, default ('png', 'svg')
        Formats written.
    dpi : int, default 150
        Resolution of raster formats.

    Returns
    -------
    list of Path
        The files written.
    """
    out = Path(out)
    stem = out.with_suffix("") if out.suffix.lower().lstrip(".") in {"png", "svg", "pdf"} else out
    paths = []
    for fmt in formats:
        path = stem.with_name(f"{stem.name}.{fmt}")
        with atomic_path(path, suffix=f".{fmt}") as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight", facecolor="white")
        paths.append(path)
    return paths


def finish_figure(fig: Figure, out: PathLike | None, **save_kwargs: Any) -> Figure:
    """Save ``fig`` when ``out`` is given (:func:`save_figure`); return it."""
    if out is not None:
        save_figure(fig, out, **save_kwargs)
    return fig
