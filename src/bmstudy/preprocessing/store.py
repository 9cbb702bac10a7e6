"""The on-disk layout of a preprocessed cohort, reading it back, and the cache check.

``out_dir/<pid>/image.npy`` (float32), ``mask.npy`` (uint8), ``brain.npy`` (uint8) and ``meta.json``
(the transform record, params, input fingerprints; written last, so its presence marks a complete
case), plus ``out_dir/preprocess_report.csv`` with the columns :data:`REPORT_COLUMNS`.
A case is cached (:func:`is_cached`) when its ``meta.json`` records the same params hash, record
version, code hash (:func:`code_hash`: the source of the modules that produce a case) and input
content (size + mtime, or else the SHA-256 of the file).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from ..io.volumes import fingerprint_unchanged, input_fingerprint
from ..plan import PreprocessParams
from ..utils import PathLike, safe_join, source_hash

__all__ = ["RECORD_VERSION", "REPORT_NAME", "REPORT_COLUMNS", "CASE_FILES", "CODE_MODULES", "code_hash", "case_dir",
           "load_case", "load_report", "is_cached", "cached_report_row"]

#: Version of the ``meta.json`` transform record.
RECORD_VERSION = 1
#: File name of the cohort report inside the output folder.
REPORT_NAME = "preprocess_report.csv"
#: Columns of ``preprocess_report.csv``, in order.
REPORT_COLUMNS: tuple[str, ...] = (
    "patient_id", "site", "split", "status", "reason", "cached", "seconds", "skull_strip",
    "input_shape", "input_spacing", "input_axcodes", "cropped_shape", "output_shape", "output_spacing",
    "brain_volume_ml", "mask_volume_ml_input", "mask_volume_ml_output", "mask_volume_rel_change",
    "brain_mean", "brain_std", "brain_p01", "brain_p99", "params_hash",
)
#: The per-case files, ``meta.json`` last (written last, removed first).
CASE_FILES: tuple[str, ...] = ("image.npy", "mask.npy", "brain.npy", "meta.json")
#: The modules whose source produces a preprocessed case (their hash is recorded in ``meta.json``).
CODE_MODULES: tuple[str, ...] = (
    "bmstudy.preprocessing.cohort", "bmstudy.preprocessing.checks", "bmstudy.preprocessing.resampling",
    "bmstudy.preprocessing.normalization", "bmstudy.preprocessing.skullstrip", "bmstudy.preprocessing.qc",
    "bmstudy.preprocessing.store", "bmstudy.io.volumes", "bmstudy.io.geometry", "bmstudy.io.binary",
)


def code_hash() -> str:
    """SHA-256 of the source of :data:`CODE_MODULES` (a change to any of them redoes every case).

    Returns
    -------
    str
        64 hex digits (:func:`bmstudy.utils.source_hash`).
    """
    return source_hash(*CODE_MODULES)


def case_dir(out_dir: PathLike, patient_id: str) -> Path:
    """``out_dir/<patient_id>``, refusing ids that would leave ``out_dir`` (:func:`bmstudy.utils.safe_join`).

    Parameters
    ----------
    out_dir : str or Path
        The preprocessing output folder.
    patient_id : str
        The case.

    Returns
    -------
    Path

    Raises
    ------
    ValueError
        For an unsafe id.
    """
    return safe_join(out_dir, str(patient_id))


def load_case(out_dir: PathLike, patient_id: str, mmap: bool = False) -> dict[str, Any]:
    """Read one preprocessed case.

    Parameters
    ----------
    out_dir : str or Path
        The preprocessing output folder.
    patient_id : str
        The case.
    mmap : bool, default=False
        Memory-map the arrays read-only instead of loading them.

    Returns
    -------
    dict
        ``image``, ``mask``, ``brain`` (arrays) and ``meta`` (the parsed ``meta.json``).

    Raises
    ------
    FileNotFoundError
        When an array or ``meta.json`` is missing (case not preprocessed or incomplete).
    ValueError
        For an unsafe patient id.
    """
    folder = case_dir(out_dir, patient_id)
    out: dict[str, Any] = {}
    for key in ("image", "mask", "brain"):
        path = folder / f"{key}.npy"
        if not path.is_file():
            raise FileNotFoundError(f"case {patient_id!r}: missing {path} (run `bmstudy preprocess`)")
        out[key] = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"case {patient_id!r}: missing {meta_path} (incomplete case)")
    out["meta"] = json.loads(meta_path.read_text(encoding="utf-8"))
    return out


def load_report(out_dir: PathLike) -> pd.DataFrame:
    """Read ``out_dir/preprocess_report.csv``.

    Parameters
    ----------
    out_dir : str or Path
        The preprocessing output folder.

    Returns
    -------
    DataFrame
        ``patient_id`` and ``reason`` as str (empty cells stay empty strings).

    Raises
    ------
    FileNotFoundError
        When the report does not exist.
    """
    path = Path(out_dir) / REPORT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `bmstudy preprocess` first")
    return pd.read_csv(path, dtype={"patient_id": str, "reason": str}, keep_default_na=False)


def _inputs_unchanged(inputs: Mapping[str, str], recorded: Mapping[str, Any]) -> bool:
    if set(recorded) != set(inputs):
        return False
    for role, path in inputs.items():
        rec = recorded[role]
        if fingerprint_unchanged(path, rec):
            continue
        if str(Path(path)) != rec.get("path") or not Path(path).exists() or input_fingerprint(path)["sha256"] != rec.get("sha256"):
            return False
    return True


def is_cached(case_dir: PathLike, inputs: Mapping[str, str], params: PreprocessParams, *,
              code: str | None = None) -> bool:
    """Whether ``case_dir`` holds complete outputs for these inputs and params.

    Parameters
    ----------
    case_dir : str or Path
        ``out_dir/<pid>``.
    inputs : mapping of str to str
        ``{role: path}`` of the case's input files (``image``, ``mask``, optional ``brain_mask``).
    params : PreprocessParams
        Compared by hash with the recorded params.
    code : str or None, default=None
        The current code hash; None means :func:`code_hash`.

    Returns
    -------
    bool
        True when every output file exists and ``meta.json`` records the same params hash, record
        version, code hash and input fingerprints (size + mtime, or else the SHA-256 of the content).
    """
    case_dir = Path(case_dir)
    meta_path = case_dir / "meta.json"
    if not meta_path.is_file() or not all((case_dir / f).is_file() for f in CASE_FILES[:3]):
        return False
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    if meta.get("params_hash") != params.hash() or meta.get("version") != RECORD_VERSION:
        return False
    if meta.get("code_hash") != (code or code_hash()):
        return False
    return _inputs_unchanged(inputs, meta.get("input_files", {}))


def cached_report_row(case_dir: PathLike, inputs: Mapping[str, str], params: PreprocessParams, *,
                      code: str | None = None) -> dict[str, Any] | None:
    """The recorded report row of a cached case (:func:`is_cached`), or None when it must be (re)computed.

    Parameters
    ----------
    case_dir : str or Path
        ``out_dir/<pid>``.
    inputs : mapping of str to str
        ``{role: path}`` of the case's input files.
    params : PreprocessParams
        The parameters of this run.
    code : str or None, default=None
        The current code hash; None means :func:`code_hash`.

    Returns
    -------
    dict or None
        ``meta.json``'s ``report`` entry (status ``ok`` and the volumes/statistics columns).
    """
    if not is_cached(case_dir, inputs, params, code=code):
        return None
    meta = json.loads((Path(case_dir) / "meta.json").read_text(encoding="utf-8"))
    return dict(meta["report"])
