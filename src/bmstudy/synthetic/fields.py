"""Voxel grids in millimetres and smooth random fields, shared by the synthetic renderers.

The head is rendered in physical millimetres with the origin at the volume centre; this module owns
that convention (:func:`grid_mm`, :func:`voxel_affine`), the local boxes lesions are painted in
(:func:`local_box`, :func:`box_coords_mm`) and the smooth noise every stage draws
(:func:`smooth_noise`: cortical folding, texture, bias field).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["grid_mm", "voxel_affine", "smooth_noise", "upsample_linear", "local_box", "box_coords_mm"]


def grid_mm(shape: Sequence[int], spacing: Sequence[float]) -> list[np.ndarray]:
    """Open (broadcastable) voxel-centre coordinates in mm, origin at the volume centre.

    Parameters
    ----------
    shape : sequence of int
        Grid shape (3 values).
    spacing : sequence of float
        Voxel size in mm per axis.

    Returns
    -------
    list of ndarray
        Three float32 arrays of shapes ``(n0, 1, 1)``, ``(1, n1, 1)`` and ``(1, 1, n2)``.
    """
    out = []
    for ax, (n, s) in enumerate(zip(shape, spacing)):
        c = (np.arange(n, dtype=np.float32) - (n - 1) / 2.0) * np.float32(s)
        sh = [1, 1, 1]
        sh[ax] = n
        out.append(c.reshape(sh))
    return out


def voxel_affine(shape: Sequence[int], spacing: Sequence[float]) -> np.ndarray:
    """RAS affine (mm) of a grid whose centre is the world origin.

    Parameters
    ----------
    shape : sequence of int
        Grid shape (3 values).
    spacing : sequence of float
        Voxel size in mm per axis.

    Returns
    -------
    ndarray of shape (4, 4)
        Diagonal affine with the translation that puts the volume centre at (0, 0, 0).
    """
    aff = np.diag([*map(float, spacing), 1.0])
    aff[:3, 3] = [-(n - 1) / 2.0 * s for n, s in zip(shape, spacing)]
    return aff


def smooth_noise(rng: np.random.Generator, shape: Sequence[int], spacing: Sequence[float],
                 corr_mm: float) -> np.ndarray:
    """Zero-mean, unit-std smooth random field with correlation length ~``corr_mm``.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of the white noise (draws one coarse standard-normal grid).
    shape : sequence of int
        Output shape.
    spacing : sequence of float
        Voxel size in mm per axis.
    corr_mm : float
        Correlation length in mm.

    Returns
    -------
    ndarray
        float32 field of ``shape``.
    """
    ext = np.asarray(shape) * np.asarray(spacing)
    step = max(corr_mm / 2.0, float(min(spacing)))
    coarse = np.maximum(np.ceil(ext / step).astype(int) + 4, 4)
    f = ndimage.gaussian_filter(rng.standard_normal(coarse).astype(np.float32), 1.0, mode="wrap")
    f = upsample_linear(f, shape)
    f -= f.mean()
    f /= f.std() + 1e-8
    return f.astype(np.float32)


def upsample_linear(coarse: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Separable linear interpolation of a coarse grid onto ``shape`` (cell-centred, edges clamped).

    Parameters
    ----------
    coarse : ndarray
        3-D coarse field.
    shape : sequence of int
        Output shape.

    Returns
    -------
    ndarray of float32
    """
    f = coarse.astype(np.float32)
    for ax, n in enumerate(shape):
        c = f.shape[ax]
        pos = np.clip((np.arange(n, dtype=np.float32) + 0.5) * (c / n) - 0.5, 0, c - 1)
        i0 = np.minimum(np.floor(pos).astype(np.intp), c - 2) if c > 1 else np.zeros(n, np.intp)
        w = (pos - i0).astype(np.float32) if c > 1 else np.zeros(n, np.float32)
        sh = [1, 1, 1]
        sh[ax] = n
        w = w.reshape(sh)
        f = np.take(f, i0, axis=ax) * (1 - w) + np.take(f, np.minimum(i0 + 1, c - 1), axis=ax) * w
    return f


def local_box(center_vox: np.ndarray, radius_mm: float, spacing: np.ndarray,
              shape: Sequence[int]) -> tuple[tuple[slice, ...], np.ndarray]:
    """Slices of the box of half-size ``radius_mm`` (+1 voxel) around a centre, clipped to the grid.

    Parameters
    ----------
    center_vox : ndarray
        Centre in (fractional) voxel coordinates.
    radius_mm : float
        Half-size of the box in mm.
    spacing : ndarray
        Voxel size in mm per axis.
    shape : sequence of int
        Shape of the full grid.

    Returns
    -------
    slices : tuple of slice
        The box in the full grid.
    lo : ndarray
        Voxel index of the box's first corner.
    """
    half = np.ceil(radius_mm / spacing).astype(int) + 1
    lo = np.maximum(np.floor(center_vox).astype(int) - half, 0)
    hi = np.minimum(np.ceil(center_vox).astype(int) + half + 1, shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi)), lo


def box_coords_mm(sl: tuple[slice, ...], center_vox: np.ndarray, spacing: np.ndarray) -> list[np.ndarray]:
    """Open coordinates (mm, float32) of a box's voxels relative to ``center_vox``.

    Parameters
    ----------
    sl : tuple of slice
        The box (from :func:`local_box`).
    center_vox : ndarray
        Origin in voxel coordinates of the full grid.
    spacing : ndarray
        Voxel size in mm per axis.

    Returns
    -------
    list of ndarray
        Three broadcastable float32 coordinate arrays.
    """
    out = []
    for ax, s in enumerate(sl):
        c = ((np.arange(s.start, s.stop, dtype=np.float32) - center_vox[ax]) * spacing[ax]).astype(np.float32)
        sh = [1, 1, 1]
        sh[ax] = len(c)
        out.append(c.reshape(sh))
    return out
