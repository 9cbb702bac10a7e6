"""How the study's tables read: display labels, p-value text, and publication-style HTML / LaTeX.

* :data:`METRIC_LABELS`, :data:`SET_LABELS`, :data:`GROUP_LEVELS`, :data:`BY_LABELS` - display names
* :func:`format_p` - ``'<0.001'`` style p-values
* :func:`to_html` / :func:`to_latex` - booktabs-like tables with p-value columns formatted

The module imports nothing from the study packages.
"""
from __future__ import annotations

import html
import re
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["METRIC_LABELS", "SET_LABELS", "GROUP_LEVELS", "BY_LABELS", "format_p", "set_header", "to_html", "to_latex"]

METRIC_LABELS: dict[str, str] = {
    "precision": "Precision", "recall": "Recall", "f1": "F1 Score", "iou": "IoU",
    "dice": "Dice Coefficient", "specificity": "Specificity", "mcc": "MCC", "auc": "AUC",
}
#: Display names of the manifest splits (the paper calls the external set "validation set").
SET_LABELS: dict[str, str] = {"test": "Testing set", "external": "Validation set"}
#: Subgroup variables: ordered (value, label) pairs; estimates are first minus second.
GROUP_LEVELS: dict[str, tuple[tuple[str, str], ...]] = {
    "sex": (("M", "Male"), ("F", "Female")),
    "age_group": (("<60", "<60"), (">=60", "\u226560")),
    "cancer_type": (("lung", "Lung cancer"), ("other", "Other cancer")),
}
#: Display names of the subgroup variables (the paper's).
BY_LABELS: dict[str, str] = {"sex": "Gender", "age_group": "Age", "cancer_type": "Cancer type"}


def format_p(p: float, digits: int = 3) -> str:
    """``'<0.001'`` style p-value text.

    Parameters
    ----------
    p : float
        The p-value (``None`` or NaN give ``''``).
    digits : int, default 3
        Decimals; values below ``10**-digits`` print as ``'<0.001'``.

    Returns
    -------
    str
    """
    if p is None or not np.isfinite(p):
        return ""
    floor = 10.0 ** -digits
    return f"<{floor:.{digits}f}" if p < floor else f"{p:.{digits}f}"


def set_header(split: str, n: int) -> str:
    """Column header of one set: ``'Testing set (N = 91)'``.

    Parameters
    ----------
    split : str
        Manifest split (``test``, ``external``; others are shown as they are).
    n : int
        Patients.

    Returns
    -------
    str
    """
    return f"{SET_LABELS.get(split, split)} (N = {n})"


def _is_p_column(name: Any) -> bool:
    """Column names that hold p-values: 'p', 'p-value', 'mw_p', 'DeLong p (voxel-level)', ..."""
    return re.search(r"(?:^|[\s_])p(?:-value|_value|value)?(?:$|[\s_(])", str(name).lower()) is not None


def _styler(df: pd.DataFrame, caption: str, precision: int, escape: str | None):
    styler = df.style
    p_cols = [c for c in df.columns if _is_p_column(c) and pd.api.types.is_numeric_dtype(df[c])]
    other_float = [c for c in df.columns if c not in p_cols and pd.api.types.is_float_dtype(df[c])]
    styler = styler.format(precision=precision, na_rep="", escape=escape)
    if other_float:
        styler = styler.format(precision=precision, na_rep="", subset=other_float, escape=escape)
    if p_cols:
        esc = html.escape if escape == "html" else _escape_latex if escape == "latex" else str
        styler = styler.format(lambda v: esc(format_p(v)), subset=p_cols, na_rep="")
    if isinstance(df.index, pd.RangeIndex):
        styler = styler.hide(axis="index")
    return styler.set_caption(caption)


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "<": r"$<$", ">": r"$>$", "\u00b1": r"$\pm$", "\u2265": r"$\geq$", "\u2264": r"$\leq$", "\u0394": r"$\Delta$"}


def _escape_latex(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def _latex_text(value: Any) -> str:
    text = str(value)
    stripped = text.lstrip(" ")
    indent = (len(text) - len(stripped)) // 4
    return "\\quad " * indent + _escape_latex(stripped)


_HTML_STYLES = [
    {"selector": "", "props": "border-collapse: collapse; border-top: 2px solid black; border-bottom: 2px solid black;"
                              " font-family: sans-serif; font-size: 0.9em; margin: 0.5em 0;"},
    {"selector": "caption", "props": "caption-side: top; text-align: left; font-weight: bold; padding-bottom: 0.4em;"},
    {"selector": "thead th", "props": "border-bottom: 1px solid black; padding: 0.3em 0.8em; text-align: center;"},
    {"selector": "td", "props": "padding: 0.2em 0.8em; text-align: center; white-space: pre;"},
    {"selector": "td:first-child", "props": "text-align: left;"},
]


def to_html(df: pd.DataFrame, caption: str = "", precision: int = 3) -> str:
    """Publication-style (booktabs-like) HTML for a table; p-value columns as '<0.001' / '0.173'.

    Column headers show ``snake_case`` names with spaces so that they can wrap (narrow book pages).

    Parameters
    ----------
    df : DataFrame
        The table; a ``RangeIndex`` is hidden.
    caption : str, default ''
        Table caption (escaped).
    precision : int, default 3
        Decimals of float columns.

    Returns
    -------
    str
        An HTML ``<table>`` with inline styles.
    """
    df = df.rename(columns=lambda c: c.replace("_", " ") if isinstance(c, str) else c)
    styler = _styler(df, html.escape(caption), precision, escape="html")
    return styler.set_table_styles(_HTML_STYLES).to_html()


def to_latex(df: pd.DataFrame, caption: str = "", label: str | None = None, precision: int = 3) -> str:
    """Booktabs LaTeX (``\\toprule``/``\\midrule``/``\\bottomrule``) for a table, text escaped.

    Parameters
    ----------
    df : DataFrame
        The table; indented sub-rows (``'    Male'``) become ``\\quad`` indents.
    caption : str, default ''
        Table caption (escaped).
    label : str, optional
        ``\\label`` of the table.
    precision : int, default 3
        Decimals of float columns.

    Returns
    -------
    str
        A ``table`` environment.
    """
    styler = _styler(df, _escape_latex(caption), precision, escape="latex")
    text_cols = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]
    if text_cols:  # keep the indentation of sub-rows ('    Male') visible in LaTeX
        styler = styler.format(_latex_text, subset=text_cols, na_rep="")
    styler = styler.format_index(_escape_latex, axis=1)
    return styler.to_latex(hrules=True, caption=_escape_latex(caption) if caption else None, label=label,
                           position_float="centering", column_format="l" + "c" * (df.shape[1] - 1 + (
                               0 if isinstance(df.index, pd.RangeIndex) else 1)))
