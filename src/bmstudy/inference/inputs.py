"""Which cases to predict: one image, a folder of volumes or a manifest, and their brain masks.

This module owns the inputs of ``bmstudy predict`` (it reads no voxels):

* one volume file (any format :func:`bmstudy.io.read_volume` reads) -> one case;
* a folder -> every volume in it: NIfTI (``.nii``/``.nii.gz``), NRRD (``.nrrd``/``.nhdr``),
  MetaImage (``.mha``/``.mhd``) and DICOM series as sub-folders (a folder holding DICOM files
  directly is one case). The patient id is the file name without its format suffix and without a
  trailing ``_0000`` (nnU-Net's channel suffix) or ``_t1c`` (the synthetic cohort's), or the
  sub-folder's name;
* a manifest csv: the study's data manifest (validated by :func:`bmstudy.io.load_manifest`) or a
  prediction manifest with only ``patient_id, image`` (optional ``brain_mask``, ``split``); paths
  are relative to the csv's folder;
* brain masks: a manifest's ``brain_mask`` column and/or ``brain_mask=FILE|FOLDER``
  (:func:`match_brain_masks`: matched to the images by case id / file name).
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Sequence

import pandas as pd

from ..io.discovery import IMAGE_SUFFIXES, find_volumes, is_dicom_series, volume_case_id
from ..utils import PathLike, duplicate_ids, get_logger, id_problem

__all__ = [
    "VOLUME_SUFFIXES",
    "BRAIN_MASK_SUFFIXES",
    "PredictionCase",
    "case_id_from_path",
    "cases_from_input",
    "match_brain_masks",
    "check_case_ids",
]

log = get_logger("bmstudy.inference.inputs")

#: File suffixes of the volume formats found in a folder (:data:`bmstudy.io.IMAGE_SUFFIXES`).
VOLUME_SUFFIXES: tuple[str, ...] = IMAGE_SUFFIXES
#: Suffixes stripped from file names to get a patient id (nnU-Net's channel suffix, the synthetic
#: cohort's image suffix).
_ID_SUFFIXES: tuple[str, ...] = ("_0000", "_t1c")
#: A brain mask named ``<image name><suffix>`` belongs to that image (the plain name is tried first).
BRAIN_MASK_SUFFIXES: tuple[str, ...] = ("_brain_mask", "_brainmask", "_brain", "_mask")
_MANIFEST_SUFFIXES: tuple[str, ...] = (".csv",)


class PredictionCase(NamedTuple):
    """One case to predict: its id, image (file or DICOM folder) and optional brain mask."""

    patient_id: str
    image: Path
    brain_mask: Path | None = None


def case_id_from_path(path: PathLike) -> str:
    """The patient id of a volume file or DICOM folder.

    Parameters
    ----------
    path : path-like
        A volume file or a DICOM series folder.

    Returns
    -------
    str
        The file name without its format suffix and a trailing ``_0000`` / ``_t1c``
        (a folder: its name, likewise stripped).
    """
    name = volume_case_id(path)
    for suf in _ID_SUFFIXES:
        if name.endswith(suf) and len(name) > len(suf):
            return name[: -len(suf)]
    return name


def _find_volumes(folder: Path) -> list[tuple[str, Path]]:
    """``[(case_id, path)]`` of the volumes of ``folder`` (:func:`bmstudy.io.find_volumes`), prediction ids."""
    return [(case_id_from_path(path), path) for _, path in find_volumes(folder)]


def _cases_from_folder(folder: Path) -> list[PredictionCase]:
    if is_dicom_series(folder) and not _find_volumes(folder):
        return [PredictionCase(case_id_from_path(folder), folder)]  # the folder is one DICOM series
    found = _find_volumes(folder)
    if not found:
        raise FileNotFoundError(
            f"no volumes in {folder}: expected NIfTI (*.nii.gz, *.nii), NRRD (*.nrrd, *.nhdr), "
            "MetaImage (*.mha, *.mhd) files or DICOM series sub-folders")
    ids = [cid for cid, _ in found]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise ValueError(f"{folder}: several images map to the same patient id(s) {dup}")
    return [PredictionCase(cid, p) for cid, p in found]


def _load_prediction_manifest(path: Path) -> pd.DataFrame:
    """A manifest with at least ``patient_id, image``; paths resolved against its folder."""
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as exc:  # noqa: BLE001 - pandas raises several types for malformed CSV
        raise ValueError(f"{path}: cannot parse CSV: {exc}") from exc
    missing = [c for c in ("patient_id", "image") if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; a prediction manifest needs 'patient_id' and "
                         f"'image' (optional 'brain_mask', 'split'); columns: {list(df.columns)}")
    df = df.apply(lambda col: col.str.strip())
    problems = [f"{path} row {i + 2}: empty {col}" for col in ("patient_id", "image")
                for i in range(len(df)) if df[col].iat[i] == ""]
    problems += [f"{path} row {i + 2}: unsafe patient_id {v!r}: {why}" for i, v in enumerate(df["patient_id"])
                 if v != "" and (why := id_problem(v)) is not None]
    dup = sorted(set(df["patient_id"][df["patient_id"].duplicated() & (df["patient_id"] != "")]))
    problems += [f"{path}: duplicate patient_id {d!r}" for d in dup]
    problems += [f"{path}: patient_ids {g} differ only in letter case (the same output files on case-insensitive "
                 "file systems)" for g in duplicate_ids(df["patient_id"]) if len(set(g)) > 1]
    if problems:
        raise ValueError("\n".join(problems))
    for col in ("image", "brain_mask"):
        if col in df.columns:
            df[col] = [str(v if v == "" or Path(v).is_absolute() else path.parent / v) for v in df[col]]
    if "split" in df.columns:
        df["split"] = df["split"].str.lower()
    return df


def _read_manifest(path: Path) -> pd.DataFrame:
    """The study's manifest (fully validated) or a prediction manifest (``patient_id, image``)."""
    from ..io.manifest import REQUIRED_COLUMNS, load_manifest

    try:
        columns = set(pd.read_csv(path, nrows=0).columns)
    except Exception as exc:  # noqa: BLE001 - pandas raises several types for malformed CSV
        raise ValueError(f"{path}: cannot parse CSV: {exc}") from exc
    if set(REQUIRED_COLUMNS) <= columns:
        return load_manifest(path)
    return _load_prediction_manifest(path)


def _cases_from_frame(df: pd.DataFrame, splits: Sequence[str] | None) -> list[PredictionCase]:
    for col in ("patient_id", "image"):
        if col not in df.columns:
            raise ValueError(f"manifest has no {col!r} column (columns: {list(df.columns)})")
    if splits is not None:
        if "split" in df.columns:
            df = df[df["split"].astype(str).isin(list(splits))]
        else:
            log.info("the manifest has no 'split' column: every row is predicted")
    out = []
    for _, row in df.iterrows():
        brain = row.get("brain_mask") if "brain_mask" in df.columns else None
        brain = Path(brain) if isinstance(brain, (str, Path)) and str(brain).strip() else None
        out.append(PredictionCase(str(row["patient_id"]), Path(row["image"]), brain))
    return out


def match_brain_masks(cases: Sequence[PredictionCase], brain_mask: PathLike) -> list[PredictionCase]:
    """Attach brain masks from one file or a folder to ``cases``.

    A file is the brain mask of the single case. In a folder, the mask of a case is the volume whose
    name (without format suffix) is the case id or the image's file name, optionally followed by one
    of :data:`BRAIN_MASK_SUFFIXES` (e.g. ``p1.nii.gz`` or ``p1_brain.nrrd`` for image ``p1.nrrd``).
    A matched mask replaces the case's manifest ``brain_mask``; a folder's masks are never predicted
    as images (so masks may sit next to their images). Cases without a match keep theirs (a warning
    lists them).

    Parameters
    ----------
    cases : sequence of PredictionCase
        The cases from :func:`cases_from_input`.
    brain_mask : path-like
        A brain mask file (one case only) or a folder of brain masks.

    Returns
    -------
    list of PredictionCase
        The cases with their brain masks.

    Raises
    ------
    FileNotFoundError
        If ``brain_mask`` does not exist.
    ValueError
        If a single mask file is given for several cases.
    """
    path = Path(brain_mask)
    if not path.exists():
        raise FileNotFoundError(f"brain mask not found: {path}")
    if path.is_file():
        if len(cases) != 1:
            raise ValueError(f"one brain mask file ({path}) for {len(cases)} images; "
                             "pass a folder of brain masks named like the images")
        return [cases[0]._replace(brain_mask=path)]
    masks = {volume_case_id(p): p for _, p in _find_volumes(path)}
    found = [_mask_for(case, masks) for case in cases]
    used = {p.resolve() for p in found if p is not None}
    out, unmatched = [], []
    for case, mask in zip(cases, found):
        if case.image.resolve() in used:
            continue  # a mask in a shared images/masks folder is not an image to predict
        if mask is None:
            unmatched.append(case.patient_id)
        out.append(case if mask is None else case._replace(brain_mask=mask))
    if unmatched:
        log.warning("no brain mask in %s for %d case(s): %s", path, len(unmatched), ", ".join(unmatched[:20]))
    return out


def _mask_for(case: PredictionCase, masks: dict[str, Path]) -> Path | None:
    stem = volume_case_id(case.image)
    bases = dict.fromkeys([case.patient_id, stem, case_id_from_path(case.image)])
    for suffix in ("", *BRAIN_MASK_SUFFIXES):
        for base in bases:
            hit = masks.get(base + suffix)
            if hit is not None and hit.resolve() != case.image.resolve():
                return hit
    return None


def cases_from_input(
    source: pd.DataFrame | PathLike,
    splits: Sequence[str] | None = None,
    brain_mask: PathLike | None = None,
) -> list[PredictionCase]:
    """The cases to predict from a manifest, a folder of volumes or one volume.

    Parameters
    ----------
    source : DataFrame or path-like
        A manifest DataFrame, a manifest csv (the study's or ``patient_id, image[, brain_mask]``),
        a folder of volumes / DICOM series sub-folders, or one volume file or DICOM folder.
    splits : sequence of str or None, default=None
        Manifest splits to keep (``None``: every row). Ignored for folders, single files and
        manifests without a ``split`` column.
    brain_mask : path-like or None, default=None
        A brain mask file or folder (see :func:`match_brain_masks`).

    Returns
    -------
    list of PredictionCase
        In manifest / sorted file order.

    Raises
    ------
    FileNotFoundError
        If ``source`` does not exist or a folder holds no volumes.
    ValueError
        For a manifest without ``patient_id`` / ``image``, empty, duplicate or unsafe ids
        (:func:`check_case_ids`; also in folder mode, where the id comes from the file name).
    """
    if isinstance(source, pd.DataFrame):
        cases = _cases_from_frame(source, splits)
    else:
        path = Path(source)
        if path.is_dir():
            cases = _cases_from_folder(path)
        elif not path.is_file():
            raise FileNotFoundError(f"input not found: {path} (expected an image, a folder of images "
                                    "or a manifest csv)")
        elif path.name.lower().endswith(_MANIFEST_SUFFIXES):
            cases = _cases_from_frame(_read_manifest(path), splits)
        else:
            cases = [PredictionCase(case_id_from_path(path), path)]
    if brain_mask is not None:
        cases = match_brain_masks(cases, brain_mask)
    check_case_ids(cases)
    return cases


def check_case_ids(cases: Sequence[PredictionCase]) -> None:
    """Refuse ids that would write outside the output folder or onto another case's files.

    Parameters
    ----------
    cases : sequence of PredictionCase
        The cases to predict.

    Raises
    ------
    ValueError
        Listing every case (id and image) whose id is unsafe (:func:`bmstudy.utils.id_problem`),
        and ids that are equal or differ only in letter case.
    """
    problems = [f"{c.image}: patient_id {c.patient_id!r} {why} (rename the file or fix the manifest)"
                for c in cases if (why := id_problem(c.patient_id)) is not None]
    by_id = {}
    for c in cases:
        by_id.setdefault(c.patient_id.casefold(), []).append(c)
    problems += [f"patient_ids {[c.patient_id for c in g]} ({', '.join(str(c.image) for c in g)}) name the same "
                 "output files" for g in by_id.values() if len(g) > 1]
    if problems:
        raise ValueError("cannot predict: unsafe or clashing patient ids:\n" + "\n".join(problems[:20]))

