"""The paper's figures (and two extra ones) with matplotlib / seaborn.

Figures are built as :class:`matplotlib.figure.Figure` objects (no pyplot state, rendered by the Agg
canvas) so they work headless, in papermill and in Jupyter, where a returned Figure displays inline.
Every function returns the Figure; with ``out=`` it is also saved atomically as PNG and SVG
(:func:`save_figure`).

* :func:`select_overlay_cases` / :func:`load_overlay_cases` / :func:`figure3_overlays` - annotation vs
  prediction overlays on the slice through the largest lesion, for cases spanning the range of Dice
* :func:`figure4_subgroups` - medians (IQR error bars) of the eight metrics by subgroup, both sets
* :func:`timing_figure` - model vs manual delineation time
* :func:`lesion_size_figure` - lesion-wise detection sensitivity by lesion size
* :func:`training_curves` - loss and metrics per epoch of ``training_log.csv``
* :func:`inference_phases_figure` - where the inference time per case goes

Figure 3 lives in :mod:`.overlays` (re-exported here).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..evaluation.voxel import METRIC_KEYS as METRICS
from ..utils import PathLike
from .common import finish_figure, ok_rows, save_figure
from .overlays import figure3_overlays, largest_lesion_slice, load_overlay_cases, select_overlay_cases
from .render import BY_LABELS, GROUP_LEVELS, METRIC_LABELS, SET_LABELS
from .stage_tables import INFERENCE_PHASES

__all__ = [
    "save_figure", "largest_lesion_slice", "select_overlay_cases", "load_overlay_cases", "figure3_overlays",
    "figure4_subgroups", "timing_figure", "lesion_size_figure", "froc_figure", "training_curves", "inference_phases_figure",
    "SIZE_BINS",
]

SIZE_BINS: tuple[str, ...] = ("<3 mm", "3-10 mm", ">10 mm")


# --------------------------------------------------------------------------- Figure 4
def figure4_subgroups(
    df: pd.DataFrame,
    out: PathLike | None = None,
    *,
    metrics: Sequence[str] = METRICS,
    bys: Sequence[str] = ("cancer_type", "sex", "age_group"),
    splits: Sequence[str] = ("test", "external"),
    **save_kwargs: Any,
) -> Figure:
    """Paper Figure 4: one panel per subgroup variable ((A) cancer type, (B) gender, (C) age); bars
    are the median of each metric per set x subgroup, error bars the IQR (Q1-Q3).

    Parameters
    ----------
    df : DataFrame
        Per-patient frame (rows not ``ok`` are left out).
    out : path, optional
        Also save as PNG and SVG (:func:`save_figure`).
    metrics : sequence of str
        Metrics (bar groups).
    bys : sequence of str, default ('cancer_type', 'sex', 'age_group')
        Subgroup variables (panels).
    splits : sequence of str, default ('test', 'external')
        Sets (absent ones are skipped).

    Returns
    -------
    Figure

    Raises
    ------
    ValueError
        Missing columns, an unknown variable, or none of ``splits`` present.
    """
    import seaborn as sns

    df = ok_rows(df)
    missing = [c for c in ("split", *bys, *metrics) if c not in df.columns]
    if missing:
        raise ValueError(f"figure4_subgroups: missing column(s) {missing}")
    splits = [s for s in splits if (df["split"] == s).any()]
    if not splits:
        raise ValueError("figure4_subgroups: no rows in the requested splits")
    # sized to stay legible at the book's page width (~750 px): short legend labels, 9-10 pt text
    fig = Figure(figsize=(max(6.0, 0.95 * len(metrics)), 3.0 * len(bys)), layout="constrained")
    short = {"test": "Test", "external": "Validation"}
    axes = fig.subplots(len(bys), 1, squeeze=False)[:, 0]
    x = np.arange(len(metrics))
    for p, (by, ax) in enumerate(zip(bys, axes)):
        if by not in GROUP_LEVELS:
            raise ValueError(f"by must be one of {list(GROUP_LEVELS)}, got {by!r}")
        combos = [(s, v, lab) for s in splits for v, lab in GROUP_LEVELS[by]]
        colors = sns.color_palette("Paired", len(combos))
        width = 0.8 / len(combos)
        for h, (s, v, lab) in enumerate(combos):
            sub = df[(df["split"] == s) & (df[by].astype(str) == v)]
            med, q1, q3 = (np.full(len(metrics), np.nan) for _ in range(3))
            for m_i, m in enumerate(metrics):
                vals = pd.to_numeric(sub[m], errors="coerce").dropna().to_numpy(dtype=float)
                if vals.size:
                    q1[m_i], med[m_i], q3[m_i] = np.percentile(vals, [25, 50, 75])
            yerr = np.vstack([med - q1, q3 - med])
            ax.bar(x - 0.4 + width * (h + 0.5), med, width, yerr=yerr,  # NaN (empty subgroup): no bar
                   capsize=2, color=colors[h], label=f"{short.get(s, SET_LABELS.get(s, s))}: {lab} (n={len(sub)})",
                   error_kw={"elinewidth": 0.8})
        ax.set_xticks(x, [METRIC_LABELS.get(m, m).replace(" Coefficient", "") for m in metrics], fontsize=10)
        ax.tick_params(axis="y", labelsize=9)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("median (IQR)", fontsize=10)
        ax.set_title(f"({chr(65 + p)}) {BY_LABELS.get(by, by)}", loc="left", fontsize=11)
        ax.legend(fontsize=8.5, loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=2, frameon=False,
                  borderaxespad=0.2, columnspacing=1.0, handlelength=1.2)  # above the panel: bars keep the width
        ax.grid(axis="y", alpha=0.3)
    return finish_figure(fig, out, **save_kwargs)


# --------------------------------------------------------------------------- extras
def timing_figure(df: pd.DataFrame, out: PathLike | None = None, *,
                  splits: Sequence[str] = ("test", "external"), **save_kwargs: Any) -> Figure:
    """Boxplots of model vs manual delineation time (seconds) per set (paper Table 3 as a figure).

    Parameters
    ----------
    df : DataFrame
        Per-patient frame with ``split, model_seconds, manual_seconds`` (rows not ``ok`` are left out).
    out : path, optional
        Also save as PNG and SVG (:func:`save_figure`).
    splits : sequence of str, default ('test', 'external')
        Sets shown.

    Returns
    -------
    Figure

    Raises
    ------
    ValueError
        Missing columns or no timings.
    """
    import seaborn as sns

    df = ok_rows(df)
    missing = [c for c in ("split", "model_seconds", "manual_seconds") if c not in df.columns]
    if missing:
        raise ValueError(f"timing_figure: missing column(s) {missing}")
    sub = df[df["split"].isin(list(splits))]
    long = pd.concat([
        pd.DataFrame({"set": sub["split"].map(lambda s: SET_LABELS.get(s, s)), "method": method,
                      "seconds": pd.to_numeric(sub[col], errors="coerce")})
        for method, col in (("Model", "model_seconds"), ("Manual", "manual_seconds"))
    ], ignore_index=True).dropna()
    if long.empty:
        raise ValueError("timing_figure: no timings to plot")
    fig = Figure(figsize=(5.5, 4.0), layout="constrained")
    ax = fig.subplots()
    sets = list(dict.fromkeys(long["set"]))
    colors = sns.color_palette("deep", 2)
    for h, method in enumerate(("Model", "Manual")):
        data = [long[(long["set"] == st) & (long["method"] == method)]["seconds"].to_numpy() for st in sets]
        pos = np.arange(len(sets)) + (h - 0.5) * 0.4
        keep = [i for i, d in enumerate(data) if d.size]
        bp = ax.boxplot([data[i] for i in keep], positions=pos[keep], widths=0.35, patch_artist=True,
                        medianprops={"color": "black"}, flierprops={"markersize": 3})
        for box in bp["boxes"]:
            box.set_facecolor(colors[h])
        ax.plot([], [], "s", color=colors[h], label=method)  # legend handle
    ax.set_xticks(np.arange(len(sets)), sets)
    ax.legend()
    ax.set_xlabel("")
    ax.set_ylabel("time per case (s)")
    ax.set_title("Model-based vs manual delineation time")
    return finish_figure(fig, out, **save_kwargs)


def lesion_size_figure(lesions_df: pd.DataFrame, out: PathLike | None = None, *,
                       splits: Sequence[str] = ("test", "external"), bin_column: str = "size_bin",
                       **save_kwargs: Any) -> Figure:
    """Lesion-wise detection sensitivity (detected / reference lesions) by lesion diameter bin per set;
    bars are annotated with detected/total.

    Parameters
    ----------
    lesions_df : DataFrame
        ``lesions.csv`` rows with ``split, origin, size_bin, matched`` (``origin == 'truth'`` rows count).
    out : path, optional
        Also save as PNG and SVG (:func:`save_figure`).
    splits : sequence of str, default ('test', 'external')
        Sets shown.
    bin_column : str, default 'size_bin'
        ``'size_bin'`` (equivalent-sphere diameter) or ``'size_bin_axial'`` (longest axial diameter).

    Returns
    -------
    Figure

    Raises
    ------
    ValueError
        Missing columns or no reference lesion.
    """
    import seaborn as sns

    missing = [c for c in ("split", "origin", bin_column, "matched") if c not in lesions_df.columns]
    if missing:
        raise ValueError(f"lesion_size_figure: missing column(s) {missing}")
    truth = lesions_df[(lesions_df["origin"] == "truth") & lesions_df["split"].isin(list(splits))]
    if truth.empty:
        raise ValueError("lesion_size_figure: no reference lesions in the requested splits")
    matched = truth["matched"].astype(str).str.lower().isin(["true", "1"])
    counts = (truth.assign(det=matched.to_numpy(), size_bin=truth[bin_column])
              .groupby(["split", "size_bin"], observed=True)["det"].agg(["sum", "count"]).reset_index())
    bins = [b for b in SIZE_BINS if b in set(counts["size_bin"])] + sorted(set(counts["size_bin"]) - set(SIZE_BINS))
    present = [s for s in splits if s in set(counts["split"])]
    fig = Figure(figsize=(5.5, 4.0), layout="constrained")
    ax = fig.subplots()
    colors = sns.color_palette("deep", len(present))
    width = 0.8 / len(present)
    x = np.arange(len(bins))
    for h, s in enumerate(present):
        c = counts[counts["split"] == s].set_index("size_bin").reindex(bins)
        sens = (c["sum"] / c["count"]).to_numpy(dtype=float)
        xs = x - 0.4 + width * (h + 0.5)
        ax.bar(xs, np.nan_to_num(sens), width, color=colors[h], label=SET_LABELS.get(s, s))
        for xi, (d, t) in zip(xs, c[["sum", "count"]].to_numpy()):
            if np.isfinite(t):
                ax.text(xi, min(1.0, (d / t) if t else 0) + 0.02, f"{int(d)}/{int(t)}", ha="center", fontsize=7)
    ax.set_xticks(x, bins)
    ax.set_ylim(0, 1.12)
    ax.set_xlabel("lesion diameter (" + ("longest axial, RANO-BM" if bin_column == "size_bin_axial"
                                         else "equivalent sphere") + ")")
    ax.set_ylabel("lesion-wise sensitivity")
    ax.legend(fontsize=8)
    ax.set_title("Detection by lesion size")
    return finish_figure(fig, out, **save_kwargs)


def froc_figure(curves: dict[str, pd.DataFrame], out: PathLike | None = None, *, max_fp: float = 8.0,
                **save_kwargs: Any) -> Figure:
    """FROC curves: lesion sensitivity against mean false positives per patient (log axis, 0.125-8 shaded).

    Parameters
    ----------
    curves : dict of str to DataFrame
        ``{label: froc_curve(...)}``, one pooled curve (no ``size_bin`` column, or its ``'all'`` rows) each.
    out : path, optional
        Also save as PNG and SVG.
    max_fp : float, default 8
        Right end of the x axis.

    Returns
    -------
    Figure

    Raises
    ------
    ValueError
        When ``curves`` is empty.
    """
    import seaborn as sns

    if not curves:
        raise ValueError("froc_figure: no curve")
    fig = Figure(figsize=(5.5, 4.0), layout="constrained")
    ax = fig.subplots()
    colors = sns.color_palette("deep", len(curves))
    for (label, c), col in zip(curves.items(), colors):
        if "size_bin" in c.columns:
            c = c[c["size_bin"] == "all"]
        fp = np.concatenate([[0.0], c["fp_per_patient"].to_numpy(float)])
        se = np.concatenate([[0.0], c["sensitivity"].to_numpy(float)])
        ax.step(np.maximum(fp, 1e-3), se, where="post", color=col, label=label)
    ax.axvspan(0.125, 8.0, color="0.9", zorder=0, label="FROC score range")
    ax.set_xscale("log")
    ax.set_xlim(0.05, max_fp * 1.2)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("mean false positives per patient")
    ax.set_ylabel("lesion-wise sensitivity")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("FROC (BraTS-METS matching)")
    return finish_figure(fig, out, **save_kwargs)


# --------------------------------------------------------------------------- stage figures
_LOG_NON_METRICS = ("epoch", "lr", "learning_rate", "seconds", "time")


def training_curves(log: pd.DataFrame, out: PathLike | None = None, *, dice_weight: float = 0.5,
                    bce_weight: float = 0.5, **save_kwargs: Any) -> Figure:
    """Patch loss (left), the other patch metrics (middle) and, when logged, the whole-volume validation (right).

    Parameters
    ----------
    log : DataFrame
        The Keras CSV log: ``epoch`` (0-based, plotted 1-based) and one column per logged value;
        columns with ``loss`` in the name go left, ``lr`` / ``seconds`` / ``time`` are not plotted.
        Whole-volume validation columns (``val_case_*``, ``val_lesion_*``; NaN on epochs without it)
        get a third panel, plotted at the validated epochs only; ``val_fp_per_case`` is left out.
    out : path, optional
        Also save as PNG and SVG (:func:`save_figure`).
    dice_weight, bce_weight : float, default 0.5
        Loss weights of the run, shown in the left title.

    Returns
    -------
    Figure

    Raises
    ------
    ValueError
        Without an ``epoch`` column.
    """
    if "epoch" not in log.columns:
        raise ValueError(f"training_curves: the log has no 'epoch' column (columns: {list(log.columns)})")
    metric_cols = [c for c in log.columns if c not in _LOG_NON_METRICS]
    volume_cols = [c for c in metric_cols if c.startswith(("val_case_", "val_lesion_"))]
    loss_cols = [c for c in metric_cols if "loss" in c]
    other_cols = [c for c in metric_cols if c not in loss_cols and c not in volume_cols and c != "val_fp_per_case"]
    panels = [loss_cols, other_cols] + ([volume_cols] if volume_cols else [])
    fig = Figure(figsize=(5.5 * len(panels), 3.6), layout="constrained")
    axes = fig.subplots(1, len(panels))
    for ax, cols in zip(axes, panels):
        for c in cols:
            rows = log[["epoch", c]].dropna()
            ax.plot(rows["epoch"] + 1, rows[c], marker="o", ms=3, label=c)
    axes[0].set(xlabel="epoch", ylabel="loss", title=f"loss ({dice_weight:g} Dice + {bce_weight:g} BCE)")
    axes[1].set(xlabel="epoch", title="other logged metrics (patches)")
    if volume_cols:
        axes[2].set(xlabel="epoch", ylim=(-0.02, 1.02), title="whole-volume validation (sliding window)")
    for ax in axes:
        if ax.lines:
            ax.legend(fontsize=8)
    return finish_figure(fig, out, **save_kwargs)


def inference_phases_figure(timings: pd.DataFrame, out: PathLike | None = None, **save_kwargs: Any) -> Figure:
    """Stacked bars of the median seconds per case of each inference phase, one bar per split.

    Parameters
    ----------
    timings : DataFrame
        ``timings.csv`` rows with ``split`` (rows not ``ok`` are left out).
    out : path, optional
        Also save as PNG and SVG (:func:`save_figure`).

    Returns
    -------
    Figure

    Raises
    ------
    ValueError
        Missing columns or no ``ok`` rows.
    """
    phases = [p for p in INFERENCE_PHASES if p != "total_s"]
    ok = ok_rows(timings)
    missing = [c for c in ("split", *phases) if c not in ok.columns]
    if missing:
        raise ValueError(f"inference_phases_figure: missing column(s) {missing}")
    if ok.empty:
        raise ValueError("inference_phases_figure: no predicted cases")
    fig = Figure(figsize=(7, 3.4), layout="constrained")
    ax = fig.subplots()
    ok.groupby("split")[phases].median().plot.barh(stacked=True, ax=ax)
    ax.set(xlabel="median seconds per case", ylabel="")
    return finish_figure(fig, out, **save_kwargs)
