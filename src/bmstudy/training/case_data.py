"""Training cases read for patch sampling: preprocessed arrays, lesion components, head box, hard negatives.

Reads ``<dir>/<patient_id>/image.npy, mask.npy, brain.npy, meta.json`` written by
:mod:`bmstudy.preprocessing` (memory-mapped) into :class:`Case` objects for
:class:`bmstudy.training.sampling.PatchSampler`: the lesions' 26-connected components (lesion-centred
patches), the head's bounding box (head patches) and, when asked for, the bright voxels outside the
lesions (:func:`bright_voxels`, hard-negative patch centres). Writes nothing.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..utils import PathLike

__all__ = ["load_preprocessed_case", "lesion_components", "bright_voxels", "Case", "head_box", "load_cases"]


def load_preprocessed_case(preprocessed_dir: PathLike, patient_id: str, mmap: bool = True) -> dict[str, Any]:
    """Read one preprocessed case (``<dir>/<pid>/image.npy, mask.npy, brain.npy, meta.json``).

    Parameters
    ----------
    preprocessed_dir : str or PathLike
        Folder written by ``bmstudy preprocess``.
    patient_id : str
        The case's folder name.
    mmap : bool, default=True
        Memory-map the arrays (read-only) so a cohort does not have to fit in RAM.

    Returns
    -------
    dict
        ``image`` (float, 3-D), ``mask`` (same shape), ``brain`` (only if ``brain.npy`` exists) and
        ``meta`` (the parsed ``meta.json``, ``{}`` when absent).

    Raises
    ------
    FileNotFoundError
        If ``image.npy`` or ``mask.npy`` is missing (the message names the case and the file).
    ValueError
        If an array cannot be read or is not 3-D, the shapes of image and mask differ, or the image is
        not floating point (the message names the case and the file).
    """
    case_dir = Path(preprocessed_dir) / str(patient_id)
    out: dict[str, Any] = {}
    for key in ("image", "mask", "brain"):
        path = case_dir / f"{key}.npy"
        if not path.is_file():
            if key == "brain":
                continue
            raise FileNotFoundError(f"case {patient_id!r}: missing {path}")
        try:
            out[key] = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except ValueError as exc:
            raise ValueError(f"case {patient_id!r}: cannot read {path}: {exc}") from exc
        if out[key].ndim != 3:
            raise ValueError(f"case {patient_id!r}: {path} must be 3-D, got shape {out[key].shape}")
    if out["image"].shape != out["mask"].shape:
        raise ValueError(f"case {patient_id!r}: image {out['image'].shape} and mask {out['mask'].shape} shapes differ in {case_dir}")
    if not np.issubdtype(out["image"].dtype, np.floating):
        raise ValueError(f"case {patient_id!r}: {case_dir / 'image.npy'} must be float, got {out['image'].dtype}")
    meta_path = case_dir / "meta.json"
    out["meta"] = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
    return out


def lesion_components(mask: np.ndarray) -> list[np.ndarray]:
    """Voxel coordinates of each 26-connected lesion component of ``mask``.

    Parameters
    ----------
    mask : ndarray of shape (D, H, W)
        Lesion mask (voxels > 0 are lesion).

    Returns
    -------
    list of ndarray of int32, shape (n_i, 3)
        One coordinate array per component, in label order (empty list without lesions).
    """
    from scipy import ndimage

    labels, n = ndimage.label(np.asarray(mask) > 0, structure=np.ones((3, 3, 3), dtype=bool))
    if n == 0:
        return []
    coords = np.argwhere(labels > 0).astype(np.int32)
    lab = labels[tuple(coords.T)]
    order = np.argsort(lab, kind="stable")
    coords, lab = coords[order], lab[order]
    splits = np.flatnonzero(np.diff(lab)) + 1
    return list(np.split(coords, splits))


def bright_voxels(image: np.ndarray, mask: np.ndarray, region: np.ndarray | None = None, quantile: float = 0.995,
                  margin: int = 3) -> np.ndarray:
    """Coordinates of the bright non-lesion voxels of a case: hard-negative patch centres.

    Parameters
    ----------
    image : ndarray of shape (D, H, W)
        The preprocessed (Z-scored) image.
    mask : ndarray of shape (D, H, W)
        Lesion mask (voxels > 0 are lesion).
    region : ndarray of shape (D, H, W) or None, default=None
        Where to look (the brain mask); ``None``: the nonzero image.
    quantile : float, default=0.995
        Voxels at or above this quantile of the region's intensities count as bright; in (0, 1).
    margin : int, default=3
        Lesions are dilated by this many voxels (26-neighbourhood) before being left out, so a lesion's
        own rim is not a "negative"; ``0`` leaves out the lesion voxels only.

    Returns
    -------
    ndarray of int32, shape (n, 3)
        In C order; empty when the region is empty or nothing bright lies outside the lesions.

    Raises
    ------
    ValueError
        If the shapes differ, ``quantile`` is not in (0, 1) or ``margin`` is negative.
    """
    from scipy import ndimage

    image, mask = np.asarray(image), np.asarray(mask) > 0
    ref = np.asarray(region) != 0 if region is not None else image != 0
    if image.shape != mask.shape or image.shape != ref.shape:
        raise ValueError(f"image {image.shape}, mask {mask.shape} and region {ref.shape} must have one shape")
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be in (0, 1); got {quantile}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0; got {margin}")
    if not ref.any():
        return np.zeros((0, 3), np.int32)
    level = float(np.quantile(image[ref], quantile))
    bright = ref & (image >= level) & ~mask
    if margin and mask.any():
        bright &= ~ndimage.binary_dilation(mask, structure=np.ones((3, 3, 3), bool), iterations=int(margin))
    return np.argwhere(bright).astype(np.int32)


@dataclass
class Case:
    """One training case: (memory-mapped) image and mask plus its lesion components.

    Attributes
    ----------
    patient_id : str
    image : ndarray of shape (D, H, W), float
    mask : ndarray of shape (D, H, W)
    lesions : list of ndarray
        :func:`lesion_components` of ``mask``.
    head : ndarray of shape (D, H, W) or None
        The head region for background patches (``brain.npy``; ``None``: the nonzero image).
    box : tuple of 2 tuples of 3 int or None
        ``(lo, hi)`` bounding box (``hi`` exclusive) of the head (:func:`head_box`).
    bright : ndarray of shape (n, 3) or None
        Hard-negative centres (:func:`bright_voxels`); ``None`` when not computed.
    """

    patient_id: str
    image: np.ndarray
    mask: np.ndarray
    lesions: list[np.ndarray]
    head: np.ndarray | None = None
    box: tuple[tuple[int, ...], tuple[int, ...]] | None = None
    bright: np.ndarray | None = None

    def in_head(self, voxel: Sequence[int]) -> bool:
        """Whether ``voxel`` lies in the head (brain mask, else a nonzero image voxel)."""
        ref = self.head if self.head is not None else self.image
        return bool(ref[tuple(int(v) for v in voxel)] != 0)


def head_box(region: np.ndarray) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Bounding box ``(lo, hi)`` (``hi`` exclusive) of the nonzero voxels; the whole volume if none.

    Parameters
    ----------
    region : ndarray of shape (D, H, W)

    Returns
    -------
    tuple of 2 tuples of 3 int
    """
    nz = np.asarray(region) != 0
    lo, hi = [], []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        idx = np.flatnonzero(nz.any(axis=other))
        lo.append(int(idx[0]) if idx.size else 0)
        hi.append(int(idx[-1]) + 1 if idx.size else int(nz.shape[axis]))
    return tuple(lo), tuple(hi)


def load_cases(preprocessed_dir: PathLike, patient_ids: Sequence[str],
               hard_negative_quantile: float | None = None) -> list[Case]:
    """Load cases for sampling (images memory-mapped, lesion components precomputed).

    Parameters
    ----------
    preprocessed_dir : str or PathLike
        Folder written by ``bmstudy preprocess``.
    patient_ids : sequence of str
        The cases to load, in this order.
    hard_negative_quantile : float or None, default=None
        When given, each case's :attr:`Case.bright` is :func:`bright_voxels` at this quantile of its head.

    Returns
    -------
    list of Case

    Raises
    ------
    FileNotFoundError, ValueError
        As :func:`load_preprocessed_case`.
    """
    cases = []
    for pid in patient_ids:
        c = load_preprocessed_case(preprocessed_dir, pid)
        head = c.get("brain")
        box = head_box(head if head is not None else c["image"])
        bright = None if hard_negative_quantile is None else bright_voxels(c["image"], c["mask"], head,
                                                                            hard_negative_quantile)
        cases.append(Case(str(pid), c["image"], c["mask"], lesion_components(c["mask"]), head, box, bright))
    return cases
