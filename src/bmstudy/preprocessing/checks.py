"""Input checks of a case before any resampling: grid alignment of the masks and the lesion mask's values.

A mask (or brain mask) that does not share the image's on-disk voxel grid raises
:class:`AlignmentError`; a lesion mask that is not 0/1 (and no label selection or threshold was asked
for) raises :class:`MaskValueError`. Both are :class:`bmstudy.io.VolumeError` subclasses, so the
cohort loop reports the case ``excluded`` and never silently resamples or guesses labels.
"""
from __future__ import annotations

import numpy as np

from ..io.binary import as_binary
from ..io.volumes import Volume, VolumeError, affine_direction, affine_spacing
from ..plan import PreprocessParams
from ..utils import PathLike

__all__ = ["AlignmentError", "MaskValueError", "check_alignment", "binarize_mask"]


class AlignmentError(VolumeError):
    """Image and mask (or brain mask) do not share one voxel grid within tolerance."""


class MaskValueError(VolumeError):
    """A lesion mask is not binary and no label selection/threshold was requested."""


def check_alignment(ref: Volume, other: Volume, params: PreprocessParams, *, case: str | None = None,
                    what: str = "mask") -> None:
    """Check that ``other`` shares ``ref``'s on-disk voxel grid within the tolerances of ``params``.

    Parameters
    ----------
    ref : Volume
        The image.
    other : Volume
        The lesion mask or brain mask read for the same case.
    params : PreprocessParams
        ``spacing_tol_mm``, ``origin_tol_mm`` and ``direction_tol`` are used.
    case : str, optional
        Patient id, named in the error.
    what : str, default='mask'
        What ``other`` is, for the message (``'mask'``, ``'brain mask'``).

    Raises
    ------
    AlignmentError
        Listing every mismatch (shape, or else spacing, origin and direction cosines).
    """
    problems = []
    if tuple(other.source_shape) != tuple(ref.source_shape):
        problems.append(f"shape {tuple(other.source_shape)} != image {tuple(ref.source_shape)}")
    else:
        sp_o, sp_r = np.array(affine_spacing(other.source_affine)), np.array(affine_spacing(ref.source_affine))
        if np.abs(sp_o - sp_r).max() > params.spacing_tol_mm:
            problems.append(f"spacing {np.round(sp_o, 4).tolist()} != image {np.round(sp_r, 4).tolist()}")
        org_o, org_r = other.source_affine[:3, 3], ref.source_affine[:3, 3]
        if np.abs(org_o - org_r).max() > params.origin_tol_mm:
            problems.append(f"origin {np.round(org_o, 3).tolist()} != image {np.round(org_r, 3).tolist()} (mm)")
        d = np.abs(affine_direction(other.source_affine) - affine_direction(ref.source_affine)).max()
        if d > params.direction_tol:
            problems.append(f"direction cosines differ by {d:.4g} (> {params.direction_tol})")
    if problems:
        raise AlignmentError(f"{what} not aligned with image: " + "; ".join(problems), case=case, path=other.path)


def binarize_mask(data: np.ndarray, params: PreprocessParams, *, case: str | None = None,
                  path: PathLike | None = None) -> np.ndarray:
    """The uint8 {0, 1} lesion mask of a label map, following ``mask_labels`` / ``label_threshold``.

    Built on :func:`bmstudy.io.as_binary`. With ``params.mask_labels`` the lesion is
    ``isin(rint(data), mask_labels)`` (float label maps are rounded first); else with
    ``params.label_threshold`` it is ``data > label_threshold``; else ``data`` must hold only 0 and 1.

    Parameters
    ----------
    data : ndarray
        The lesion mask as read (integer or float).
    params : PreprocessParams
        ``mask_labels`` and ``label_threshold`` are used.
    case, path : optional
        Patient id and mask file, named in the error.

    Returns
    -------
    ndarray of uint8
        Same shape as ``data``, values 0 and 1.

    Raises
    ------
    MaskValueError
        When neither labels nor a threshold is given and ``data`` holds values other than 0/1.
    """
    if data.dtype == np.bool_:
        data = data.view(np.uint8)
    labels = params.mask_labels
    if labels is not None and not np.issubdtype(data.dtype, np.integer):
        data = np.rint(data)
    try:
        out = as_binary(data, "mask", case=case, path=path, labels=labels, threshold=params.label_threshold,
                        error=MaskValueError)
    except MaskValueError:
        values = np.unique(data)
        shown = ", ".join(f"{v:g}" for v in values[:8]) + (" ..." if values.size > 8 else "")
        raise MaskValueError(f"mask is not binary (values {shown}); set mask_labels (e.g. (4,) for BraTS enhancing "
                             "tumour) or label_threshold", case=case, path=path) from None
    return out.view(np.uint8)
