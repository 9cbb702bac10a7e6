"""Clinical lesion diameters: the longest in-plane (axial) diameter that RANO-BM measures.

RANO-BM (Lin et al., Lancet Oncol 2015) sizes a brain metastasis by its longest diameter on an axial
slice (measurable disease: >= 10 mm). :func:`axial_diameters_mm` computes it for every labelled
lesion of a volume: on each slice perpendicular to the axial axis, the longest distance across the
lesion's pixels, the maximum over slices.

Pixels are squares, not points: the length across two pixels ``p`` and ``q`` (in mm) is
``|q - p| + |u_x| s_x + |u_y| s_y`` with ``u`` the unit vector from ``p`` to ``q`` and ``s`` the
in-plane pixel size -- the extent of the pixelated lesion along that direction (a row of ``n``
pixels measures ``n * s``; a single pixel ``max(s_x, s_y)``). Only boundary pixels are compared (the
farthest pair always lies on the boundary). The axial axis of a volume is the voxel axis closest to
the world superior-inferior direction of its affine (:func:`axial_axis`).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

__all__ = ["axial_axis", "axial_diameters_mm"]

_MAX_BRUTE = 1500


def axial_axis(affine: np.ndarray | None) -> int:
    """The voxel axis closest to the world S direction (the slice axis of an axial acquisition).

    Parameters
    ----------
    affine : ndarray of shape (4, 4), optional
        Voxel-to-world affine of the array (None: axis 2, the RAS+ canonical convention).

    Returns
    -------
    int
        0, 1 or 2.
    """
    if affine is None:
        return 2
    a = np.asarray(affine, dtype=np.float64)[:3, :3]
    norms = np.linalg.norm(a, axis=0)
    norms[norms == 0] = 1.0
    return int(np.argmax(np.abs(a[2]) / norms))


def _slice_diameter(mask2d: np.ndarray, sx: float, sy: float) -> float:
    """Longest pixel-extent length across a 2-D mask (mm)."""
    if mask2d.sum() > 64:  # only the boundary can hold the farthest pair
        mask2d = mask2d & ~ndimage.binary_erosion(mask2d, border_value=0)
    pts = np.argwhere(mask2d).astype(np.float64) * (sx, sy)
    if len(pts) > _MAX_BRUTE:
        try:
            pts = pts[ConvexHull(pts).vertices]
        except QhullError:  # collinear points: the extreme ones suffice
            pts = pts[[np.argmin(pts.sum(1)), np.argmax(pts.sum(1))]]
    d = pts[:, None, :] - pts[None, :, :]
    length = np.sqrt((d ** 2).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        ext = np.where(length > 0, (np.abs(d[..., 0]) * sx + np.abs(d[..., 1]) * sy) / length, max(sx, sy))
    return float((length + ext).max())


def axial_diameters_mm(labels: np.ndarray, n_labels: int, spacing: Sequence[float], axis: int = 2) -> np.ndarray:
    """Longest in-plane diameter (mm) of each labelled lesion on the slices perpendicular to ``axis``.

    Parameters
    ----------
    labels : ndarray of int, 3-D
        0 = background, 1..``n_labels`` = lesions.
    n_labels : int
        Number of labels.
    spacing : sequence of 3 float
        Voxel size (mm) along the array's axes.
    axis : int, default=2
        The slice axis (:func:`axial_axis`); the other two span the axial plane.

    Returns
    -------
    ndarray of float64, shape (n_labels,)
        NaN for a label with no voxel.

    Raises
    ------
    ValueError
        For a non-3-D array, an axis outside 0..2 or a bad spacing.
    """
    lab = np.asarray(labels)
    sp = [float(s) for s in spacing]
    if lab.ndim != 3 or axis not in (0, 1, 2) or len(sp) != 3 or min(sp) <= 0:
        raise ValueError(f"axial_diameters_mm needs a 3-D label array, axis in 0..2 and 3 positive spacings "
                         f"(got shape {lab.shape}, axis {axis}, spacing {spacing})")
    plane = [i for i in range(3) if i != axis]
    sx, sy = sp[plane[0]], sp[plane[1]]
    out = np.full(int(n_labels), np.nan)
    sizes = np.bincount(lab.ravel(), minlength=int(n_labels) + 1)[1:int(n_labels) + 1]
    out[sizes == 1] = max(sx, sy)  # single voxels (speckle) without the per-lesion loop
    for k, box in enumerate(ndimage.find_objects(lab, max_label=int(n_labels)), start=1):
        if box is None or sizes[k - 1] == 1:
            continue
        m = np.moveaxis(lab[box] == k, axis, 0)
        out[k - 1] = max(_slice_diameter(m[i], sx, sy) for i in range(m.shape[0]) if m[i].any())
    return out
