"""Quality control of preprocessing: per-case intensity statistics and histograms, cohort QC figures and table.

:func:`intensity_qc` computes the ``qc`` entry of a case's ``meta.json`` (brain percentiles, raw and
Z-scored histograms); :func:`write_qc` turns the recorded histograms of the ``ok`` cases into
``qc_hist_cases.png`` (raw), ``qc_hist_cases_z.png``, ``qc_hist_sites.png`` and ``qc_stats.csv``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..utils import PathLike, atomic_path, atomic_to_csv
from .store import REPORT_COLUMNS, load_report

__all__ = ["HIST_Z_EDGES", "intensity_qc", "plot_case_histograms", "plot_site_histograms", "qc_table", "write_qc"]

#: Bin edges of the Z-scored brain histograms recorded per case.
HIST_Z_EDGES = np.linspace(-5.0, 5.0, 101)


def intensity_qc(raw: np.ndarray, z: np.ndarray) -> dict[str, Any]:
    """QC statistics of one case's brain intensities, before and after normalisation.

    Parameters
    ----------
    raw : ndarray
        Brain voxel intensities on the output grid, before normalisation (1-D).
    z : ndarray
        The same voxels after normalisation (1-D).

    Returns
    -------
    dict
        ``brain_p01``, ``brain_p99``, ``brain_min``, ``brain_max``, ``hist_z_edges`` (``[lo, hi, n]``),
        ``hist_z`` (counts over :data:`HIST_Z_EDGES`), ``hist_raw_edges`` (100 bins over the raw
        range) and ``hist_raw``; JSON-able.
    """
    p01, p99 = (float(v) for v in np.percentile(raw, [1, 99]))
    hist_z = np.histogram(z, bins=HIST_Z_EDGES)[0]
    lo, hi = float(raw.min()), float(raw.max())
    raw_edges = np.linspace(lo, hi if hi > lo else lo + 1.0, 101)
    hist_raw = np.histogram(raw, bins=raw_edges)[0]
    return {"brain_p01": p01, "brain_p99": p99, "brain_min": float(raw.min()), "brain_max": float(raw.max()),
            "hist_z_edges": [float(HIST_Z_EDGES[0]), float(HIST_Z_EDGES[-1]), int(HIST_Z_EDGES.size)],
            "hist_z": hist_z.tolist(), "hist_raw_edges": raw_edges.tolist(), "hist_raw": hist_raw.tolist()}


def _ok_metas(out_dir: Path, report: pd.DataFrame) -> list[tuple[str, str, dict[str, Any]]]:
    out = []
    for r in report[report["status"] == "ok"].itertuples():
        meta = json.loads((out_dir / str(r.patient_id) / "meta.json").read_text(encoding="utf-8"))
        out.append((str(r.patient_id), str(r.site) if isinstance(r.site, str) else "", meta))
    return out


def _density(qc: dict[str, Any], space: str) -> tuple[np.ndarray, np.ndarray]:
    """(bin centres, density) of a recorded histogram (``space`` 'z' or 'raw')."""
    if space == "z":
        lo, hi, n = qc["hist_z_edges"]
        edges = np.linspace(lo, hi, n)
        counts = np.asarray(qc["hist_z"], dtype=float)
    else:
        edges, counts = np.asarray(qc["hist_raw_edges"]), np.asarray(qc["hist_raw"], dtype=float)
    return 0.5 * (edges[1:] + edges[:-1]), counts / max(counts.sum(), 1) / np.diff(edges)


def plot_case_histograms(out_dir: PathLike, report: pd.DataFrame | None = None, space: str = "raw") -> Any:
    """Figure of the per-case brain intensity histograms, coloured by site.

    Parameters
    ----------
    out_dir : str or Path
        The preprocessing output folder.
    report : DataFrame, optional
        The cohort report (default: read from ``out_dir``); only ``ok`` cases are drawn.
    space : {'raw', 'z'}, default='raw'
        Before (input units) or after normalisation (Z-score).

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    report = load_report(out_dir) if report is None else report
    metas = _ok_metas(out_dir, report)
    sites = sorted({s for _, s, _ in metas})
    colors = {s: plt.cm.tab10(i % 10) for i, s in enumerate(sites)}
    fig, ax = plt.subplots(figsize=(7, 4))
    for _, site, meta in metas:
        centres, dens = _density(meta["qc"], "z" if space == "z" else "raw")
        ax.plot(centres, dens, color=colors[site], alpha=0.6, lw=1)
    for s in sites:
        ax.plot([], [], color=colors[s], label=s or "(no site)")
    ax.set_xlabel("intensity inside brain" + (" (Z-score)" if space == "z" else " (input units)"))
    ax.set_ylabel("density")
    ax.set_title(f"Per-case brain intensity histograms ({len(metas)} cases)")
    if sites:
        ax.legend(title="site")
    fig.tight_layout()
    return fig


def plot_site_histograms(out_dir: PathLike, report: pd.DataFrame | None = None) -> Any:
    """Figure with one panel per site overlaying its cases' Z-scored brain histograms, plus the site mean.

    Parameters
    ----------
    out_dir : str or Path
        The preprocessing output folder.
    report : DataFrame, optional
        The cohort report (default: read from ``out_dir``); only ``ok`` cases are drawn.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    report = load_report(out_dir) if report is None else report
    metas = _ok_metas(out_dir, report)
    sites = sorted({s for _, s, _ in metas}) or [""]
    fig, axes = plt.subplots(1, len(sites), figsize=(4.5 * len(sites), 3.6), sharey=True, squeeze=False)
    for ax, site in zip(axes[0], sites):
        dens_all = []
        for _, s, meta in metas:
            if s != site:
                continue
            centres, dens = _density(meta["qc"], "z")
            ax.plot(centres, dens, color="0.6", lw=0.8, alpha=0.7)
            dens_all.append(dens)
        if dens_all:
            ax.plot(centres, np.mean(dens_all, axis=0), color="C3", lw=2, label="site mean")
            ax.legend()
        ax.set_title(f"{site or '(no site)'} (n={len(dens_all)})")
        ax.set_xlabel("Z-scored intensity inside brain")
    axes[0][0].set_ylabel("density")
    fig.tight_layout()
    return fig


def qc_table(out_dir: PathLike, report: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per-case statistics of the ``ok`` cases (shapes, spacings, volumes, brain intensity statistics).

    Parameters
    ----------
    out_dir : str or Path
        The preprocessing output folder.
    report : DataFrame, optional
        The cohort report (default: read from ``out_dir``).

    Returns
    -------
    DataFrame
        The report's columns without ``status``, ``reason``, ``cached`` and ``params_hash``.
    """
    report = load_report(out_dir) if report is None else report
    cols = [c for c in REPORT_COLUMNS if c not in ("status", "reason", "cached", "params_hash")]
    return report.loc[report["status"] == "ok", cols].reset_index(drop=True)


def write_qc(out_dir: PathLike, report: pd.DataFrame | None = None) -> dict[str, Path]:
    """Write the QC figures and table of a preprocessed cohort.

    Parameters
    ----------
    out_dir : str or Path
        The preprocessing output folder (the files are written there, atomically).
    report : DataFrame, optional
        The cohort report (default: read from ``out_dir``).

    Returns
    -------
    dict of str to Path
        ``qc_hist_cases`` (raw intensities), ``qc_hist_cases_z``, ``qc_hist_sites`` (PNGs) and ``qc_stats`` (CSV).
    """
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    report = load_report(out_dir) if report is None else report
    paths: dict[str, Path] = {}
    for name, fig in (("qc_hist_cases", plot_case_histograms(out_dir, report, "raw")),
                      ("qc_hist_cases_z", plot_case_histograms(out_dir, report, "z")),
                      ("qc_hist_sites", plot_site_histograms(out_dir, report))):
        path = out_dir / f"{name}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
        plt.close(fig)
        paths[name] = path
    paths["qc_stats"] = atomic_to_csv(qc_table(out_dir, report), out_dir / "qc_stats.csv")
    return paths
