"""Finding the volumes in a folder: every file or DICOM series :func:`bmstudy.io.read_volume` can read.

:func:`find_volumes` lists a folder's NIfTI (``.nii``, ``.nii.gz``), NRRD (``.nrrd``, ``.nhdr``) and
MetaImage (``.mha``, ``.mhd``) files and its sub-folders that hold a DICOM series, each with a case id:
the file name without its volume suffix (``INT001_t1c.nii.gz`` -> ``INT001_t1c``) or the sub-folder name.
"""
from __future__ import annotations

from pathlib import Path

from ..utils import PathLike

__all__ = ["IMAGE_SUFFIXES", "volume_suffix", "volume_case_id", "is_dicom_series", "find_volumes"]

#: File-name endings of the single-file (or header + data) volumes :func:`read_volume` reads,
#: longest first so that ``.nii.gz`` wins over ``.nii``. NIfTI and NRRD match case-insensitively;
#: MetaImage only in lower case (SimpleITK's MetaImage reader does not open ``.MHA``/``.MHD``).
IMAGE_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")

_CASE_SENSITIVE = (".mha", ".mhd")

_DICOM_SUFFIXES = (".dcm", ".ima")


def volume_suffix(name: str) -> str | None:
    """The volume suffix a file name ends with, or None.

    Parameters
    ----------
    name : str
        File name (or path); NIfTI and NRRD suffixes in any case, MetaImage ones in lower case.

    Returns
    -------
    str or None
        The matching entry of :data:`IMAGE_SUFFIXES` (lower case), or None for any other file.
    """
    name = str(name)
    low = name.lower()
    return next((s for s in IMAGE_SUFFIXES if (name if s in _CASE_SENSITIVE else low).endswith(s)), None)


def volume_case_id(path: PathLike) -> str:
    """The case id of a volume: its file name without the volume suffix, or the folder name.

    Parameters
    ----------
    path : str or Path
        A volume file or a DICOM series folder.

    Returns
    -------
    str
        ``'INT001_t1c'`` for ``.../INT001_t1c.nii.gz``; ``'P7'`` for a DICOM folder ``.../P7``.
    """
    p = Path(path)
    suffix = volume_suffix(p.name)
    return p.name[: -len(suffix)] if suffix and not p.is_dir() else p.name


def _has_dicom_preamble(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM"


def is_dicom_series(folder: PathLike) -> bool:
    """Whether a folder holds a DICOM series (the files directly inside it, as :func:`read_volume` reads them).

    A file with the DICOM preamble (``DICM`` at byte 128) or a ``.dcm``/``.ima`` suffix marks the
    folder; otherwise SimpleITK (GDCM) is asked for series ids, which also finds preamble-less files.

    Parameters
    ----------
    folder : str or Path
        The folder to inspect.

    Returns
    -------
    bool
    """
    p = Path(folder)
    if not p.is_dir():
        return False
    files = [f for f in p.iterdir() if f.is_file() and not f.name.startswith(".")]
    if not files:
        return False
    if any(f.suffix.lower() in _DICOM_SUFFIXES or _has_dicom_preamble(f) for f in files):
        return True
    if any(volume_suffix(f.name) for f in files):
        return False  # a folder of NIfTI/NRRD/... files is not a series
    import SimpleITK as sitk

    try:
        return bool(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(p)))
    except RuntimeError:
        return False


def find_volumes(folder: PathLike, *, dicom: bool = True) -> list[tuple[str, Path]]:
    """Every volume :func:`bmstudy.io.read_volume` can read in a folder, as ``(case_id, path)``.

    Files directly in ``folder`` ending in one of :data:`IMAGE_SUFFIXES` (:func:`volume_suffix`; hidden
    files skipped) and, with ``dicom``, its immediate sub-folders holding a DICOM series
    (:func:`is_dicom_series`). The data files of detached headers (``.raw``, ``.zraw``) are not
    listed: their ``.nhdr``/``.mhd`` header is.

    Parameters
    ----------
    folder : str or Path
        The folder to list (not searched recursively beyond one level for DICOM series).
    dicom : bool, default=True
        Also list sub-folders that hold a DICOM series.

    Returns
    -------
    list of (str, Path)
        Sorted by case id; the id is the file name without its volume suffix
        (``INT001_t1c.nii.gz`` -> ``'INT001_t1c'``) or the DICOM folder's name.

    Raises
    ------
    NotADirectoryError
        When ``folder`` is not a directory.
    ValueError
        When two volumes have the same case id (e.g. ``a.nii`` and ``a.nrrd``); both paths are named.
    """
    root = Path(folder)
    if not root.is_dir():
        raise NotADirectoryError(f"not a folder: {root}")
    found: dict[str, Path] = {}
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            if not (dicom and is_dicom_series(entry)):
                continue
        elif not (entry.is_file() and volume_suffix(entry.name)):
            continue
        cid = volume_case_id(entry)
        if cid in found:
            raise ValueError(f"two volumes for case id {cid!r} in {root}: {found[cid].name} and {entry.name}")
        found[cid] = entry
    return sorted(found.items())
