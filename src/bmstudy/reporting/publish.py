"""The notebook side of the book: what a study notebook publishes for the results page.

A stage notebook shows a table or figure and, with a ``name``, saves it under ``<out_dir>/summary/``
(:func:`publish_table`: ``.csv`` + rendered ``.html`` + ``.json`` metadata; :func:`publish_figure`:
``.png`` + ``.json``). :mod:`.book` collects these items into the results page in stage order.
``notebook_setup`` (:mod:`bmstudy.study.notebook`) hands a notebook :func:`notebook_reporter`'s pair.
"""
from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Callable

from ..utils import PathLike, atomic_path, atomic_to_csv, atomic_write_json, atomic_write_text

__all__ = ["SUMMARY_DIR", "publish_table", "publish_figure", "show_table", "show_figure", "notebook_reporter"]

SUMMARY_DIR = "summary"


def _slug(name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")
    if not slug:
        raise ValueError(f"summary item name {name!r} has no usable characters")
    return slug


def publish_table(df: Any, out_dir: PathLike, name: str, caption: str, *, html_text: str | None = None) -> Path:
    """Save a table for the book's results page: ``out_dir/summary/<name>.csv`` (+ ``.html``, ``.json``).

    Parameters
    ----------
    df : pandas.DataFrame
        The table.
    out_dir : path-like
        The stage's output folder.
    name : str
        File stem (non-alphanumeric characters become ``_``).
    caption : str
        Caption on the results page.
    html_text : str, optional
        The rendered table (e.g. :func:`bmstudy.reporting.tables.to_html`); default the DataFrame's own HTML.

    Returns
    -------
    Path
        The CSV.

    Raises
    ------
    TypeError
        When ``df`` is not a DataFrame.
    ValueError
        When ``name`` has no usable characters.
    """
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"publish_table({name!r}): expected a DataFrame, got {type(df).__name__}")
    folder = Path(out_dir) / SUMMARY_DIR
    stem = _slug(name)
    csv = atomic_to_csv(df, folder / f"{stem}.csv")
    atomic_write_text(folder / f"{stem}.html", html_text if html_text is not None else df.to_html(index=False))
    atomic_write_json(folder / f"{stem}.json", {"kind": "table", "caption": caption, "order": time.time()})
    return csv


def publish_figure(fig: Any, out_dir: PathLike, name: str, caption: str, dpi: int = 110) -> Path:
    """Save a matplotlib figure for the book's results page: ``out_dir/summary/<name>.png`` (+ ``.json``).

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure.
    out_dir, name, caption : path-like, str, str
        As :func:`publish_table`.
    dpi : int
        PNG resolution.

    Returns
    -------
    Path
        The PNG.

    Raises
    ------
    TypeError
        When ``fig`` has no ``savefig``.
    """
    if not hasattr(fig, "savefig"):
        raise TypeError(f"publish_figure({name!r}): expected a matplotlib Figure, got {type(fig).__name__}")
    folder = Path(out_dir) / SUMMARY_DIR
    stem = _slug(name)
    png = folder / f"{stem}.png"
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    atomic_write_json(folder / f"{stem}.json", {"kind": "figure", "caption": caption, "order": time.time()})
    return png


def show_table(df: Any, caption: str, out_dir: PathLike, name: str | None = None, precision: int = 3) -> None:
    """Display a publication-style table in a notebook; with ``name`` also publish it for the book.

    Parameters
    ----------
    df : pandas.DataFrame
        The table.
    caption : str
        Its caption.
    out_dir : path-like
        The stage's output folder.
    name : str, optional
        Publish under this name (:func:`publish_table`).
    precision : int
        Decimals of floats.
    """
    from IPython.display import HTML, display

    from .tables import to_html

    text = to_html(df, caption, precision=precision)
    display(HTML(text))
    if name:
        publish_table(df, out_dir, name, caption, html_text=text)


def show_figure(fig: Any, caption: str, out_dir: PathLike, name: str | None = None) -> None:
    """Display a matplotlib figure in a notebook, publish it with ``name``, then close it.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure.
    caption : str
        Its caption.
    out_dir : path-like
        The stage's output folder.
    name : str, optional
        Publish under this name (:func:`publish_figure`).
    """
    import matplotlib.pyplot as plt
    from IPython.display import display

    display(fig)
    if name:
        publish_figure(fig, out_dir, name, caption)
    plt.close(fig)


def notebook_reporter(out_dir: PathLike) -> tuple[Callable[..., None], Callable[..., None]]:
    """``(show_table, show_figure)`` bound to a stage's output folder, for the study notebooks.

    Parameters
    ----------
    out_dir : path-like
        The stage's output folder (created).

    Returns
    -------
    (callable, callable)
        ``table(df, caption, name=None, precision=3)`` and ``figure(fig, caption, name=None)``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    def table(df: Any, caption: str, name: str | None = None, precision: int = 3) -> None:
        show_table(df, caption, out, name, precision)

    def figure(fig: Any, caption: str, name: str | None = None) -> None:
        show_figure(fig, caption, out, name)

    return table, figure
