"""The paper's tables, computed from a run, as pandas DataFrames (shown with :mod:`.render`).

All functions take the per-patient frame of :func:`bmstudy.evaluation.evaluate_cohort` (columns
``patient_id, split, age, age_group, sex, cancer_type, manual_seconds, model_seconds, status`` and
the eight metrics); rows whose ``status`` is not ``'ok'`` are left out. Statistics come from
:mod:`bmstudy.statistics` (Mann-Whitney with Hodges-Lehmann CI as R's ``wilcox.test``; DeLong; chi-square).

* :func:`table1` - characteristics of the internal test vs external set (paper Table 1)
* :func:`table2` / :func:`table2_vs_paper` - median (Q1, Q3) of the eight metrics per set (paper Table 2)
* :func:`table3` - model vs manual delineation time, Mann-Whitney Z and p (paper Table 3)
* :func:`subgroup_table` - subgroup comparisons (sex, age group, cancer type) with the paper's
  voxel-level DeLong p for AUC side by side with patient-level alternatives; :func:`subgroup_sections`,
  :func:`auc_subgroup_table` and :func:`significance_counts` summarise them for the report
* :func:`lesion_detection_table` - lesion-wise detection by lesion size
* :func:`compare_with_paper` - this run's Table 2 numbers beside the paper's (:mod:`.paper`)

The paper's published tables (:mod:`.paper`), the stage notebooks' small tables (:mod:`.stage_tables`)
and the renderers :func:`to_html` / :func:`to_latex` (:mod:`.render`) are re-exported here.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from .. import statistics
from ..evaluation.groups import age_group
from ..evaluation.lesions import lesion_summary_by_size
from ..evaluation.voxel import METRIC_KEYS as METRICS
from .common import finite_values, median_iqr, ok_rows, require_columns, splits_present
from .paper import PAPER_N, format_paper_table3, paper_table1, paper_table2, paper_table3
from .stage_tables import INFERENCE_PHASES, brain_zscore_check, inference_timing_table, settings_table
from .subgroups import (all_subgroup_tables, auc_subgroup_table, format_subgroup_table, significance_counts,
                        subgroup_sections, subgroup_table)
from .render import BY_LABELS, GROUP_LEVELS, METRIC_LABELS, SET_LABELS, format_p, set_header, to_html, to_latex

__all__ = [
    "METRIC_LABELS", "SET_LABELS", "GROUP_LEVELS", "BY_LABELS", "INFERENCE_PHASES",
    "format_p", "median_iqr", "summary_stats", "settings_table",
    "table1", "table2", "table3", "subgroup_table", "all_subgroup_tables", "format_subgroup_table",
    "subgroup_sections", "auc_subgroup_table", "significance_counts",
    "lesion_detection_table", "evaluated_caption", "brats_lesionwise_table", "froc_table", "TEST_NAMES",
    "brain_zscore_check", "inference_timing_table",
    "paper_table1", "paper_table2", "paper_table3", "format_paper_table3", "compare_with_paper", "table2_vs_paper",
    "to_html", "to_latex",
]

def summary_stats(df: pd.DataFrame, metrics: Sequence[str] = METRICS, by: str = "split") -> pd.DataFrame:
    """Numeric n / median / Q1 / Q3 of each metric per value of ``by`` (tidy, one row per pair).

    Parameters
    ----------
    df : DataFrame
        Per-patient frame (rows not ``ok`` are left out).
    metrics : sequence of str
        Metric columns.
    by : str, default 'split'
        Grouping column.

    Returns
    -------
    DataFrame
        Columns ``by, metric, n, median, q1, q3``.

    Raises
    ------
    ValueError
        For missing columns.
    """
    df = ok_rows(df)
    require_columns(df, [by, *metrics], "summary_stats")
    rows = []
    for key, sub in df.groupby(by, sort=False):
        for m in metrics:
            a = finite_values(sub[m])
            q1, med, q3 = np.percentile(a, [25, 50, 75]) if a.size else (np.nan,) * 3
            rows.append({by: key, "metric": m, "n": int(a.size), "median": med, "q1": q1, "q3": q3})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- Table 1
def _count_pct(values: pd.Series, level: str) -> str:
    n = int((values.dropna().astype(str) == level).sum())
    total = int(values.notna().sum())
    return f"{n} ({100.0 * n / total:.1f}%)" if total else "0"


#: Names of the Table 1 tests as printed in its ``test`` column.
TEST_NAMES: dict[str, str] = {"t": "Welch t-test", "mwu": "Mann-Whitney U", "chi2": "chi-square",
                              "fisher": "Fisher exact"}


def table1(df: pd.DataFrame, splits: Sequence[str] = ("test", "external"), age_test: str = "t") -> pd.DataFrame:
    """Patient characteristics of two sets (paper Table 1).

    Age as mean ± SD compared with :func:`bmstudy.statistics.compare_continuous` using the test fixed
    in advance (``age_test``; Welch's t by default, no normality pre-test); age group, sex and cancer
    type as n (%) compared with :func:`bmstudy.statistics.compare_categorical` (chi-square, or Fisher's
    exact test when an expected count is below 5). The ``test`` column names the test of each row.
    Pass the manifest to describe every patient of the sets, or the ``evaluate_cohort`` frame to
    describe the evaluated ones (failed cases are left out).

    Parameters
    ----------
    df : DataFrame
        Manifest or per-patient frame with ``split, age, sex, cancer_type`` (``age_group`` is derived
        from ``age`` when missing).
    splits : pair of str, default ('test', 'external')
        The two sets compared.
    age_test : {'t', 'mwu'}, default 't'
        Test of the ages (Welch t-test or Mann-Whitney), fixed in advance.

    Returns
    -------
    DataFrame
        ``Characteristic``, one column per set, ``p-value`` (float) and ``test``.

    Raises
    ------
    ValueError
        Not exactly two splits, missing columns, or a set without patients.
    """
    if len(splits) != 2:
        raise ValueError(f"table1 compares exactly two splits, got {list(splits)}")
    df = ok_rows(df)
    require_columns(df, ["split", "age", "sex", "cancer_type"], "table1")
    df = df.copy()
    if "age_group" not in df.columns:
        df["age_group"] = age_group(df["age"])
    a, b = (df[df["split"] == s] for s in splits)
    if a.empty or b.empty:
        raise ValueError(f"table1 needs patients in both splits {list(splits)} (got {len(a)} and {len(b)})")
    ca, cb = set_header(splits[0], len(a)), set_header(splits[1], len(b))
    rows: list[dict[str, Any]] = []

    def add(label: str, va: str, vb: str, p: float = np.nan, test: str = "") -> None:
        rows.append({"Characteristic": label, ca: va, cb: vb, "p-value": p, "test": test})

    age_a, age_b = finite_values(a["age"]), finite_values(b["age"])
    res = statistics.compare_continuous(age_a, age_b, test=age_test)
    add("Age, mean \u00b1 SD", f"{age_a.mean():.1f} \u00b1 {age_a.std(ddof=1):.1f}",
        f"{age_b.mean():.1f} \u00b1 {age_b.std(ddof=1):.1f}", float(res["p_value"]), TEST_NAMES[str(res["test"])])
    for var, header in (("age_group", "Age group"), ("sex", "Gender"), ("cancer_type", "Cancer type")):
        res = statistics.compare_categorical(a[var].dropna().astype(str).to_numpy(), b[var].dropna().astype(str).to_numpy())
        add(header, "", "", float(res["p_value"]), TEST_NAMES[str(res["test"])])
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

    Parameters
    ----------
    df : DataFrame
        Per-patient frame of ``evaluate_cohort`` (rows not ``ok`` are left out).
    splits : sequence of str, default ('test', 'external')
        Sets, in column order (absent ones are skipped).
    metrics : sequence of str
        Metrics, in row order.
    digits : int, default 3
        Decimals.

    Returns
    -------
    DataFrame
        ``Metric`` and one ``'<set> (N = n)'`` column per set.

    Raises
    ------
    ValueError
        Missing columns, or none of ``splits`` present.
    """
    df = ok_rows(df)
    require_columns(df, ["split", *metrics], "table2")
    out = pd.DataFrame({"Metric": [METRIC_LABELS.get(m, m) for m in metrics]})
    for s in splits_present(df, splits):
        sub = df[df["split"] == s]
        cells = []
        for m in metrics:
            k = finite_values(sub[m]).size
            cells.append(median_iqr(sub[m], digits) + (f" [n = {k}]" if k < len(sub) else ""))
        out[set_header(s, len(sub))] = cells
    return out


# --------------------------------------------------------------------------- Table 3
def table3(df: pd.DataFrame, splits: Sequence[str] = ("test", "external"), digits: int = 0,
           conf_level: float = 0.95) -> pd.DataFrame:
    """Model vs manual delineation time per set (paper Table 3).

    Times as median (Q1, Q3) seconds; the Mann-Whitney test of model vs manual times
    (:func:`bmstudy.statistics.mann_whitney`, as the paper did although the two times are paired per
    patient): its statistic ``W`` (R's ``wilcox.test``), the tie-corrected normal ``Z``, the ``p-value``,
    and the Hodges-Lehmann shift model - manual (s) with its ``conf_level`` CI. The paired Wilcoxon
    signed-rank p is added as ``p (paired Wilcoxon)`` for reference.

    Parameters
    ----------
    df : DataFrame
        Per-patient frame with ``split, model_seconds, manual_seconds`` (rows not ``ok`` are left out).
    splits : sequence of str, default ('test', 'external')
        Sets, in row order (absent ones are skipped).
    digits : int, default 0
        Decimals of the times.
    conf_level : float, default 0.95
        Level of the Hodges-Lehmann interval.

    Returns
    -------
    DataFrame
        ``Dataset, n, Model, s, Manual, s, W, Z, p-value, HL shift, s, HL 95% CI low, HL 95% CI high,
        p (paired Wilcoxon)``.

    Raises
    ------
    ValueError
        Missing columns, or none of ``splits`` present.
    """
    from scipy.stats import wilcoxon

    df = ok_rows(df)
    require_columns(df, ["split", "model_seconds", "manual_seconds"], "table3")
    pct = f"{100 * conf_level:g}%"
    rows = []
    for s in splits_present(df, splits):
        sub = df[df["split"] == s]
        model, manual = finite_values(sub["model_seconds"]), finite_values(sub["manual_seconds"])
        row: dict[str, Any] = {"Dataset": SET_LABELS.get(s, s), "n": len(sub),
                               "Model, s": median_iqr(model, digits), "Manual, s": median_iqr(manual, digits),
                               "W": np.nan, "Z": np.nan, "p-value": np.nan, "HL shift, s": np.nan,
                               f"HL {pct} CI low": np.nan, f"HL {pct} CI high": np.nan, "p (paired Wilcoxon)": np.nan}
        if model.size and manual.size:
            res = statistics.mann_whitney(model, manual, conf_level=conf_level)
            row.update({"W": float(res.statistic), "Z": float(res.z), "p-value": float(res.p_value),
                        "HL shift, s": float(res.estimate), f"HL {pct} CI low": float(res.ci_low),
                        f"HL {pct} CI high": float(res.ci_high)})
        pairs = sub[["model_seconds", "manual_seconds"]].apply(pd.to_numeric, errors="coerce").dropna()
        d = (pairs["model_seconds"] - pairs["manual_seconds"]).to_numpy()
        if np.count_nonzero(d):
            row["p (paired Wilcoxon)"] = float(wilcoxon(d).pvalue)
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- lesions
def lesion_detection_table(lesions_df: pd.DataFrame, splits: Sequence[str] = ("test", "external"),
                           metrics_df: pd.DataFrame | None = None, bin_column: str = "size_bin") -> pd.DataFrame:
    """Lesion-wise detection by size bin per set (:func:`bmstudy.evaluation.lesion_summary_by_size`).

    Parameters
    ----------
    lesions_df : DataFrame
        The ``lesions.csv`` rows, with ``split``.
    splits : sequence of str, default ('test', 'external')
        Sets, in order.
    metrics_df : DataFrame, optional
        The per-patient frame: patients without any lesion row (no reference and no predicted lesion)
        are invisible in ``lesions_df``; with it ``n_patients`` / ``fp_per_patient`` count every
        evaluated patient of the set.
    bin_column : str, default 'size_bin'
        ``'size_bin'`` (equivalent-sphere diameter) or ``'size_bin_axial'`` (longest axial diameter, RANO-BM).

    Returns
    -------
    DataFrame
        ``split`` plus the columns of ``lesion_summary_by_size``.

    Raises
    ------
    ValueError
        Missing columns, or no lesion in any of ``splits``.
    """
    require_columns(lesions_df, ["patient_id", "split"], "lesion_detection_table")
    frames = []
    for s in splits:
        sub = lesions_df[lesions_df["split"] == s]
        n_pat = None
        if metrics_df is not None:
            n_pat = int((ok_rows(metrics_df)["split"] == s).sum())
        if sub.empty and not n_pat:
            continue
        t = lesion_summary_by_size(sub.drop(columns=["split"]), bin_column=bin_column).copy()
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


def evaluated_caption(df: pd.DataFrame, splits: Sequence[str] = ("test", "external")) -> str:
    """``'Testing set: N = 14 evaluated of 16; Validation set: ...'`` (M = cases of the split, N = status ok).

    Parameters
    ----------
    df : DataFrame
        ``metrics.csv`` with its failed rows (``split``, ``status``).
    splits : sequence of str
        Sets, in order (absent ones are skipped).

    Returns
    -------
    str
    """
    parts = []
    for s in splits:
        sub = df[df["split"] == s]
        if len(sub):
            n_ok = int((sub["status"] == "ok").sum()) if "status" in sub.columns else len(sub)
            parts.append(f"{SET_LABELS.get(s, s)}: N = {n_ok} evaluated of {len(sub)}")
    return "; ".join(parts)


def brats_lesionwise_table(df: pd.DataFrame, splits: Sequence[str] = ("test", "external"),
                           digits: int = 3) -> pd.DataFrame:
    """BraTS-METS lesion-wise scores and surface distances per set (``metrics.csv``'s ``brats_*`` columns).

    Rows: lesion-wise Dice and HD95 (median (Q1, Q3) over patients, as the challenge ranks per case,
    and the mean), the counted lesions, TP, FN, FP and FP per patient (sums over the set), the
    whole-mask HD95 and NSD.

    Parameters
    ----------
    df : DataFrame
        Per-patient frame of ``evaluate_cohort`` (rows not ``ok`` are left out).
    splits : sequence of str
        Sets, in column order.
    digits : int, default 3

    Returns
    -------
    DataFrame
        ``Measure`` and one ``'<set> (N = n)'`` column per set.

    Raises
    ------
    ValueError
        Missing columns (an evaluation made before the lesion-wise scores: re-run it).
    """
    df = ok_rows(df)
    need = ["split", "brats_lesionwise_dice", "brats_lesionwise_hd95", "brats_n_truth", "brats_tp", "brats_fn",
            "brats_fp", "hd95", "nsd"]
    require_columns(df, need, "brats_lesionwise_table")
    labels = ["Lesion-wise Dice, median (Q1, Q3)", "Lesion-wise Dice, mean", "Lesion-wise HD95 (mm), median (Q1, Q3)",
              "Lesion-wise HD95 (mm), mean", "Lesions counted (> 2 mm\u00b3)", "Detected (TP)", "Missed (FN)",
              "False positives (FP)", "FP per patient", "HD95 (mm), whole mask, median (Q1, Q3)",
              "NSD, whole mask, median (Q1, Q3)"]
    out = pd.DataFrame({"Measure": labels})
    for s in splits_present(df, splits):
        sub = df[df["split"] == s]
        tot = {k: int(pd.to_numeric(sub[f"brats_{k}"]).sum()) for k in ("n_truth", "tp", "fn", "fp")}
        out[set_header(s, len(sub))] = [
            median_iqr(sub["brats_lesionwise_dice"], digits), f"{finite_values(sub['brats_lesionwise_dice']).mean():.{digits}f}",
            median_iqr(sub["brats_lesionwise_hd95"], 1), f"{finite_values(sub['brats_lesionwise_hd95']).mean():.1f}",
            str(tot["n_truth"]), str(tot["tp"]), str(tot["fn"]), str(tot["fp"]), f"{tot['fp'] / len(sub):.2f}",
            median_iqr(sub["hd95"], 1), median_iqr(sub["nsd"], digits)]
    return out


def froc_table(curves: dict[str, pd.DataFrame], fp_points: Sequence[float] = (0.125, 0.25, 0.5, 1, 2, 4, 8),
               digits: int = 3) -> pd.DataFrame:
    """FROC score and sensitivity at each FP-per-patient rate, per set and size bin.

    Parameters
    ----------
    curves : dict of str to DataFrame
        ``{'<split>|<diameter label>': froc_curve(..., size_bin=...)}`` (curves with a ``size_bin`` column).
    fp_points : sequence of float
        FP-per-patient rates of the FROC score (LUNA16).
    digits : int, default 3

    Returns
    -------
    DataFrame
        ``Set, Diameter, Size bin, Lesions, FROC score`` and ``Sens @ <r> FP`` per rate.
    """
    from ..evaluation import froc_score

    rows = []
    for key, curve in curves.items():
        split, _, diam = key.partition("|")
        for name, c in curve.groupby("size_bin", sort=False):
            row: dict[str, Any] = {"Set": SET_LABELS.get(split, split), "Diameter": diam, "Size bin": name,
                                   "Lesions": int(c["n_truth"].iloc[0]),
                                   "FROC score": round(froc_score(c.drop(columns="size_bin"), fp_points), digits)}
            for r in fp_points:
                row[f"Sens @ {r:g} FP"] = round(froc_score(c.drop(columns="size_bin"), [r]), digits)
            rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- beside the paper
def compare_with_paper(ours: pd.DataFrame, metrics: Sequence[str] = METRICS, digits: int = 3) -> pd.DataFrame:
    """Our Table 2 numbers beside the paper's: one row per (split, metric).

    Parameters
    ----------
    ours : DataFrame
        The per-patient frame of ``evaluate_cohort``.
    metrics : sequence of str
        Metrics compared.
    digits : int, default 3
        Decimals of the text columns.

    Returns
    -------
    DataFrame
        ``split, metric, paper, ours`` (median (Q1, Q3) text), ``n_paper, n_ours, paper_median,
        ours_median, diff_median``.
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




def table2_vs_paper(per_patient: pd.DataFrame, splits: Sequence[str] = ("test", "external"),
                    metrics: Sequence[str] = METRICS, digits: int = 3) -> pd.DataFrame:
    """Table 2 of this run beside the paper's: one row per metric, per set a paper and a this-run column.

    Parameters
    ----------
    per_patient : DataFrame
        The per-patient frame of ``evaluate_cohort`` (rows not ``ok`` are left out).
    splits : sequence of str, default ('test', 'external')
        Sets shown, in order; each must be one of the paper's (:data:`~bmstudy.reporting.paper.PAPER_N`).
    metrics : sequence of str
        Metrics (rows), in order.
    digits : int, default 3
        Decimals of the median (Q1, Q3) text.

    Returns
    -------
    DataFrame
        ``Metric``, then ``'<set>: paper (N = ...)'`` and ``'<set>: this run (N = ...)'`` per set.

    Raises
    ------
    ValueError
        For a set the paper does not have.
    """
    unknown = [s for s in splits if s not in PAPER_N]
    if unknown:
        raise ValueError(f"table2_vs_paper: the paper has no set {unknown}; choose from {list(PAPER_N)}")
    cmp = compare_with_paper(per_patient, metrics, digits)
    side = cmp.assign(metric=cmp["metric"].map(lambda m: METRIC_LABELS.get(m, m)))
    wide = side.pivot(index="metric", columns="split", values=["paper", "ours"])
    wide = wide.reindex([METRIC_LABELS.get(m, m) for m in cmp["metric"].unique()])
    n_ours = cmp.groupby("split")["n_ours"].max().to_dict()
    cols = {}
    for s in splits:
        cols[f"{SET_LABELS[s]}: paper (N = {PAPER_N[s]})"] = wide[("paper", s)]
        cols[f"{SET_LABELS[s]}: this run (N = {n_ours.get(s, 0)})"] = wide[("ours", s)]
    return pd.DataFrame(cols).rename_axis("Metric").reset_index()
