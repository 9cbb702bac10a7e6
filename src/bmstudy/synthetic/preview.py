"""Preview montage of a cohort: axial, coronal and sagittal views of a few cases and one real scan.

Every panel is z-scored inside its brain mask (the synthetic truth or the real scan's mask) and shown
at the same window (``window``, z units), so synthetic and real contrast can be compared directly.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage

from ..io.manifest import load_manifest
from ..utils import PathLike, atomic_path
from .stripping import _truth_path

__all__ = ["write_preview", "find_real_scan", "default_real_dir"]

_REAL_IMAGE = "T1c_subtrMeanDivStd.nii.gz"


def default_real_dir() -> Path:
    """Where the preview looks for real scans: ``$BMSTUDY_SHARED_DATA/real``, else ``../shared/data/real``
    beside the repository checkout (it may not exist: the preview then shows a note)."""
    shared = os.environ.get("BMSTUDY_SHARED_DATA")
    base = Path(shared) if shared else Path(__file__).resolve().parents[3].parent / "shared" / "data"
    return base / "real"


def find_real_scan(real_dir: PathLike | None) -> dict[str, Path] | None:
    """The first real case (``image``, ``mask`` (labels), ``brain``) under ``real_dir``, or None.

    Parameters
    ----------
    real_dir : str or Path or None
        Folder searched recursively for ``T1c_subtrMeanDivStd.nii.gz`` (BraTS 2015 / DeepMedic layout).

    Returns
    -------
    dict or None
    """
    if real_dir is None or not Path(real_dir).is_dir():
        return None
    for img in sorted(Path(real_dir).rglob(_REAL_IMAGE)):
        lab, brain = img.parent / "OTMultiClass.nii.gz", img.parent / "brainmask.nii.gz"
        if lab.is_file() and brain.is_file():
            return {"image": img, "mask": lab, "brain": brain, "name": img.parent.name}
    return None


def _volume(image: str, mask: str, brain: str | None, lesion_label: int | None) -> dict[str, Any]:
    import nibabel as nib

    im = nib.as_closest_canonical(nib.load(image))
    img = np.asarray(im.dataobj, dtype=np.float32)
    msk = np.asarray(nib.as_closest_canonical(nib.load(mask)).dataobj)
    msk = (msk == lesion_label) if lesion_label is not None else msk > 0
    brn = np.asarray(nib.as_closest_canonical(nib.load(brain)).dataobj) > 0 if brain else img > np.percentile(img, 60)
    vals = img[brn]
    z = (img - vals.mean()) / (vals.std() + 1e-6)
    lab, n = ndimage.label(msk)
    if n:
        big = 1 + int(np.argmax(ndimage.sum(msk, lab, range(1, n + 1))))
        c = np.round(ndimage.center_of_mass(lab == big)).astype(int)
    else:
        c = np.array(img.shape) // 2
    return {"z": z, "mask": msk, "brain": brn, "c": c, "sp": im.header.get_zooms()[:3]}


def _draw(axs: np.ndarray, j: int, v: dict[str, Any], title: str, window: tuple[float, float]) -> None:
    z, m, b, c, sp = v["z"], v["mask"], v["brain"], v["c"], v["sp"]
    views = [(np.s_[:, :, c[2]], sp[1] / sp[0], "axial"), (np.s_[:, c[1], :], sp[2] / sp[0], "coronal"),
             (np.s_[c[0], :, :], sp[2] / sp[1], "sagittal")]
    for i, (sl, aspect, name) in enumerate(views):
        ax = axs[i, j]
        ax.imshow(z[sl].T, cmap="gray", origin="lower", vmin=window[0], vmax=window[1], aspect=aspect)
        if b[sl].any():
            ax.contour(b[sl].T, levels=[0.5], colors="c", linewidths=0.4)
        if m[sl].any():
            ax.contour(m[sl].T, levels=[0.5], colors="r", linewidths=0.7)
        ax.set_title(f"{title} {name}", fontsize=7)
        ax.axis("off")


def write_preview(manifest_path: PathLike, png_path: PathLike | None = None, n_cases: int = 4, *,
                  real_dir: PathLike | None = None, window: tuple[float, float] = (-3.0, 5.0)) -> Path:
    """PNG montage: axial, coronal and sagittal slices through each case's largest lesion.

    About two thirds of the columns are internal cases, the rest external (at least one when the
    manifest has any); a last column shows one real CE-T1 scan from ``real_dir`` (label 4, enhancing
    tumour, in red) or a note when none is found. Lesion contours red, brain-mask contours cyan.

    Parameters
    ----------
    manifest_path : str or Path
        A cohort manifest (``image``, ``mask``, ``brain_truth`` or ``brain_mask`` columns).
    png_path : str or Path, optional
        Where to write the PNG (default: ``preview.png`` next to the manifest).
    n_cases : int, default=4
        Number of synthetic cases (columns).
    real_dir : str or Path, optional
        Folder with real scans (e.g. ``../shared/data/real``); None or missing: the note panel.
    window : tuple of float, default=(-3, 5)
        Display window in brain z-score units, the same for every panel.

    Returns
    -------
    Path
        The PNG written (atomically).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = load_manifest(manifest_path)
    png = Path(png_path) if png_path else Path(manifest_path).parent / "preview.png"
    n_ext = min(max(1, n_cases // 3), int((df["site"] == "external").sum()))
    pick = pd.concat([df[df["site"] == "internal"].head(n_cases - n_ext), df[df["site"] == "external"].head(n_ext)])
    fig, axs = plt.subplots(3, len(pick) + 1, figsize=(3.0 * (len(pick) + 1), 9.0), squeeze=False)
    for j, row in enumerate(pick.to_dict("records")):
        brain = row.get("brain_mask") or None
        if isinstance(row.get("brain_truth"), str) and row["brain_truth"]:
            brain = _truth_path(row["brain_truth"], row["image"], Path(manifest_path).parent)
        v = _volume(row["image"], row["mask"], brain if isinstance(brain, str) and brain else None, None)
        _draw(axs, j, v, f"{row['patient_id']} ({row['site']}, {row.get('n_lesions', '?')} les.)", window)
    real = find_real_scan(real_dir)
    if real is not None:
        v = _volume(str(real["image"]), str(real["mask"]), str(real["brain"]), 4)
        _draw(axs, len(pick), v, f"REAL {real['name']} (label 4)", window)
    else:
        for i in range(3):
            axs[i, -1].axis("off")
        axs[1, -1].text(0.5, 0.5, f"no real scan found\n({real_dir} absent)", ha="center", va="center",
                        fontsize=8, transform=axs[1, -1].transAxes)
    fig.suptitle(f"same window: brain z-score {window[0]:g}..{window[1]:g}", fontsize=9)
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return png
