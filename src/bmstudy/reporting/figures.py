"""The paper's figures (and two extra ones) with matplotlib / seaborn.

Figures are built as :class:`matplotlib.figure.Figure` objects (no pyplot state, rendered by the Agg
canvas) so they work headless, in papermill and in Jupyter, where a returned Figure displays inline.
Every function returns the Figure; with ``out=`` it is also saved atomically as PNG and SVG
(:func:`save_figure`).

* :func:`figure3_overlays` - annotation vs prediction overlays on the slice through the largest lesion
* :func:`figure4_subgroups` - medians (IQR error bars) of the eight metrics by subgroup, both sets
* :func:`timing_figure` - model vs manual delineation time
* :func:`lesion_size_figure` - lesion-wise detection sensitivity by lesion size
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..evaluation.evaluate import METRICS
from ..reporting.tables import BY_LABELS, GROUP_LEVELS, METRIC_LABELS, SET_LABELS
from ..utils import PathLike, atomic_path

__all__ = [
    "save_figure", "largest_lesion_slice", "load_overlay_cases", "figure3_overlays", "figure4_subgroups",
    "timing_figure", "lesion_size_figure", "SIZE_BINS",
]

SIZE_BINS: tuple[str, ...] = ("<3 mm", "3-10 mm", ">10 mm")


def save_figure(fig: Figure, out: PathLike, formats: Sequence[str] = ("png", "svg"), dpi: int = 150) -> list[Path]:
    """Save ``fig`` as ``out`` with each suffix in ``formats`` (``out``'s own suffix is dropped), atomically."""
    out = Path(out)
    stem = out.with_suffix("") if out.suffix.lower().lstrip(".") in {"png", "svg", "pdf"} else out
    paths = []
    for fmt in formats:
        path = stem.with_name(f"{stem.name}.{fmt}")
        with atomic_path(path, suffix=f".{fmt}") as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight", facecolor="white")
        paths.append(path)
    return paths


def _finish(fig: Figure, out: PathLike | None, **save_kwargs: Any) -> Figure:
    if out is not None:
        save_figure(fig, out, **save_kwargs)
    return fig


# --------------------------------------------------------------------------- Figure 3
def largest_lesion_slice(truth: np.ndarray, pred: np.ndarray | None = None, axis: int = 2) -> int:
    """Index along ``axis`` of the slice with the largest cross-section of the largest lesion.

    The largest 26-connected component of ``truth`` is used (of ``pred`` if ``truth`` is empty; the
    middle slice if both are empty).
    """
    from scipy import ndimage

    truth = np.asarray(truth)
    if truth.ndim != 3:
        raise ValueError(f"expected a 3-D mask, got shape {truth.shape}")
    if not -3 <= axis < 3:
        raise ValueError(f"axis must be 0, 1 or 2, got {axis}")
    for vol in (truth, pred):
        if vol is None:
            continue
        mask = np.asarray(vol) > 0
        if not mask.any():
            continue
        labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
        sizes = np.bincount(labels.ravel())[1:]
        comp = labels == (int(np.argmax(sizes)) + 1)
        other = tuple(a for a in range(3) if a != axis % 3)
        return int(np.argmax(comp.sum(axis=other)))
    return truth.shape[axis] // 2


def load_overlay_cases(
    manifest_df: pd.DataFrame, predictions_dir: PathLike, patient_ids: Sequence[str], threshold: float = 0.5,
) -> list[dict[str, Any]]:
    """Read image, reference mask and prediction (``<pid>.nii.gz``, else the thresholded probability
    map) of the given patients into dicts for :func:`figure3_overlays`."""
    import nibabel as nib

    from ..evaluation.evaluate import prediction_paths

    by_id = manifest_df.set_index(manifest_df["patient_id"].astype(str))
    cases = []
    for pid in map(str, patient_ids):
        if pid not in by_id.index:
            raise KeyError(f"patient {pid!r} not in the manifest")
        row = by_id.loc[pid]
        prob_path, mask_path = prediction_paths(predictions_dir, pid)
        if mask_path.is_file():
            pred = np.asanyarray(nib.load(str(mask_path)).dataobj) > 0
        elif prob_path.is_file():
            pred = np.asanyarray(nib.load(str(prob_path)).dataobj) >= threshold
        else:
            raise FileNotFoundError(f"case {pid!r}: no prediction found: neither {mask_path} nor {prob_path} exists")
        image = np.asanyarray(nib.load(str(row["image"])).dataobj).astype(np.float32)
        truth = np.asanyarray(nib.load(str(row["mask"])).dataobj) > 0
        if not image.shape == truth.shape == pred.shape:
            raise ValueError(f"case {pid!r}: image {image.shape}, mask {truth.shape} and prediction "
                             f"{pred.shape} shapes differ ({row['image']}, {row['mask']}, {predictions_dir})")
        cases.append({"patient_id": pid, "image": image, "truth": truth, "pred": pred})
    return cases


def _window(img: np.ndarray) -> tuple[float, float]:
    vals = img[np.isfinite(img)]
    fg = vals[vals != vals.min()] if vals.size and (vals != vals.min()).any() else vals
    if fg.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(fg, [1, 99.5])
    return float(lo), float(hi if hi > lo else lo + 1.0)


def figure3_overlays(
    cases: Sequence[Mapping[str, Any]],
    out: PathLike | None = None,
    *,
    axis: int = 2,
    alpha: float = 0.5,
    color: str = "red",
    titles: tuple[str, str] = ("Annotation Mask", "Prediction Mask"),
    panel_size: float = 2.8,
    **save_kwargs: Any,
) -> Figure:
    """Paper Figure 3: per case (row) the image slice through the largest reference lesion with the
    annotation mask (left) and the prediction mask (right) overlaid.

    ``cases``: mappings with ``image``, ``truth``, ``pred`` (3-D arrays of one shape, (x, y, z) RAS)
    and optional ``patient_id`` / ``label`` (row title). Rows are lettered A, B, C, ...
    """
    from matplotlib.colors import ListedColormap

    if not cases:
        raise ValueError("figure3_overlays needs at least one case")
    n = len(cases)
    fig = Figure(figsize=(2 * panel_size, n * panel_size), layout="constrained")
    axes = fig.subplots(n, 2, squeeze=False)
    cmap = ListedColormap([color])
    for i, case in enumerate(cases):
        image, truth, pred = (np.asarray(case[k]) for k in ("image", "truth", "pred"))
        name = case.get("label", case.get("patient_id", f"case {i + 1}"))
        if image.ndim != 3 or image.shape != truth.shape or image.shape != pred.shape:
            raise ValueError(f"{name}: image {image.shape}, truth {truth.shape} and pred {pred.shape} "
                             "must be 3-D arrays of one shape")
        k = int(case.get("slice", largest_lesion_slice(truth, pred, axis)))
        sl = [np.take(v, k, axis=axis).T for v in (image, truth, pred)]
        lo, hi = _window(sl[0])
        for j, (mask, title) in enumerate(zip(sl[1:], titles)):
            ax = axes[i, j]
            ax.imshow(sl[0], cmap="gray", vmin=lo, vmax=hi, origin="lower", interpolation="nearest")
            ax.imshow(np.ma.masked_where(mask == 0, mask), cmap=cmap, alpha=alpha, origin="lower",
                      interpolation="nearest", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(title)
            if j == 0:
                ax.set_ylabel(f"{chr(65 + i) if i < 26 else i + 1}  {name}\nslice {k}", fontsize=8)
    return _finish(fig, out, **save_kwargs)


# --------------------------------------------------------------------------- Figure 4
def _ok(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["status"].astype(str) == "ok"] if "status" in df.columns else df


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
    are the median of each metric per set x subgroup, error bars the IQR (Q1-Q3)."""
    import seaborn as sns

    df = _ok(df)
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
    return _finish(fig, out, **save_kwargs)


# --------------------------------------------------------------------------- extras
def timing_figure(df: pd.DataFrame, out: PathLike | None = None, *,
                  splits: Sequence[str] = ("test", "external"), **save_kwargs: Any) -> Figure:
    """Boxplots of model vs manual delineation time (seconds) per set (paper Table 3 as a figure)."""
    import seaborn as sns

    df = _ok(df)
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
    return _finish(fig, out, **save_kwargs)


def lesion_size_figure(lesions_df: pd.DataFrame, out: PathLike | None = None, *,
                       splits: Sequence[str] = ("test", "external"), **save_kwargs: Any) -> Figure:
    """Lesion-wise detection sensitivity (detected / reference lesions) by lesion diameter bin per set,
    from the ``lesions.csv`` rows (``origin == 'truth'``); bars are annotated with detected/total."""
    import seaborn as sns

    missing = [c for c in ("split", "origin", "size_bin", "matched") if c not in lesions_df.columns]
    if missing:
        raise ValueError(f"lesion_size_figure: missing column(s) {missing}")
    truth = lesions_df[(lesions_df["origin"] == "truth") & lesions_df["split"].isin(list(splits))]
    if truth.empty:
        raise ValueError("lesion_size_figure: no reference lesions in the requested splits")
    matched = truth["matched"].astype(str).str.lower().isin(["true", "1"])
    counts = (truth.assign(det=matched.to_numpy())
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
    ax.set_xlabel("lesion diameter (equivalent sphere)")
    ax.set_ylabel("lesion-wise sensitivity")
    ax.legend(fontsize=8)
    ax.set_title("Detection by lesion size")
    return _finish(fig, out, **save_kwargs)
