"""The paper's tables as pandas DataFrames, plus publication-style HTML / LaTeX.

All functions take the per-patient frame of :func:`bmstudy.evaluation.evaluate.evaluate_cohort` (columns
``patient_id, split, age, age_group, sex, cancer_type, manual_seconds, model_seconds, status`` and
the eight metrics); rows whose ``status`` is not ``'ok'`` are left out. Statistics come from
:mod:`bmstudy.statistics.rank` (Mann-Whitney with Hodges-Lehmann CI as R's ``wilcox.test``; DeLong; chi-square).

* :func:`table1` - characteristics of the internal test vs external set (paper Table 1)
* :func:`table2` - median (Q1, Q3) of the eight metrics per set (paper Table 2)
* :func:`table3` - model vs manual delineation time, Mann-Whitney Z and p (paper Table 3)
* :func:`subgroup_table` - subgroup comparisons (sex, age group, cancer type) with the paper's
  voxel-level DeLong p for AUC side by side with patient-level alternatives
* :func:`lesion_detection_table` - lesion-wise detection by lesion size
* :func:`paper_table1` / :func:`paper_table2` / :func:`paper_table3` / :func:`compare_with_paper`
"""
from __future__ import annotations

import html
import re
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from ..evaluation.evaluate import METRICS

__all__ = [
    "METRIC_LABELS", "SET_LABELS", "GROUP_LEVELS",
    "format_p", "median_iqr", "summary_stats",
    "table1", "table2", "table3", "subgroup_table", "all_subgroup_tables", "format_subgroup_table",
    "lesion_detection_table", "paper_table1", "paper_table2", "paper_table3", "compare_with_paper",
    "to_html", "to_latex",
]

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
BY_LABELS: dict[str, str] = {"sex": "Gender", "age_group": "Age", "cancer_type": "Cancer type"}


# --------------------------------------------------------------------------- helpers
def format_p(p: float, digits: int = 3) -> str:
    """``'<0.001'`` style p-value text; NaN gives ``''``."""
    if p is None or not np.isfinite(p):
        return ""
    floor = 10.0 ** -digits
    return f"<{floor:.{digits}f}" if p < floor else f"{p:.{digits}f}"


def _values(x: Any) -> np.ndarray:
    a = pd.to_numeric(pd.Series(x), errors="coerce").to_numpy(dtype=float)
    return a[np.isfinite(a)]


def median_iqr(x: Any, digits: int = 3) -> str:
    """``'median (Q1, Q3)'`` with R's default (type 7, linear) quantiles; ``''`` for no data."""
    a = _values(x)
    if a.size == 0:
        return ""
    q1, med, q3 = np.percentile(a, [25, 50, 75])
    return f"{med:.{digits}f} ({q1:.{digits}f}, {q3:.{digits}f})"


def _ok(df: pd.DataFrame) -> pd.DataFrame:
    if "status" in df.columns:
        df = df[df["status"].astype(str) == "ok"]
    return df


def _require(df: pd.DataFrame, cols: Iterable[str], what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"{what}: missing column(s) {missing}")


def _set_header(split: str, n: int) -> str:
    return f"{SET_LABELS.get(split, split)} (N = {n})"


def summary_stats(df: pd.DataFrame, metrics: Sequence[str] = METRICS, by: str = "split") -> pd.DataFrame:
    """Numeric n / median / Q1 / Q3 of each metric per value of ``by`` (tidy, one row per pair)."""
    df = _ok(df)
    _require(df, [by, *metrics], "summary_stats")
    rows = []
    for key, sub in df.groupby(by, sort=False):
        for m in metrics:
            a = _values(sub[m])
            q1, med, q3 = np.percentile(a, [25, 50, 75]) if a.size else (np.nan,) * 3
            rows.append({by: key, "metric": m, "n": int(a.size), "median": med, "q1": q1, "q3": q3})
    return pd.DataFrame(rows)


def _splits_present(df: pd.DataFrame, splits: Sequence[str]) -> list[str]:
    present = [s for s in splits if (df["split"] == s).any()]
    if not present:
        raise ValueError(f"no rows with split in {list(splits)}")
    return present


# --------------------------------------------------------------------------- Table 1
def _count_pct(values: pd.Series, level: str) -> str:
    n = int((values.dropna().astype(str) == level).sum())
    total = int(values.notna().sum())
    return f"{n} ({100.0 * n / total:.1f}%)" if total else "0"


def table1(df: pd.DataFrame, splits: Sequence[str] = ("test", "external"), age_test: str = "auto") -> pd.DataFrame:
    """Patient characteristics of two sets (paper Table 1).

    Age as mean ± SD compared with :func:`bmstudy.statistics.rank.compare_continuous` (``age_test``: 'auto',
    't' or 'mwu'); age group, sex and cancer type as n (%) compared with the chi-square test of
    :func:`bmstudy.statistics.rank.compare_categorical`. Columns: ``Characteristic``, one per set,
    ``p-value`` (float) and ``test``. Pass the manifest to describe every patient of the sets, or the
    ``evaluate_cohort`` frame to describe the evaluated ones (failed cases are left out).
    """
    from ..statistics import rank as stats

    if len(splits) != 2:
        raise ValueError(f"table1 compares exactly two splits, got {list(splits)}")
    df = _ok(df)
    _require(df, ["split", "age", "sex", "cancer_type"], "table1")
    df = df.copy()
    if "age_group" not in df.columns:
        from ..evaluation.evaluate import age_group

        df["age_group"] = age_group(df["age"])
    a, b = (df[df["split"] == s] for s in splits)
    if a.empty or b.empty:
        raise ValueError(f"table1 needs patients in both splits {list(splits)} (got {len(a)} and {len(b)})")
    ca, cb = _set_header(splits[0], len(a)), _set_header(splits[1], len(b))
    rows: list[dict[str, Any]] = []

    def add(label: str, va: str, vb: str, p: float = np.nan, test: str = "") -> None:
        rows.append({"Characteristic": label, ca: va, cb: vb, "p-value": p, "test": test})

    age_a, age_b = _values(a["age"]), _values(b["age"])
    res = stats.compare_continuous(age_a, age_b, test=age_test)
    add("Age, mean \u00b1 SD", f"{age_a.mean():.1f} \u00b1 {age_a.std(ddof=1):.1f}",
        f"{age_b.mean():.1f} \u00b1 {age_b.std(ddof=1):.1f}", float(res["p_value"]), str(res["test"]))
    for var, header in (("age_group", "Age group"), ("sex", "Gender"), ("cancer_type", "Cancer type")):
        res = stats.compare_categorical(a[var].dropna().astype(str).to_numpy(), b[var].dropna().astype(str).to_numpy())
        add(header, "", "", float(res["p_value"]), str(res["test"]))
        known = [v for v, _ in GROUP_LEVELS[var]]
        extra = sorted(set(map(str, pd.concat([a[var], b[var]]).dropna())) - set(known))
        for value, label in (*GROUP_LEVELS[var], *((e, e) for e in extra)):
            add(f"    {label}", _count_pct(a[var], value), _count_pct(b[var], value))
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- Table 2
def table2(df: pd.DataFrame, splits: Sequence[str] = ("test", "external"),
           metrics: Sequence[str] = METRICS, digits: int = 3) -> pd.DataFrame:
    """Median (Q1, Q3) of each metric per set (paper Table 2); one column per set present.

    A metric missing for some patients (AUC is undefined without lesion voxels) gets ``[n = k]``
    appended, k being the number of patients it summarises.
    """
    df = _ok(df)
    _require(df, ["split", *metrics], "table2")
    out = pd.DataFrame({"Metric": [METRIC_LABELS.get(m, m) for m in metrics]})
    for s in _splits_present(df, splits):
        sub = df[df["split"] == s]
        cells = []
        for m in metrics:
            k = _values(sub[m]).size
            cells.append(median_iqr(sub[m], digits) + (f" [n = {k}]" if k < len(sub) else ""))
        out[_set_header(s, len(sub))] = cells
    return out


# --------------------------------------------------------------------------- Table 3
def table3(df: pd.DataFrame, splits: Sequence[str] = ("test", "external"), digits: int = 0) -> pd.DataFrame:
    """Model vs manual delineation time per set (paper Table 3).

    Times as median (Q1, Q3) seconds; ``Z`` and ``p-value`` from :func:`bmstudy.statistics.rank.mann_whitney`
    (model vs manual, as the paper did although the two times are paired per patient); the paired
    Wilcoxon signed-rank p is added as ``p (paired Wilcoxon)`` for reference.
    """
    from scipy.stats import wilcoxon

    from ..statistics import rank as stats

    df = _ok(df)
    _require(df, ["split", "model_seconds", "manual_seconds"], "table3")
    rows = []
    for s in _splits_present(df, splits):
        sub = df[df["split"] == s]
        model, manual = _values(sub["model_seconds"]), _values(sub["manual_seconds"])
        row: dict[str, Any] = {"Dataset": SET_LABELS.get(s, s), "n": len(sub),
                               "Model, s": median_iqr(model, digits), "Manual, s": median_iqr(manual, digits),
                               "Z": np.nan, "p-value": np.nan, "p (paired Wilcoxon)": np.nan}
        if model.size and manual.size:
            res = stats.mann_whitney(model, manual)
            row["Z"], row["p-value"] = float(res.z), float(res.p_value)
        pairs = sub[["model_seconds", "manual_seconds"]].apply(pd.to_numeric, errors="coerce").dropna()
        d = (pairs["model_seconds"] - pairs["manual_seconds"]).to_numpy()
        if np.count_nonzero(d):
            row["p (paired Wilcoxon)"] = float(wilcoxon(d).pvalue)
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- subgroups
def _pool(hists: Mapping[str, tuple[np.ndarray, np.ndarray]], pids: Iterable[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    pids = [str(p) for p in pids]
    missing = [p for p in pids if p not in hists]
    if missing:
        raise KeyError(f"score histograms missing for patient(s) {missing[:10]}")
    return [(np.asarray(hists[p][0]), np.asarray(hists[p][1])) for p in pids]


def subgroup_table(
    df: pd.DataFrame,
    by: str,
    split: str,
    hists: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    metrics: Sequence[str] = METRICS,
    *,
    n_boot: int = 2000,
    seed: int = 0,
    conf_level: float = 0.95,
    digits: int = 3,
) -> pd.DataFrame:
    """Compare two subgroups (``by`` in sex / age_group / cancer_type) within one split.

    One row per metric: ``n_a``, ``n_b``, ``summary_a``/``summary_b`` (median (Q1, Q3)), Mann-Whitney
    ``mw_p`` with the Hodges-Lehmann shift a - b and its CI (``hl_estimate``, ``hl_ci_low``,
    ``hl_ci_high``; ``hl_conf_level`` is the level achieved, below the requested one only for tiny
    exact samples). For AUC and with ``hists`` ({patient_id: (pos, neg)}, see
    :func:`bmstudy.evaluation.evaluate.load_score_hists`) also the paper's voxel-level DeLong test on the
    pooled histograms (``delong_auc_a``, ``delong_auc_b``, ``delong_z``, ``delong_p``; it treats
    every voxel as independent) beside the patient-level cluster bootstrap of the pooled-AUC
    difference (``boot_diff``, ``boot_ci_low``, ``boot_ci_high``, ``boot_p``); ``mw_p`` on the
    per-patient AUCs is the other patient-level alternative. Group a is the first level of
    :data:`GROUP_LEVELS`. Too few patients give NaN statistics, never an error.
    """
    from ..statistics import rank as stats

    if by not in GROUP_LEVELS:
        raise ValueError(f"by must be one of {list(GROUP_LEVELS)}, got {by!r}")
    df = _ok(df)
    _require(df, ["patient_id", "split", by, *metrics], "subgroup_table")
    sub = df[df["split"] == split]
    if sub.empty:
        raise ValueError(f"subgroup_table: no patients in split {split!r}")
    (va, la), (vb, lb) = GROUP_LEVELS[by]
    ga, gb = sub[sub[by].astype(str) == va], sub[sub[by].astype(str) == vb]
    rows = []
    for m in metrics:
        x, y = _values(ga[m]), _values(gb[m])
        row: dict[str, Any] = {
            "split": split, "by": by, "metric": m, "group_a": la, "group_b": lb, "n_a": int(x.size),
            "n_b": int(y.size), "summary_a": median_iqr(x, digits), "summary_b": median_iqr(y, digits),
            "mw_p": np.nan, "hl_estimate": np.nan, "hl_ci_low": np.nan, "hl_ci_high": np.nan,
            "hl_conf_level": np.nan,
        }
        if x.size and y.size:
            res = stats.mann_whitney(x, y, conf_level=conf_level)
            row.update(mw_p=float(res.p_value), hl_estimate=float(res.estimate),
                       hl_ci_low=float(res.ci_low), hl_ci_high=float(res.ci_high),
                       hl_conf_level=float(getattr(res, "conf_level", conf_level)))
        if m == "auc":
            row.update(delong_auc_a=np.nan, delong_auc_b=np.nan, delong_z=np.nan, delong_p=np.nan,
                       boot_diff=np.nan, boot_ci_low=np.nan, boot_ci_high=np.nan, boot_p=np.nan)
            if hists is not None and len(ga) and len(gb):
                ha, hb = _pool(hists, ga["patient_id"]), _pool(hists, gb["patient_id"])
                pos_a, neg_a = (np.sum([h[i] for h in ha], axis=0) for i in (0, 1))
                pos_b, neg_b = (np.sum([h[i] for h in hb], axis=0) for i in (0, 1))
                if pos_a.sum() and neg_a.sum() and pos_b.sum() and neg_b.sum():
                    d = stats.delong_unpaired_hist(pos_a, neg_a, pos_b, neg_b)
                    row.update(delong_auc_a=float(d.auc_a), delong_auc_b=float(d.auc_b),
                               delong_z=float(d.z), delong_p=float(d.p_value))
                    bt = stats.cluster_bootstrap_auc_diff(ha, hb, n_boot=n_boot, seed=seed, conf_level=conf_level)
                    row.update(boot_diff=float(bt["diff"]), boot_ci_low=float(bt["ci_low"]),
                               boot_ci_high=float(bt["ci_high"]), boot_p=float(bt["p_value"]))
        rows.append(row)
    out = pd.DataFrame(rows)
    for c in ("delong_auc_a", "delong_auc_b", "delong_z", "delong_p", "boot_diff", "boot_ci_low", "boot_ci_high", "boot_p"):
        if c not in out.columns:
            out[c] = np.nan
    return out


def all_subgroup_tables(
    df: pd.DataFrame,
    hists: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    splits: Sequence[str] = ("test", "external"),
    bys: Sequence[str] = ("cancer_type", "sex", "age_group"),
    **kwargs: Any,
) -> pd.DataFrame:
    """:func:`subgroup_table` for every split x subgroup variable, stacked (long format)."""
    present = _splits_present(_ok(df), splits)
    return pd.concat([subgroup_table(df, by, s, hists, **kwargs) for s in present for by in bys], ignore_index=True)


def format_subgroup_table(t: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """Human-readable version of a :func:`subgroup_table` (one split x variable) for reports."""
    if t.empty:
        return t.copy()
    la, lb = t["group_a"].iat[0], t["group_b"].iat[0]

    def ci(est: float, lo: float, hi: float) -> str:
        return "" if not np.isfinite(est) else f"{est:.{digits}f} ({lo:.{digits}f}, {hi:.{digits}f})"

    out = pd.DataFrame({
        "Metric": [METRIC_LABELS.get(m, m) for m in t["metric"]],
        f"{la} (n = {t['n_a'].max()})": t["summary_a"],
        f"{lb} (n = {t['n_b'].max()})": t["summary_b"],
        "Mann-Whitney p": t["mw_p"],
        "HL shift (95% CI)": [ci(*r[:3]) + (f" [{100 * r[3]:.0f}% CI]" if np.isfinite(r[3]) and abs(r[3] - 0.95) > 1e-6 else "")
                              for r in t[["hl_estimate", "hl_ci_low", "hl_ci_high", "hl_conf_level"]].to_numpy()],
        "DeLong p (voxel-level, as paper)": t["delong_p"],
        "Cluster bootstrap \u0394AUC (95% CI)": [ci(*r) for r in t[["boot_diff", "boot_ci_low", "boot_ci_high"]].to_numpy()],
        "Cluster bootstrap p": t["boot_p"],
    })
    return out


# --------------------------------------------------------------------------- lesions
def lesion_detection_table(lesions_df: pd.DataFrame, splits: Sequence[str] = ("test", "external"),
                           metrics_df: pd.DataFrame | None = None) -> pd.DataFrame:
    """Lesion-wise detection by size bin per set (:func:`bmstudy.evaluation.voxel.lesion_summary_by_size`).

    ``lesions_df`` holds the ``lesions.csv`` rows (with ``split``). Patients without any lesion row
    (no reference and no predicted lesion) are invisible there; pass the per-patient ``metrics_df``
    so ``n_patients`` / ``fp_per_patient`` count every evaluated patient of the set.
    """
    from ..evaluation.voxel import lesion_summary_by_size

    _require(lesions_df, ["patient_id", "split"], "lesion_detection_table")
    frames = []
    for s in splits:
        sub = lesions_df[lesions_df["split"] == s]
        n_pat = None
        if metrics_df is not None:
            n_pat = int((_ok(metrics_df)["split"] == s).sum())
        if sub.empty and not n_pat:
            continue
        t = lesion_summary_by_size(sub.drop(columns=["split"])).copy()
        if "size_bin" not in t.columns and t.index.name == "size_bin":
            t = t.reset_index()
        if n_pat is not None:
            t["n_patients"] = n_pat
            t["fp_per_patient"] = t["n_fp"] / n_pat if n_pat else np.nan
        t.insert(0, "split", s)
        frames.append(t)
    if not frames:
        raise ValueError(f"no lesions in splits {list(splits)}")
    return pd.concat(frames, ignore_index=True)


# --------------------------------------------------------------------------- the paper's numbers
def paper_table2() -> pd.DataFrame:
    """The paper's published Table 2 (median, Q1, Q3 per set), transcribed from the full text."""
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
    n = {"test": 91, "external": 172}
    return pd.DataFrame([
        {"split": s, "metric": m, "n": n[s], "median": v[0], "q1": v[1], "q3": v[2]}
        for s, d in published.items() for m, v in d.items()
    ])


def paper_table3() -> pd.DataFrame:
    """The paper's published Table 3 (time in seconds, median and IQR; Mann-Whitney Z; p < 0.001)."""
    return pd.DataFrame([
        {"split": "test", "model_median": 69, "model_q1": 68, "model_q3": 69, "manual_median": 113,
         "manual_q1": 90, "manual_q3": 151, "Z": -11.672, "p": "<0.001"},
        {"split": "external", "model_median": 66, "model_q1": 65, "model_q3": 68, "manual_median": 96,
         "manual_q1": 78, "manual_q3": 113, "Z": -14.143, "p": "<0.001"},
    ])


def paper_table1() -> pd.DataFrame:
    """The paper's published Table 1 in :func:`table1`'s layout (percentages computed from the counts).

    Two evident typos of the printed table are corrected and noted in ``note``: the header's
    "Validation set (N = 95)" (172 per the text and Table 2) and "Male 5" in the testing set (54 per
    section 7.3; 54 + 37 = 91). p-values are the printed strings.
    """
    n_a, n_b = 91, 172

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
    out = pd.DataFrame(rows, columns=["Characteristic", _set_header("test", n_a), _set_header("external", n_b),
                                      "p-value", "note"])
    out.loc[0, "note"] = "header prints 'Validation set (N = 95)'; 172 per the text and Table 2"
    return out


def compare_with_paper(ours: pd.DataFrame, metrics: Sequence[str] = METRICS, digits: int = 3) -> pd.DataFrame:
    """Our Table 2 numbers beside the paper's: one row per (split, metric).

    ``ours`` is the per-patient frame of ``evaluate_cohort``. Columns: ``split, metric, paper,
    ours`` (median (Q1, Q3) text), ``n_paper, n_ours, paper_median, ours_median, diff_median``.
    """
    paper = paper_table2()
    mine = summary_stats(ours, metrics, by="split")
    merged = paper.merge(mine, on=["split", "metric"], how="left", suffixes=("_paper", "_ours"))
    merged = merged[merged["metric"].isin(list(metrics))]

    def txt(med: float, lo: float, hi: float) -> str:
        return "" if not np.isfinite(med) else f"{med:.{digits}f} ({lo:.{digits}f}, {hi:.{digits}f})"

    out = pd.DataFrame({
        "split": merged["split"].to_numpy(),
        "metric": merged["metric"].to_numpy(),
        "paper": [txt(*r) for r in merged[["median_paper", "q1_paper", "q3_paper"]].to_numpy(dtype=float)],
        "ours": [txt(*r) for r in merged[["median_ours", "q1_ours", "q3_ours"]].to_numpy(dtype=float)],
        "n_paper": merged["n_paper"].to_numpy(),
        "n_ours": merged["n_ours"].fillna(0).astype(int).to_numpy(),
        "paper_median": merged["median_paper"].to_numpy(dtype=float),
        "ours_median": merged["median_ours"].to_numpy(dtype=float),
    })
    out["diff_median"] = out["ours_median"] - out["paper_median"]
    return out


# --------------------------------------------------------------------------- rendering
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

    Column headers show ``snake_case`` names with spaces so that they can wrap (narrow book pages)."""
    df = df.rename(columns=lambda c: c.replace("_", " ") if isinstance(c, str) else c)
    styler = _styler(df, html.escape(caption), precision, escape="html")
    return styler.set_table_styles(_HTML_STYLES).to_html()


def to_latex(df: pd.DataFrame, caption: str = "", label: str | None = None, precision: int = 3) -> str:
    """Booktabs LaTeX (``\\toprule``/``\\midrule``/``\\bottomrule``) for a table, text escaped."""
    styler = _styler(df, _escape_latex(caption), precision, escape="latex")
    text_cols = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]
    if text_cols:  # keep the indentation of sub-rows ('    Male') visible in LaTeX
        styler = styler.format(_latex_text, subset=text_cols, na_rep="")
    styler = styler.format_index(_escape_latex, axis=1)
    return styler.to_latex(hrules=True, caption=_escape_latex(caption) if caption else None, label=label,
                           position_float="centering", column_format="l" + "c" * (df.shape[1] - 1 + (
                               0 if isinstance(df.index, pd.RangeIndex) else 1)))
