"""Reading and writing 3-D medical volumes.

Formats: NIfTI (``.nii``/``.nii.gz``, nibabel), NRRD / MetaImage / any single file SimpleITK reads
(``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``, ...), and a DICOM series folder (SimpleITK
``ImageSeriesReader``). Every reader returns a :class:`Volume` whose ``data`` is reoriented (by axis
permutation and flips only, so exactly invertible) to nibabel's canonical RAS+ orientation:
``data[x, y, z]`` with axis 0 running left -> right. World coordinates follow nibabel's RAS
convention; SimpleITK's LPS geometry is converted on the way in and out.

Input problems raise :class:`VolumeError` (a ``ValueError``) whose message names the case and file:
missing/unreadable files, 4-D / multi-frame / multi-component data, fewer than 3 dimensions,
NaN/Inf values, empty volumes and (for images) constant volumes. The affine helpers live in
:mod:`bmstudy.io.geometry` (imported here, where older code looks for them).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from ..utils import PathLike, atomic_path, file_sha256, temp_prefix
from .geometry import (affine_direction, affine_spacing, canonical_to_source, ras_affine_to_sitk,  # noqa: F401
                       sitk_to_ras_affine, source_to_canonical)

NIFTI_SUFFIXES: tuple[str, ...] = (".nii", ".nii.gz")
#: Formats whose header and voxel data are two files (``.mhd`` + ``.zraw``, ``.nhdr`` + ``.raw.gz``).
DETACHED_HEADER_SUFFIXES: tuple[str, ...] = (".mhd", ".nhdr")


class VolumeError(ValueError):
    """A problem with one input volume; ``str(exc)`` names the case and the file."""

    def __init__(self, message: str, *, case: str | None = None, path: PathLike | None = None) -> None:
        self.case = case
        self.path = None if path is None else Path(path)
        self.detail = message
        where = []
        if case is not None:
            where.append(f"case {case!r}")
        if path is not None:
            where.append(f"file {str(path)!r}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


@dataclass
class Volume:
    """A 3-D volume in canonical RAS+ orientation plus the geometry of the file it came from.

    ``data``/``affine`` are canonical; ``source_affine``/``source_shape`` describe the array as
    stored on disk (RAS world convention), so :meth:`to_source` gives back the on-disk voxel order.
    """

    data: np.ndarray
    affine: np.ndarray
    source_affine: np.ndarray
    source_shape: tuple[int, int, int]
    path: Path
    format: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size (mm) along the canonical axes."""
        return affine_spacing(self.affine)

    @property
    def source_axcodes(self) -> tuple[str, str, str]:
        return tuple(nib.aff2axcodes(self.source_affine))  # type: ignore[return-value]

    def to_source(self, array: np.ndarray) -> np.ndarray:
        """Reorient a canonical-grid array back to the on-disk voxel order."""
        return canonical_to_source(array, self.source_affine)


# ----------------------------------------------------------------------------- reading


def volume_format(path: PathLike) -> str:
    """The reader a path needs.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    str
        ``'dicom'`` for a folder, ``'nifti'`` for ``.nii``/``.nii.gz`` (any case), else ``'sitk'``.
    """
    p = Path(path)
    if p.is_dir():
        return "dicom"
    name = p.name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    return "sitk"


def _read_nifti(path: Path, case: str | None, kind: str = "image") -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    try:
        img = nib.load(str(path))
        if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
            raise VolumeError(f"not a NIfTI image ({type(img).__name__})", case=case, path=path)
        shape = img.shape
        if len(shape) == 4 and shape[3] == 1:
            pass
        elif len(shape) != 3:
            raise VolumeError(
                f"expected a 3-D volume, got shape {shape} ({len(shape)}-D; 4-D/multi-frame data is not supported)",
                case=case, path=path)
        proxy = img.dataobj
        unscaled = getattr(proxy, "slope", 1.0) == 1.0 and getattr(proxy, "inter", 0.0) == 0.0
        if kind == "mask" and unscaled and np.issubdtype(img.get_data_dtype(), np.integer):
            data = np.asarray(proxy)  # label maps stay integer (4x less memory than float32 for uint8)
        else:
            data = np.asarray(img.get_fdata(dtype=np.float32))
        if data.ndim == 4:
            data = data[..., 0]
        affine = np.asarray(img.affine, dtype=float)
        meta = {"qform_code": int(img.header["qform_code"]), "sform_code": int(img.header["sform_code"])}
    except VolumeError:
        raise
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise VolumeError(f"cannot read NIfTI: {type(exc).__name__}: {exc}", case=case, path=path) from exc
    return data, affine, meta


def _read_sitk_image(image: Any, path: Path, case: str | None, kind: str = "image") -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    import SimpleITK as sitk

    dim = image.GetDimension()
    size = image.GetSize()
    if dim == 4 and size[3] == 1:
        image = image[:, :, :, 0]
    elif dim != 3:
        raise VolumeError(
            f"expected a 3-D volume, got {dim}-D image of size {size} (4-D/multi-frame data is not supported)",
            case=case, path=path)
    ncomp = image.GetNumberOfComponentsPerPixel()
    if ncomp != 1:
        raise VolumeError(f"expected one component per voxel, got {ncomp} (vector/RGB image)", case=case, path=path)
    arr = sitk.GetArrayFromImage(image)  # (z, y, x)
    data = np.ascontiguousarray(np.transpose(arr, (2, 1, 0)))
    if not (kind == "mask" and np.issubdtype(data.dtype, np.integer)):
        data = data.astype(np.float32, copy=False)
    return data, sitk_to_ras_affine(image), {}


def _read_dicom_series(folder: Path, case: str | None, kind: str = "image") -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise VolumeError("no DICOM series found in folder", case=case, path=folder)
    if len(series) > 1:
        raise VolumeError(f"folder holds {len(series)} DICOM series ({', '.join(series)}); expected exactly one",
                          case=case, path=folder)
    files = reader.GetGDCMSeriesFileNames(str(folder), series[0])
    if len(files) < 2:
        raise VolumeError(f"DICOM series has {len(files)} file(s); a single multi-frame file is not supported",
                          case=case, path=folder)
    reader.SetFileNames(files)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise VolumeError(f"cannot read DICOM series: {exc}", case=case, path=folder) from exc
    data, affine, meta = _read_sitk_image(image, folder, case, kind)
    meta["n_files"] = len(files)
    meta["series_uid"] = series[0]
    return data, affine, meta


def read_volume(path: PathLike, *, case: str | None = None, kind: str = "image") -> Volume:
    """Read a 3-D volume and reorient it to canonical RAS+.

    Parameters
    ----------
    path : str or Path
        NIfTI, NRRD, MetaImage or other SimpleITK file, or a DICOM series folder.
    case : str, optional
        Patient id, named in errors.
    kind : {'image', 'mask'}, default='image'
        ``'image'``: float32, constant volumes rejected; ``'mask'``: an all-zero mask is valid and
        unscaled integer label maps keep their integer dtype.

    Returns
    -------
    Volume

    Raises
    ------
    VolumeError
        Naming ``case`` and ``path`` for every input problem (missing, unreadable, 4-D, NaN/Inf, ...).
    ValueError
        For an unknown ``kind``.
    """
    if kind not in ("image", "mask"):
        raise ValueError(f"kind must be 'image' or 'mask', got {kind!r}")
    p = Path(path)
    if not p.exists():
        raise VolumeError("file not found", case=case, path=p)
    fmt = volume_format(p)
    if fmt == "nifti":
        data, affine, meta = _read_nifti(p, case, kind)
    elif fmt == "dicom":
        data, affine, meta = _read_dicom_series(p, case, kind)
    else:
        import SimpleITK as sitk

        try:
            image = sitk.ReadImage(str(p))
        except RuntimeError as exc:
            raise VolumeError(f"cannot read with SimpleITK: {str(exc).strip().splitlines()[-1]}", case=case, path=p) from exc
        data, affine, meta = _read_sitk_image(image, p, case, kind)
    check_volume(data, affine, case=case, path=p, kind=kind)
    source_shape = tuple(int(s) for s in data.shape)
    can, can_affine = source_to_canonical(data, affine)
    return Volume(data=can, affine=can_affine, source_affine=affine, source_shape=source_shape,  # type: ignore[arg-type]
                  path=p, format=fmt, meta=meta)


def check_volume(data: np.ndarray, affine: np.ndarray, *, case: str | None = None, path: PathLike | None = None,
                 kind: str = "image") -> None:
    """Validate a 3-D array and its affine.

    Parameters
    ----------
    data : ndarray
    affine : ndarray of shape (4, 4)
    case, path : optional
        Named in the error.
    kind : {'image', 'mask'}, default='image'
        Images must not be constant.

    Raises
    ------
    VolumeError
        For a non-3-D, empty, NaN/Inf, constant (image) or degenerate-affine input.
    """
    if data.ndim != 3:
        raise VolumeError(f"expected a 3-D array, got shape {data.shape}", case=case, path=path)
    if data.size == 0 or min(data.shape) < 1:
        raise VolumeError(f"empty volume (shape {data.shape})", case=case, path=path)
    finite = np.isfinite(data) if np.issubdtype(data.dtype, np.floating) else np.ones(1, bool)
    if not finite.all():
        n_nan = int(np.isnan(data).sum())
        n_inf = int(data.size - finite.sum() - n_nan)
        raise VolumeError(f"volume contains {n_nan} NaN and {n_inf} Inf values", case=case, path=path)
    if kind == "image":
        lo, hi = float(data.min()), float(data.max())
        if lo == hi:
            raise VolumeError(f"constant image (every voxel = {lo:g}); nothing to segment", case=case, path=path)
    a = np.asarray(affine, dtype=float)
    if a.shape != (4, 4) or not np.isfinite(a).all() or abs(np.linalg.det(a[:3, :3])) < 1e-12:
        raise VolumeError("degenerate or non-finite affine (voxel-to-world transform)", case=case, path=path)


# ----------------------------------------------------------------------------- writing


def write_volume(array: np.ndarray, affine: np.ndarray, path: PathLike, dtype: Any = None,
                 nifti_codes: tuple[int, int] = (1, 1)) -> Path:
    """Write a 3-D array (voxel order of ``affine``, RAS world) atomically.

    NIfTI for ``.nii``/``.nii.gz`` (qform/sform codes from ``nifti_codes``), otherwise SimpleITK
    decides the format from the suffix (``.nrrd``, ``.mha``, ...) with the geometry converted to LPS.
    Detached-header formats (``.mhd``, ``.nhdr``) write their data file beside the header under its
    final name (``P1.zraw``, ``P1.raw.gz``), header last.

    Parameters
    ----------
    array : ndarray
        3-D array (bool is stored as uint8).
    affine : ndarray of shape (4, 4)
        Voxel-to-world (RAS) affine.
    path : str or Path
        Destination; the format follows the suffix.
    dtype : dtype, optional
        Stored data type.
    nifti_codes : tuple of int, default=(1, 1)
        NIfTI qform and sform codes.

    Returns
    -------
    Path

    Raises
    ------
    ValueError
        For a non-3-D array.
    """
    p = Path(path)
    arr = np.asarray(array)
    if arr.ndim != 3:
        raise ValueError(f"write_volume: expected a 3-D array for {p}, got shape {arr.shape}")
    if dtype is not None:
        arr = arr.astype(dtype, copy=False)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    if p.name.lower().endswith(NIFTI_SUFFIXES):
        img = nib.Nifti1Image(arr, np.asarray(affine, dtype=float))
        img.set_qform(np.asarray(affine, dtype=float), code=int(nifti_codes[0]))
        img.set_sform(np.asarray(affine, dtype=float), code=int(nifti_codes[1]))
        img.header.set_data_dtype(arr.dtype)
        with atomic_path(p) as tmp:
            nib.save(img, str(tmp))
    else:
        import SimpleITK as sitk

        image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(arr, (2, 1, 0))))
        spacing, origin, direction = ras_affine_to_sitk(affine)
        image.SetSpacing(spacing)
        image.SetOrigin(origin)
        image.SetDirection(direction)
        if p.name.lower().endswith(DETACHED_HEADER_SUFFIXES):
            _write_detached(image, p)
        else:
            with atomic_path(p) as tmp:
                sitk.WriteImage(image, str(tmp), True)
    return p


def _write_detached(image: Any, path: Path) -> None:
    """Write a header + data file pair (``.mhd``/``.nhdr``) under their final names, header last.

    The header names its data file after itself, so both are written with the final name in a
    temporary folder beside ``path`` and moved out (data first): never a header without its data.
    """
    import shutil
    import tempfile

    import SimpleITK as sitk

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=temp_prefix(path), suffix=".tmp", dir=path.parent))
    moved: list[Path] = []
    try:
        sitk.WriteImage(image, str(tmp_dir / path.name), True)
        header = [f for f in tmp_dir.iterdir() if f.name.lower() == path.name.lower()]  # ITK may lower-case it
        if len(header) != 1:
            raise OSError(f"write_volume: SimpleITK did not write the header {path.name}")
        for f in tmp_dir.iterdir():
            if f != header[0]:
                os.replace(f, path.parent / f.name)
                moved.append(path.parent / f.name)
        os.replace(header[0], path)
    except BaseException:
        for f in moved:  # no data file without its header
            f.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def input_fingerprint(path: PathLike) -> dict[str, Any]:
    """Fingerprint of an input file or DICOM folder, for the cache check.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    dict
        ``path``, ``sha256`` (of the file, or of a folder's files in name order), ``size`` and ``mtime_ns``.
    """
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file())
        h = hashlib.sha256()
        for f in files:
            h.update(f.relative_to(p).as_posix().encode())
            h.update(file_sha256(f).encode())
        stats = [f.stat() for f in files]
        return {"path": str(p), "sha256": h.hexdigest(), "size": int(sum(s.st_size for s in stats)),
                "mtime_ns": int(max((s.st_mtime_ns for s in stats), default=0))}
    st = p.stat()
    return {"path": str(p), "sha256": file_sha256(p), "size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}


def fingerprint_unchanged(path: PathLike, recorded: dict[str, Any]) -> bool:
    """Cheap check (path, size, mtime) that a file still matches a recorded fingerprint.

    Parameters
    ----------
    path : str or Path
    recorded : dict
        From :func:`input_fingerprint`.

    Returns
    -------
    bool
    """
    p = Path(path)
    if str(p) != recorded.get("path") or not p.exists():
        return False
    if p.is_dir():
        files = [f.stat() for f in p.rglob("*") if f.is_file()]
        size = sum(s.st_size for s in files)
        mtime = max((s.st_mtime_ns for s in files), default=0)
    else:
        st = p.stat()
        size, mtime = st.st_size, st.st_mtime_ns
    return int(size) == recorded.get("size") and int(mtime) == recorded.get("mtime_ns")
