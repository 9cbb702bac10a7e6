"""Skull-stripping accuracy on the synthetic cohort: the stripper's brain masks vs the true ones.

The generator writes every case's true brain mask (manifest column ``brain_truth``); cases without a
``brain_mask`` (the external site by default) are stripped by preprocessing (``skull_strip='auto'``:
deepbet). :func:`stripping_dice` compares the preprocessed brain mask (``<pre>/<pid>/brain.npy`` on the
output grid of ``meta.json``) with the truth resampled to that grid (world coordinates, linear > 0.5).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from ..utils import PathLike

__all__ = ["stripping_dice"]


def _truth_on_grid(truth_path: str, out_affine: np.ndarray, out_shape: tuple[int, ...]) -> np.ndarray:
    import nibabel as nib

    im = nib.load(truth_path)
    truth = np.asarray(im.dataobj, dtype=np.float32)
    vox = np.linalg.inv(im.affine) @ out_affine  # output voxel -> truth voxel
    return ndimage.affine_transform(truth, vox[:3, :3], vox[:3, 3], output_shape=out_shape, order=1) > 0.5


def _truth_path(truth: str, image: str, base_dir: PathLike | None) -> str:
    """``brain_truth`` as an existing path: absolute, under ``base_dir`` or beside the image's cohort."""
    p = Path(truth)
    if p.is_absolute():
        return str(p)
    cands = [Path(base_dir) / p] if base_dir is not None else []
    if image:
        cands.append(Path(image).parent.parent / p)
    cands.append(p)
    return str(next((c for c in cands if c.is_file()), cands[0]))


def stripping_dice(manifest: pd.DataFrame, preprocessed_dir: PathLike, *, base_dir: PathLike | None = None,
                   only_stripped: bool = True) -> pd.DataFrame:
    """Dice of the preprocessing brain masks against the synthetic truth, one row per case.

    Parameters
    ----------
    manifest : pandas.DataFrame
        The cohort manifest (``patient_id``, ``brain_truth``, optional ``brain_mask``, ``site``).
    preprocessed_dir : str or Path
        Preprocessing output folder (``<pid>/brain.npy`` and ``<pid>/meta.json``).
    base_dir : str or Path, optional
        Folder relative ``brain_truth`` paths are resolved against (``load_manifest`` already makes
        them absolute, so this matters only for hand-built frames). Default: next to ``image``'s
        cohort folder (``<cohort>/images/x`` -> ``<cohort>``), else the working directory.
    only_stripped : bool, default=True
        Only cases the manifest gives no brain mask (those the stripper produced).

    Returns
    -------
    pandas.DataFrame
        ``patient_id, site, backend, dice, volume_ml, truth_volume_ml``; cases not preprocessed are
        left out. Empty when the manifest has no ``brain_truth`` column.
    """
    cols = ["patient_id", "site", "backend", "dice", "volume_ml", "truth_volume_ml"]
    if "brain_truth" not in manifest.columns:
        return pd.DataFrame(columns=cols)
    rows = []
    pre = Path(preprocessed_dir)
    for r in manifest.to_dict("records"):
        given = r.get("brain_mask")
        if only_stripped and isinstance(given, str) and given.strip():
            continue
        folder = pre / str(r["patient_id"])
        if not (folder / "meta.json").is_file() or not (folder / "brain.npy").is_file():
            continue
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        brain = np.load(folder / "brain.npy") > 0
        truth_path = _truth_path(str(r["brain_truth"]), str(r.get("image", "")), base_dir)
        truth = _truth_on_grid(truth_path, np.asarray(meta["output"]["affine"]), brain.shape)
        vox = float(np.prod(meta["output"]["spacing"])) / 1000.0
        denom = brain.sum() + truth.sum()
        rows.append({"patient_id": r["patient_id"], "site": r.get("site", ""),
                     "backend": meta.get("skull_strip", {}).get("backend", ""),
                     "dice": float(2 * (brain & truth).sum() / denom) if denom else 1.0,
                     "volume_ml": round(float(brain.sum()) * vox, 1), "truth_volume_ml": round(float(truth.sum()) * vox, 1)})
    return pd.DataFrame(rows, columns=cols)
