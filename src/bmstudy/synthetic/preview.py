"""Preview montage of a cohort: a quick visual check of scans, lesion masks and brain masks."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from ..io.manifest import load_manifest
from ..utils import PathLike, atomic_path

__all__ = ["write_preview"]


def write_preview(manifest_path: PathLike, png_path: PathLike | None = None, n_cases: int = 4) -> Path:
    """PNG montage of a few cases: axial and coronal slices through each case's largest lesion.

    About two thirds of the columns are internal cases, the rest external (at least one when the
    manifest has any); the lesion-mask contour is drawn in red, the brain-mask contour in cyan.

    Parameters
    ----------
    manifest_path : str or Path
        A cohort manifest (``image``, ``mask``, optional ``brain_mask`` columns).
    png_path : str or Path, optional
        Where to write the PNG (default: ``preview.png`` next to the manifest).
    n_cases : int, default=4
        Number of cases (columns).

    Returns
    -------
    Path
        The PNG written (atomically).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import nibabel as nib

    df = load_manifest(manifest_path)
    png = Path(png_path) if png_path else Path(manifest_path).parent / "preview.png"
    n_ext = min(max(1, n_cases // 3), int((df["site"] == "external").sum()))
    pick = pd.concat([df[df["site"] == "internal"].head(n_cases - n_ext), df[df["site"] == "external"].head(n_ext)])
    fig, axs = plt.subplots(2, len(pick), figsize=(3.2 * len(pick), 6.4), squeeze=False)
    for j, row in enumerate(pick.itertuples()):
        im = nib.load(row.image)
        img = np.asarray(im.dataobj, dtype=np.float32)
        msk = np.asarray(nib.load(row.mask).dataobj) > 0
        brn = np.asarray(nib.load(row.brain_mask).dataobj) > 0 if getattr(row, "brain_mask", "") else None
        lab, n = ndimage.label(msk)
        if n:
            big = 1 + int(np.argmax(ndimage.sum(msk, lab, range(1, n + 1))))
            c = np.round(ndimage.center_of_mass(lab == big)).astype(int)
        else:
            c = np.array(img.shape) // 2
        sp = im.header.get_zooms()[:3]
        vmax = float(np.percentile(img[brn] if brn is not None and brn.any() else img, 99.7)) * 1.05
        views = [(img[:, :, c[2]], msk[:, :, c[2]], None if brn is None else brn[:, :, c[2]], sp[1] / sp[0], "axial"),
                 (img[:, c[1], :], msk[:, c[1], :], None if brn is None else brn[:, c[1], :], sp[2] / sp[0], "coronal")]
        for i, (sl, ms, bs, aspect, name) in enumerate(views):
            ax = axs[i, j]
            ax.imshow(sl.T, cmap="gray", origin="lower", vmin=0, vmax=vmax, aspect=aspect)
            if bs is not None and bs.any():
                ax.contour(bs.T, levels=[0.5], colors="c", linewidths=0.5)
            if ms.any():
                ax.contour(ms.T, levels=[0.5], colors="r", linewidths=0.8)
            ax.set_title(f"{row.patient_id} ({row.site}, {getattr(row, 'n_lesions', '?')} les.) {name}", fontsize=7)
            ax.axis("off")
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return png
