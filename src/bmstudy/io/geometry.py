"""Voxel-to-world geometry: spacing and direction of an affine, exact reorientation to canonical RAS+,
and the conversion between nibabel's RAS affines and SimpleITK's LPS spacing/origin/direction.
"""
from __future__ import annotations

from typing import Any

import nibabel as nib
import numpy as np

__all__ = ["affine_spacing", "affine_direction", "source_to_canonical", "canonical_to_source", "sitk_to_ras_affine",
           "ras_affine_to_sitk"]

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_RAS_ORNT = nib.orientations.axcodes2ornt(("R", "A", "S"))


def affine_spacing(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel sizes of an affine (column norms of its 3x3 part).

    Parameters
    ----------
    affine : ndarray of shape (4, 4)

    Returns
    -------
    tuple of float
    """
    return tuple(float(v) for v in np.linalg.norm(np.asarray(affine)[:3, :3], axis=0))  # type: ignore[return-value]


def affine_direction(affine: np.ndarray) -> np.ndarray:
    """Unit direction cosines of an affine.

    Parameters
    ----------
    affine : ndarray of shape (4, 4)

    Returns
    -------
    ndarray of shape (3, 3)
        Columns are the voxel axes.
    """
    a = np.asarray(affine, dtype=float)[:3, :3]
    return a / np.linalg.norm(a, axis=0, keepdims=True)


def _source_to_canonical_ornt(source_affine: np.ndarray) -> np.ndarray:
    return nib.orientations.ornt_transform(nib.orientations.io_orientation(source_affine), _RAS_ORNT)


def source_to_canonical(array: np.ndarray, source_affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorient an on-disk array to RAS+, exactly (axis permutations and flips, no interpolation).

    Parameters
    ----------
    array : ndarray
        The array in the file's voxel order.
    source_affine : ndarray of shape (4, 4)
        The file's affine (RAS world).

    Returns
    -------
    array : ndarray
        Canonical RAS+ array.
    affine : ndarray of shape (4, 4)
        Its affine.
    """
    ornt = _source_to_canonical_ornt(source_affine)
    data = nib.orientations.apply_orientation(array, ornt)
    affine = np.asarray(source_affine, dtype=float) @ nib.orientations.inv_ornt_aff(ornt, array.shape[:3])
    return np.ascontiguousarray(data), affine


def canonical_to_source(array: np.ndarray, source_affine: np.ndarray) -> np.ndarray:
    """Inverse of :func:`source_to_canonical` for an array on the canonical grid.

    Parameters
    ----------
    array : ndarray
        Array on the canonical RAS+ grid.
    source_affine : ndarray of shape (4, 4)
        The file's affine.

    Returns
    -------
    ndarray
        The array in the file's voxel order.
    """
    src_ornt = nib.orientations.io_orientation(source_affine)
    ornt = nib.orientations.ornt_transform(_RAS_ORNT, src_ornt)
    return np.ascontiguousarray(nib.orientations.apply_orientation(array, ornt))


def sitk_to_ras_affine(image: Any) -> np.ndarray:
    """RAS affine of a SimpleITK image, for its array transposed to (x, y, z).

    Parameters
    ----------
    image : SimpleITK.Image

    Returns
    -------
    ndarray of shape (4, 4)
    """
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction * np.asarray(image.GetSpacing(), dtype=float)[None, :]
    lps[:3, 3] = image.GetOrigin()
    return _LPS_TO_RAS @ lps


def ras_affine_to_sitk(affine: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """SimpleITK (LPS) geometry of a RAS affine.

    Parameters
    ----------
    affine : ndarray of shape (4, 4)

    Returns
    -------
    spacing, origin, direction : tuple of float
        As ``SetSpacing``/``SetOrigin``/``SetDirection`` take them (direction row-major, 9 values).
    """
    lps = _LPS_TO_RAS @ np.asarray(affine, dtype=float)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    direction = lps[:3, :3] / spacing[None, :]
    return tuple(map(float, spacing)), tuple(map(float, lps[:3, 3])), tuple(map(float, direction.ravel()))
