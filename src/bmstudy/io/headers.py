"""``bmstudy validate --deep``: open every volume header a manifest names, without reading the voxels.

Per file: readable as its format, 3-D (or 4-D with one frame), a finite, non-degenerate voxel-to-world
transform, and (NIfTI) data that is all there: an uncompressed file at least as long as the header says,
a ``.nii.gz`` whose gzip trailer records the uncompressed size the header implies (a truncated download,
a text file named ``.nii.gz`` and a 0-byte file all fail). Per row: the mask and brain mask share the
image's grid (shape, spacing, origin, direction within :class:`bmstudy.plan.PreprocessParams`'
default tolerances).
"""
from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import Any, Iterable, NamedTuple

import numpy as np
import pandas as pd

from .geometry import affine_direction, affine_spacing, sitk_to_ras_affine
from .volumes import NIFTI_SUFFIXES

__all__ = ["Problem", "Header", "HeaderError", "read_header", "header_problems"]

#: The manifest's path columns (as :data:`bmstudy.io.manifest.PATH_COLUMNS`).
PATH_COLUMNS: tuple[str, ...] = ("image", "mask", "brain_mask")


class Problem(NamedTuple):
    """One manifest problem: CSV line (None: the whole file), patient id, column, file and what is wrong."""

    line: int | None
    patient_id: str
    column: str
    file: str
    problem: str

#: Grid tolerances (the defaults of PreprocessParams: spacing and origin in mm, direction cosines).
SPACING_TOL, ORIGIN_TOL, DIRECTION_TOL = 1e-3, 1e-2, 1e-3


class HeaderError(ValueError):
    """A volume whose header cannot be read or is invalid."""


class Header(NamedTuple):
    """The geometry of a volume as its header records it."""

    shape: tuple[int, ...]
    affine: np.ndarray


def _nifti_data_size(img: Any) -> int:
    """Bytes of voxel data (plus offset) the NIfTI header promises."""
    hdr = img.header
    nbytes = int(np.prod(img.shape, dtype=np.int64)) * int(np.dtype(hdr.get_data_dtype()).itemsize)
    return int(hdr.get_data_offset()) + nbytes


def _check_nifti_length(path: Path, img: Any) -> None:
    """Raise when the file holds less voxel data than the header promises."""
    expected = _nifti_data_size(img)
    if path.name.lower().endswith(".gz"):
        with open(path, "rb") as fh:
            fh.seek(-4, 2)
            isize = struct.unpack("<I", fh.read(4))[0]
        if isize != expected % (1 << 32):  # truncated, or a writer that pads: decompress all to know
            total = _gunzip_length(path)
            if total < expected:
                raise HeaderError(f"truncated NIfTI: {total} bytes after decompression, the header implies {expected}")
    elif path.stat().st_size < expected:
        raise HeaderError(f"truncated NIfTI: {path.stat().st_size} bytes, the header implies {expected}")


def _gunzip_length(path: Path) -> int:
    """Uncompressed length of a gzip file (its CRC checked); HeaderError when it is cut short or corrupt."""
    total = 0
    try:
        with gzip.open(path, "rb") as fh:
            while block := fh.read(1 << 22):
                total += len(block)
    except (OSError, EOFError) as exc:
        raise HeaderError(f"incomplete or corrupt .nii.gz ({type(exc).__name__}: {exc}; truncated file?)") from exc
    return total


def _nifti_header(path: Path) -> Header:
    import nibabel as nib

    if path.stat().st_size == 0:
        raise HeaderError("empty file (0 bytes)")
    try:
        img = nib.load(str(path))
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types for corrupt files
        raise HeaderError(f"not a readable NIfTI: {type(exc).__name__}: {exc}") from exc
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise HeaderError(f"not a NIfTI image ({type(img).__name__})")
    _check_nifti_length(path, img)
    return Header(tuple(int(n) for n in img.shape), np.asarray(img.affine, dtype=float))


def _sitk_header(path: Path) -> Header:
    import SimpleITK as sitk

    if path.is_dir():
        from .volumes import read_volume

        vol = read_volume(path, kind="mask")  # a DICOM series: the slices must be read to know the grid
        return Header(tuple(vol.source_shape), vol.source_affine)
    if path.stat().st_size == 0:
        raise HeaderError("empty file (0 bytes)")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise HeaderError(f"not readable: {str(exc).strip().splitlines()[-1]}") from exc
    shape = tuple(int(n) for n in reader.GetSize())
    image = sitk.Image([1] * len(shape), sitk.sitkUInt8) if len(shape) == 3 else None
    if image is None:
        return Header(shape, np.eye(4))
    image.SetSpacing(reader.GetSpacing())
    image.SetOrigin(reader.GetOrigin())
    image.SetDirection(reader.GetDirection())
    return Header(shape, sitk_to_ras_affine(image))


def read_header(path: str | Path) -> Header:
    """The shape and RAS affine of a volume from its header, checked.

    Parameters
    ----------
    path : str or Path
        A NIfTI, NRRD, MetaImage or other SimpleITK file, or a DICOM series folder.

    Returns
    -------
    Header
        ``shape`` (3-D; a trailing single frame is dropped) and ``affine`` (4 x 4, RAS).

    Raises
    ------
    HeaderError
        Unreadable, 0 bytes, truncated, not 3-D, or a non-finite / degenerate transform.
    """
    p = Path(path)
    if not p.exists():
        raise HeaderError("file not found")
    h = _nifti_header(p) if p.name.lower().endswith(NIFTI_SUFFIXES) else _sitk_header(p)
    shape = h.shape[:3] if len(h.shape) == 4 and h.shape[3] == 1 else h.shape
    if len(shape) != 3:
        raise HeaderError(f"expected a 3-D volume, got shape {h.shape}")
    if min(shape) < 1:
        raise HeaderError(f"empty volume (shape {shape})")
    a = h.affine
    if a.shape != (4, 4) or not np.isfinite(a).all() or abs(np.linalg.det(a[:3, :3])) < 1e-12:
        raise HeaderError("non-finite or degenerate voxel-to-world transform in the header")
    return Header(shape, a)


def _grid_mismatch(ref: Header, other: Header) -> str | None:
    if other.shape != ref.shape:
        return f"shape {other.shape} != image {ref.shape}"
    problems = []
    if np.abs(np.array(affine_spacing(other.affine)) - np.array(affine_spacing(ref.affine))).max() > SPACING_TOL:
        problems.append("spacing differs from the image's")
    if np.abs(other.affine[:3, 3] - ref.affine[:3, 3]).max() > ORIGIN_TOL:
        problems.append("origin differs from the image's")
    if np.abs(affine_direction(other.affine) - affine_direction(ref.affine)).max() > DIRECTION_TOL:
        problems.append("direction differs from the image's")
    return "; ".join(problems) or None


def header_problems(df: pd.DataFrame, skip: Iterable[tuple[int | None, str]] = ()) -> list[Problem]:
    """Every header problem of a manifest's files, one :class:`~bmstudy.io.manifest.Problem` each.

    Parameters
    ----------
    df : DataFrame
        A normalised manifest (absolute paths; :func:`bmstudy.io.manifest.validate_manifest`).
    skip : iterable of (line, column), default=()
        Cells already reported (e.g. missing files), not opened again.

    Returns
    -------
    list of Problem
        Unreadable / invalid headers, then grids that disagree with the row's image.
    """
    skip = set(skip)
    problems: list[Problem] = []
    for i, row in enumerate(df.to_dict("records")):
        line, pid = i + 2, str(row.get("patient_id", ""))
        headers: dict[str, Header] = {}
        for col in PATH_COLUMNS:
            value = row.get(col)
            if col not in df.columns or not isinstance(value, str) or not value.strip() or (line, col) in skip:
                continue
            try:
                headers[col] = read_header(value)
            except Exception as exc:  # noqa: BLE001 - every problem becomes a row
                problems.append(Problem(line, pid, col, value, str(exc)))
        for col in ("mask", "brain_mask"):
            if "image" in headers and col in headers:
                why = _grid_mismatch(headers["image"], headers[col])
                if why:
                    problems.append(Problem(line, pid, col, str(row[col]), f"not on the image's grid: {why}"))
    return problems
