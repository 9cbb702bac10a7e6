"""The paper's published numbers (Tables 1-3), transcribed from the full text.

* :func:`paper_table1` - patient characteristics in :func:`bmstudy.reporting.tables.table1`'s layout
* :func:`paper_table2` - median, Q1, Q3 of the eight metrics per set
* :func:`paper_table3` - model vs manual time per case (numeric) and :func:`format_paper_table3` (as printed)

The side-by-side comparisons with a run are in :mod:`bmstudy.reporting.tables`.
"""
from __future__ import annotations

import pandas as pd

from .render import SET_LABELS, set_header

__all__ = ["PAPER_N", "paper_table1", "paper_table2", "paper_table3", "format_paper_table3"]

#: Patients per set in the paper (internal test set, external validation set).
PAPER_N: dict[str, int] = {"test": 91, "external": 172}


def paper_table2() -> pd.DataFrame:
    """The paper's published Table 2 (median, Q1, Q3 per set), transcribed from the full text.

    Returns
    -------
    DataFrame
        ``split, metric, n, median, q1, q3``; 8 metrics x 2 sets.
    """
    published = {
        "test": {  # Testing set (N = 91)
            "precision": (0.926, 0.831, 0.966), "recall": (0.782, 0.567, 0.861), "f1": (0.821, 0.674, 0.882),
            "iou": (0.697, 0.508, 0.789), "dice": (0.821, 0.674, 0.882), "specificity": (1.000, 1.000, 1.000),
            "mcc": (0.832, 0.698, 0.883), "auc": (0.891, 0.793, 0.930),
        },
        "external": {  # Validation set (N = 172)
            "precision": (0.935, 0.858, 0.967), "recall": (0.638, 0.342, 0.806), "f1": (0.750, 0.495, 0.852),
            "iou": (0.600, 0.329, 0.743), "dice": (0.750, 0.495, 0.852), "specificity": (1.000, 1.000, 1.000),
            "mcc": (0.768, 0.549, 0.857), "auc": (0.819, 0.671, 0.903),
        },
    }
    n = PAPER_N
    return pd.DataFrame([
        {"split": s, "metric": m, "n": n[s], "median": v[0], "q1": v[1], "q3": v[2]}
        for s, d in published.items() for m, v in d.items()
    ])


def paper_table3() -> pd.DataFrame:
    """The paper's published Table 3 (time in seconds, median and IQR; Mann-Whitney Z; p < 0.001).

    Returns
    -------
    DataFrame
        ``split, model_median, model_q1, model_q3, manual_median, manual_q1, manual_q3, Z, p``.
    """
    return pd.DataFrame([
        {"split": "test", "model_median": 69, "model_q1": 68, "model_q3": 69, "manual_median": 113,
         "manual_q1": 90, "manual_q3": 151, "Z": -11.672, "p": "<0.001"},
        {"split": "external", "model_median": 66, "model_q1": 65, "model_q3": 68, "manual_median": 96,
         "manual_q1": 78, "manual_q3": 113, "Z": -14.143, "p": "<0.001"},
    ])


def paper_table1() -> pd.DataFrame:
    """The paper's published Table 1 in :func:`bmstudy.reporting.tables.table1`'s layout.

    Percentages are computed from the counts. Two evident typos of the printed table are corrected and
    noted in ``note``: the header's "Validation set (N = 95)" (172 per the text and Table 2) and
    "Male 5" in the testing set (54 per section 7.3; 54 + 37 = 91). p-values are the printed strings.

    Returns
    -------
    DataFrame
        ``Characteristic``, one column per set, ``p-value`` (text) and ``note``.
    """
    n_a, n_b = PAPER_N["test"], PAPER_N["external"]

    def cnt(k: int, n: int) -> str:
        return f"{k} ({100.0 * k / n:.1f}%)"

    rows = [
        ("Age, mean \u00b1 SD", "59.4 \u00b1 10.2", "57.4 \u00b1 12.6", "0.173", ""),
        ("Age group", "", "", "0.411", ""),
        ("    <60", cnt(49, n_a), cnt(82, n_b), "", ""),
        ("    \u226560", cnt(42, n_a), cnt(90, n_b), "", ""),
        ("Gender", "", "", "0.136", ""),
        ("    Male", cnt(54, n_a), cnt(84, n_b), "", "printed as 5 in the testing set; 54 per section 7.3"),
        ("    Female", cnt(37, n_a), cnt(88, n_b), "", ""),
        ("Cancer type", "", "", "<0.001", ""),
        ("    Lung cancer", cnt(74, n_a), cnt(93, n_b), "", ""),
        ("    Other cancer", cnt(17, n_a), cnt(79, n_b), "", ""),
    ]
    out = pd.DataFrame(rows, columns=["Characteristic", set_header("test", n_a), set_header("external", n_b),
                                      "p-value", "note"])
    out.loc[0, "note"] = "header prints 'Validation set (N = 95)'; 172 per the text and Table 2"
    return out


def format_paper_table3() -> pd.DataFrame:
    """The paper's Table 3 as printed: ``Dataset``, ``Model, s`` / ``Manual, s`` as 'median (Q1, Q3)', ``Z``, ``p``.

    Returns
    -------
    DataFrame
        One row per set, the layout of :func:`bmstudy.reporting.tables.table3`.
    """
    p3 = paper_table3()

    def med_iqr(prefix: str) -> list[str]:
        cols = [f"{prefix}_median", f"{prefix}_q1", f"{prefix}_q3"]
        return [f"{m} ({a}, {b})" for m, a, b in p3[cols].to_numpy()]

    return pd.DataFrame({
        "Dataset": p3["split"].map(lambda s: SET_LABELS.get(s, s).removesuffix(" set")),
        "Model, s": med_iqr("model"),
        "Manual, s": med_iqr("manual"),
        "Z": p3["Z"], "p": p3["p"],
    })
