"""Subgroup comparisons (paper Figure 4's tests): per-patient Mann-Whitney / Hodges-Lehmann and, for AUC,
the paper's voxel-level DeLong test beside the patient-level tests (cluster-bootstrap CI, permutation p); and
their report views.

* :func:`subgroup_table` / :func:`all_subgroup_tables` - the comparisons (long format)
* :func:`format_subgroup_table` / :func:`subgroup_sections` - readable tables per set x variable
* :func:`auc_subgroup_table` - the AUC rows: DeLong (voxels) vs patient-level tests
* :func:`significance_counts` - how many comparisons each test calls significant
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from .. import statistics
from ..evaluation.voxel import METRIC_KEYS as METRICS
from .common import finite_values, median_iqr, ok_rows, require_columns, splits_present
from .render import BY_LABELS, GROUP_LEVELS, METRIC_LABELS, SET_LABELS

__all__ = ["subgroup_table", "all_subgroup_tables", "format_subgroup_table", "subgroup_sections",
           "auc_subgroup_table", "significance_counts"]


def _pool(hists: Mapping[str, tuple[np.ndarray, np.ndarray]], pids: Iterable[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    pids = [str(p) for p in pids]
    missing = [p for p in pids if p not in hists]
    if missing:
        raise KeyError(f"score histograms missing for patient(s) {missing[:10]}")
    return [(np.asarray(hists[p][0]), np.asarray(hists[p][1])) for p in pids]


_AUC_COLUMNS = ("delong_auc_a", "delong_auc_b", "delong_z", "delong_p", "boot_diff", "boot_ci_low", "boot_ci_high",
                "boot_p")


def _rank_tests(x: np.ndarray, y: np.ndarray, conf_level: float) -> dict[str, float]:
    """Mann-Whitney p and the Hodges-Lehmann shift x - y with its CI (and the level achieved)."""
    res = statistics.mann_whitney(x, y, conf_level=conf_level)
    return {"mw_p": float(res.p_value), "hl_estimate": float(res.estimate), "hl_ci_low": float(res.ci_low),
            "hl_ci_high": float(res.ci_high), "hl_conf_level": float(getattr(res, "conf_level", conf_level))}


def _auc_tests(ga: pd.DataFrame, gb: pd.DataFrame, hists: Mapping[str, tuple[np.ndarray, np.ndarray]] | None, *,
               n_boot: int, seed: int, conf_level: float) -> dict[str, float]:
    """Voxel-level DeLong on the pooled histograms of two groups and the patient-cluster bootstrap (NaN when
    there are no histograms, no patients or no positive / negative voxels in a group)."""
    row = dict.fromkeys(_AUC_COLUMNS, np.nan)
    if hists is None or not len(ga) or not len(gb):
        return row
    ha, hb = _pool(hists, ga["patient_id"]), _pool(hists, gb["patient_id"])
    pos_a, neg_a = (np.sum([h[i] for h in ha], axis=0) for i in (0, 1))
    pos_b, neg_b = (np.sum([h[i] for h in hb], axis=0) for i in (0, 1))
    if pos_a.sum() and neg_a.sum() and pos_b.sum() and neg_b.sum():
        d = statistics.delong_unpaired_hist(pos_a, neg_a, pos_b, neg_b)
        row.update(delong_auc_a=float(d.auc_a), delong_auc_b=float(d.auc_b), delong_z=float(d.z),
                   delong_p=float(d.p_value))
        bt = statistics.cluster_bootstrap_auc_diff(ha, hb, n_boot=n_boot, seed=seed, conf_level=conf_level)
        row.update(boot_diff=float(bt["diff"]), boot_ci_low=float(bt["ci_low"]), boot_ci_high=float(bt["ci_high"]),
                   boot_p=float(bt["p_value"]))
    return row


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

    Group a is the first level of :data:`GROUP_LEVELS`; too few patients give NaN statistics.

    Parameters
    ----------
    df : DataFrame
        Per-patient frame (rows not ``ok`` are left out).
    by, split : str
        Subgroup variable (``'sex'``, ``'age_group'``, ``'cancer_type'``) and the set compared within.
    hists : mapping, optional
        ``{patient_id: (pos, neg)}`` score histograms (:func:`bmstudy.evaluation.load_score_hists`); with them
        the AUC row also gets the paper's voxel-level DeLong test on the pooled histograms (every voxel taken
        as independent) and the patient-level cluster bootstrap of the pooled-AUC difference.
    metrics : sequence of str
        Metrics (rows).
    n_boot, seed : int, default 2000 and 0
        Bootstrap resamples and seed.
    conf_level : float, default 0.95
        Confidence level of the Hodges-Lehmann and bootstrap intervals.
    digits : int, default 3
        Decimals of the summaries.

    Returns
    -------
    DataFrame
        One row per metric: ``n_a``, ``n_b``, ``summary_a`` / ``summary_b`` (median (Q1, Q3)),
        Mann-Whitney ``mw_p``, the Hodges-Lehmann shift a - b with its CI (``hl_estimate``,
        ``hl_ci_low``, ``hl_ci_high``; ``hl_conf_level`` is the level achieved, below the requested
        one only for tiny exact samples), and for AUC ``delong_auc_a``, ``delong_auc_b``, ``delong_z``,
        ``delong_p``, ``boot_diff``, ``boot_ci_low``, ``boot_ci_high`` (cluster-bootstrap CI) and ``boot_p`` (the
        permutation p of :func:`bmstudy.statistics.cluster_bootstrap_auc_diff`; NaN for other metrics).

    Raises
    ------
    ValueError
        Unknown ``by``, missing columns, or no patient in ``split``.
    KeyError
        A patient without score histograms.
    """
    if by not in GROUP_LEVELS:
        raise ValueError(f"by must be one of {list(GROUP_LEVELS)}, got {by!r}")
    df = ok_rows(df)
    require_columns(df, ["patient_id", "split", by, *metrics], "subgroup_table")
    sub = df[df["split"] == split]
    if sub.empty:
        raise ValueError(f"subgroup_table: no patients in split {split!r}")
    (va, la), (vb, lb) = GROUP_LEVELS[by]
    ga, gb = sub[sub[by].astype(str) == va], sub[sub[by].astype(str) == vb]
    rows = []
    for m in metrics:
        x, y = finite_values(ga[m]), finite_values(gb[m])
        row: dict[str, Any] = {
            "split": split, "by": by, "metric": m, "group_a": la, "group_b": lb, "n_a": int(x.size),
            "n_b": int(y.size), "summary_a": median_iqr(x, digits), "summary_b": median_iqr(y, digits),
            "mw_p": np.nan, "hl_estimate": np.nan, "hl_ci_low": np.nan, "hl_ci_high": np.nan,
            "hl_conf_level": np.nan,
        }
        if x.size and y.size:
            row.update(_rank_tests(x, y, conf_level))
        if m == "auc":
            row.update(_auc_tests(ga, gb, hists, n_boot=n_boot, seed=seed, conf_level=conf_level))
        rows.append(row)
    out = pd.DataFrame(rows)
    for c in _AUC_COLUMNS:
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
    """:func:`subgroup_table` for every split x subgroup variable, stacked (long format).

    Parameters
    ----------
    df : DataFrame
        Per-patient frame.
    hists : mapping, optional
        Score histograms (see :func:`subgroup_table`).
    splits : sequence of str, default ('test', 'external')
        Sets (absent ones are skipped).
    bys : sequence of str, default ('cancer_type', 'sex', 'age_group')
        Subgroup variables, in the paper's Figure 4 order.
    **kwargs
        Passed to :func:`subgroup_table` (``n_boot``, ``seed``, ...).

    Returns
    -------
    DataFrame
        The :func:`subgroup_table` rows, split-major.
    """
    present = splits_present(ok_rows(df), splits)
    return pd.concat([subgroup_table(df, by, s, hists, **kwargs) for s in present for by in bys], ignore_index=True)


def format_subgroup_table(t: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """Human-readable version of a :func:`subgroup_table` (one split x variable) for reports.

    Parameters
    ----------
    t : DataFrame
        :func:`subgroup_table` rows of one split and variable.
    digits : int, default 3
        Decimals of the shifts and intervals.

    Returns
    -------
    DataFrame
        ``Metric``, the two group summaries, the Mann-Whitney p, the Hodges-Lehmann shift (with the
        achieved level when below 95 %), the DeLong p and the cluster-bootstrap ΔAUC and p.
    """
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


def _set_name(split: str) -> str:
    """``'Testing'`` / ``'Validation'`` (the set label without ``' set'``)."""
    return SET_LABELS.get(split, split).removesuffix(" set")


def subgroup_sections(long: pd.DataFrame, digits: int = 3) -> list[tuple[str, pd.DataFrame]]:
    """One captioned, formatted table per set x subgroup variable of :func:`all_subgroup_tables`.

    Parameters
    ----------
    long : DataFrame
        Stacked :func:`subgroup_table` rows.
    digits : int, default 3
        Decimals (:func:`format_subgroup_table`).

    Returns
    -------
    list of (str, DataFrame)
        ``('Testing set by Gender', table)``, ... in the order of ``long``.
    """
    return [(f"{_set_name(split)} set by {BY_LABELS.get(by, by)}", format_subgroup_table(t, digits))
            for (split, by), t in long.groupby(["split", "by"], sort=False)]


def auc_subgroup_table(long: pd.DataFrame) -> pd.DataFrame:
    """The AUC rows of :func:`all_subgroup_tables`: the paper's voxel-level DeLong p beside the patient-level tests.

    Parameters
    ----------
    long : DataFrame
        Stacked :func:`subgroup_table` rows.

    Returns
    -------
    DataFrame
        ``Set, Subgroups, n, pooled AUC``, the DeLong p, the pooled-AUC difference with its
        patient-cluster bootstrap CI, the patient-level permutation p (subgroup labels permuted across
        patients) and the Mann-Whitney p of the per-patient AUCs (index of ``long``'s AUC rows).
    """
    auc = long[long["metric"] == "auc"]
    pooled = [f"{a:.3f} / {b:.3f}" if np.isfinite(a) else ""
              for a, b in auc[["delong_auc_a", "delong_auc_b"]].to_numpy(dtype=float)]
    return pd.DataFrame({
        "Set": auc["split"].map({"test": "Testing", "external": "Validation"}),
        "Subgroups": auc["group_a"] + " vs " + auc["group_b"],
        "n": auc["n_a"].astype(str) + " / " + auc["n_b"].astype(str),
        "pooled AUC": pooled,
        "DeLong p (voxels, as paper)": auc["delong_p"],
        "AUC difference, cluster-bootstrap 95% CI": [
            f"{d:.3f} ({lo:.3f}, {hi:.3f})" if np.isfinite(d) else "" for d, lo, hi in
            auc[["boot_diff", "boot_ci_low", "boot_ci_high"]].to_numpy(dtype=float)],
        "Permutation p (patients)": auc["boot_p"],
        "Mann-Whitney p (per-patient AUC)": auc["mw_p"],
    })


def significance_counts(long: pd.DataFrame, alpha: float = 0.05) -> dict[str, int]:
    """How many subgroup comparisons each test calls significant (no multiplicity correction).

    Parameters
    ----------
    long : DataFrame
        Stacked :func:`subgroup_table` rows.
    alpha : float, default 0.05
        Significance level.

    Returns
    -------
    dict
        ``auc_comparisons`` (AUC rows with both a DeLong and a bootstrap p), ``delong``, ``bootstrap``
        (of those, p < alpha), ``other_comparisons`` (non-AUC rows with a Mann-Whitney p) and
        ``mann_whitney`` (of those, p < alpha).
    """
    auc = long[long["metric"] == "auc"].dropna(subset=["delong_p", "boot_p"])
    other = long[long["metric"] != "auc"].dropna(subset=["mw_p"])
    return {"auc_comparisons": len(auc), "delong": int((auc["delong_p"] < alpha).sum()),
            "bootstrap": int((auc["boot_p"] < alpha).sum()), "other_comparisons": len(other),
            "mann_whitney": int((other["mw_p"] < alpha).sum())}
