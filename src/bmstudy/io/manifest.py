"""The data manifest: one row per patient, validated strictly.

Columns (required): ``patient_id, site, split, age, sex, cancer_type, image, mask, manual_seconds``.
Optional columns (kept as they are): ``brain_mask`` (path), ``scanner``, ``voxel_size``, ``n_lesions`` ...
Paths are relative to the manifest's folder (absolute paths are accepted too).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from ..utils import PathLike, atomic_to_csv, duplicate_ids, file_sha256, id_problem
from .headers import Problem, header_problems

REQUIRED_COLUMNS: tuple[str, ...] = (
    "patient_id", "site", "split", "age", "sex", "cancer_type", "image", "mask", "manual_seconds",
)
#: Columns holding file paths, resolved against the manifest's folder (``brain_truth``: the synthetic
#: cohort's true brain mask, for the stripping report; optional like ``brain_mask``).
PATH_COLUMNS: tuple[str, ...] = ("image", "mask", "brain_mask", "brain_truth")
SPLITS: frozenset[str] = frozenset({"train", "test", "external", ""})
SEXES: frozenset[str] = frozenset({"M", "F"})
CANCER_TYPES: tuple[str, ...] = ("lung", "other")


class ManifestError(ValueError):
    """A manifest problem; the message names the file, row (CSV line) and column.

    Parameters
    ----------
    message : str
        The text (one line per problem).
    problems : list of Problem, optional
        The problems as rows (``bmstudy validate`` prints them as one table).
    """

    def __init__(self, message: str, problems: Sequence[Problem] | None = None) -> None:
        super().__init__(message)
        self.problems = list(problems or [])


def _where(path: Path | None, idx: int | None = None, col: str | None = None, pid: str | None = None) -> str:
    parts = [str(path) if path is not None else "<DataFrame>"]
    if idx is not None:
        parts.append(f"line {idx + 2}")  # header is line 1, first data row line 2
    if pid is not None:
        parts.append(f"patient_id={pid!r}")
    if col is not None:
        parts.append(f"column {col!r}")
    return ", ".join(parts)


def _problem(out: pd.DataFrame, i: int | None, col: str, msg: str, file: str = "") -> Problem:
    pid = "" if i is None else str(out["patient_id"].iat[i])
    return Problem(None if i is None else i + 2, pid, col, file, msg)


def problem_text(p: Problem, src: Path | None) -> str:
    """One problem as the error line ``FILE, line N, patient_id='P', column 'c': problem``.

    Parameters
    ----------
    p : Problem
        The problem.
    src : Path or None
        The manifest file.

    Returns
    -------
    str
    """
    idx = None if p.line is None else p.line - 2
    return f"{_where(src, idx, p.column or None, p.patient_id if idx is not None else None)}: {p.problem}"


def _raise(problems: Sequence[Problem], src: Path | None) -> None:
    if problems:
        raise ManifestError("\n".join(problem_text(p, src) for p in problems), problems)


def _check_ids(out: pd.DataFrame) -> list[Problem]:
    """Empty, unsafe (:func:`bmstudy.utils.id_problem`) and duplicate patient ids (also ignoring letter case)."""
    problems = []
    for i, v in enumerate(out["patient_id"]):
        why = id_problem(v)
        if why is not None:
            problems.append(_problem(out, i, "patient_id", "empty patient_id" if why == "empty" else
                                     f"unsafe patient_id: {why} (it names output files and folders)"))
    ids = list(out["patient_id"])
    dup = out["patient_id"].duplicated(keep=False) & (out["patient_id"] != "")
    for i in np.flatnonzero(dup.to_numpy()):
        problems.append(_problem(out, int(i), "patient_id", "duplicate patient_id"))
    exact = set(out["patient_id"][dup])
    for group in duplicate_ids(v for v in ids if v != ""):
        if len(set(group)) > 1:
            for i, v in enumerate(ids):
                if v in group and v not in exact:
                    problems.append(_problem(out, i, "patient_id", f"duplicate patient_id ignoring letter case "
                                                                   f"({', '.join(sorted(set(group)))}: the same files "
                                                                   "on case-insensitive file systems)"))
    return problems


def _check_fields(df: pd.DataFrame, out: pd.DataFrame, age_range: tuple[float, float],
                  cancer_types: Sequence[str]) -> list[Problem]:
    """Normalise (in ``out``) and check age, sex, cancer type, split, site and manual seconds; returns the problems."""
    errors: list[Problem] = []

    def check_col(col: str, ok: Iterable[bool], msg: str) -> None:
        for i, good in enumerate(ok):
            if not good:
                errors.append(_problem(out, i, col, f"{msg} (got {df[col].iat[i]!r})"))

    age = pd.to_numeric(out["age"], errors="coerce")
    check_col("age", (np.isfinite(a) and age_range[0] <= a <= age_range[1] for a in age),
              f"age must be a number in [{age_range[0]:g}, {age_range[1]:g}]")
    out["age"] = age.astype(float)
    out["sex"] = out["sex"].str.upper()
    check_col("sex", (s in SEXES for s in out["sex"]), f"sex must be one of {sorted(SEXES)}")
    out["cancer_type"] = out["cancer_type"].str.lower()
    check_col("cancer_type", (c in cancer_types for c in out["cancer_type"]),
              f"cancer_type must be one of {list(cancer_types)}")
    out["split"] = out["split"].str.lower()
    check_col("split", (s in SPLITS for s in out["split"]), f"split must be one of {sorted(SPLITS)}")
    check_col("site", (s != "" for s in out["site"]), "site must not be empty")
    secs = pd.to_numeric(out["manual_seconds"], errors="coerce")
    raw_empty = df["manual_seconds"].isna() | (df["manual_seconds"].astype("string").str.strip() == "")
    check_col("manual_seconds", ((np.isfinite(s) and s >= 0) or e for s, e in zip(secs, raw_empty)),
              "manual_seconds must be a non-negative number or empty")
    out["manual_seconds"] = secs.astype(float)
    return errors


def _resolve_paths(out: pd.DataFrame, base: Path, check_files: bool) -> list[Problem]:
    """Resolve (in ``out``) the path columns against ``base``; returns the problems (empty or missing files)."""
    errors: list[Problem] = []
    for col in PATH_COLUMNS:
        if col not in out.columns:
            continue
        required = col in REQUIRED_COLUMNS
        resolved = []
        for i, raw in enumerate(out[col]):
            raw = "" if raw is None or (isinstance(raw, float) and np.isnan(raw)) else str(raw).strip()
            if raw == "":
                if required:
                    errors.append(_problem(out, i, col, "empty path"))
                resolved.append("")
                continue
            p = Path(raw)
            p = p if p.is_absolute() else (base / p)
            if check_files and not p.exists():
                errors.append(_problem(out, i, col, f"file not found: {p}", str(p)))
            resolved.append(str(p.resolve() if p.exists() else p))
        out[col] = resolved
    return errors


def _missing_columns(df: pd.DataFrame, src: Path | None) -> None:
    """Raise for missing required columns, with a hint when the file looks ``;``- or tab-separated."""
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if not missing:
        return
    hint = ""
    for sep, name in ((";", ";"), ("\t", "tab")):
        if any(sep in str(c) for c in df.columns):
            hint = (f"; the header looks {name}-separated ({str(df.columns[0])[:60]!r}...): "
                    "save the manifest comma-separated")
            break
    msg = f"missing required column(s) {missing}; expected {list(REQUIRED_COLUMNS)}{hint}"
    raise ManifestError(f"{_where(src)}: {msg}", [Problem(None, "", "", str(src or ""), msg)])


def validate_manifest(
    df: pd.DataFrame,
    base_dir: PathLike | None = None,
    *,
    source: PathLike | None = None,
    check_files: bool = True,
    age_range: tuple[float, float] = (18.0, 120.0),
    cancer_types: Sequence[str] = CANCER_TYPES,
) -> pd.DataFrame:
    """Validate a manifest DataFrame and return a normalised copy with absolute paths.

    Parameters
    ----------
    df : DataFrame
        The manifest as read.
    base_dir : str or Path, optional
        Folder relative paths are resolved against (default: the working directory).
    source : str or Path, optional
        The manifest file, named in errors.
    check_files : bool, default=True
        Check that the image/mask/brain-mask files exist.
    age_range : tuple of float, default=(18.0, 120.0)
        Accepted ages.
    cancer_types : sequence of str, default=CANCER_TYPES
        Accepted primary cancer types.

    Returns
    -------
    DataFrame

    Raises
    ------
    ManifestError
        Listing every problem found (one line each, also as ``.problems`` rows): missing columns (alone),
        empty, unsafe (not ``[A-Za-z0-9][A-Za-z0-9._-]*`` or holding ``..``) or duplicate patient ids
        (also ignoring letter case), bad field values, empty paths and missing files.
    """
    src = Path(source) if source is not None else None
    out, problems = _validated(df, base_dir, src, check_files, age_range, cancer_types)
    _raise(problems, src)
    return out


def _validated(df: pd.DataFrame, base_dir: PathLike | None, src: Path | None, check_files: bool,
               age_range: tuple[float, float], cancer_types: Sequence[str]) -> tuple[pd.DataFrame, list[Problem]]:
    """The normalised manifest and every problem found (missing columns raise at once)."""
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    _missing_columns(df, src)
    out = df.copy()
    for col in ("patient_id", "site", "split", "sex", "cancer_type", "image", "mask"):
        out[col] = out[col].astype("string").fillna("").str.strip().astype(object)
    problems = _check_ids(out)
    problems += _check_fields(df, out, age_range, cancer_types)
    problems += _resolve_paths(out, base, check_files)
    out = out.reset_index(drop=True)
    out.attrs["manifest_dir"] = str(base.resolve())
    if src is not None:
        out.attrs["manifest_path"] = str(src.resolve())
    return out, problems


def load_manifest(path: PathLike, *, check_files: bool = True, **kwargs) -> pd.DataFrame:
    """Read and validate ``data_manifest.csv``; paths are resolved against its folder.

    Parameters
    ----------
    path : str or Path
        The manifest CSV.
    check_files : bool, default=True
        Check that the files exist.
    **kwargs
        Passed to :func:`validate_manifest`.

    Returns
    -------
    DataFrame

    Raises
    ------
    ManifestError
        When the file is missing, empty (or a header without rows), not CSV, or invalid.
    """
    path = Path(path)
    df = _read_csv(path)
    return validate_manifest(df, path.parent, source=path, check_files=check_files, **kwargs)


def _read_csv(path: Path) -> pd.DataFrame:
    """The manifest CSV as read (``split`` empty, not NaN); ManifestError when missing, empty or not CSV."""
    if not path.is_file():
        raise ManifestError(f"manifest not found: {path}")
    if not path.read_bytes().strip():
        raise ManifestError(f"{path}: the manifest is empty (expected a header line with {list(REQUIRED_COLUMNS)} "
                            "and one row per patient)")
    try:
        df = pd.read_csv(path, dtype={"patient_id": str, "split": str, "site": str}, keep_default_na=True)
    except Exception as exc:  # pandas raises several types for malformed CSV
        raise ManifestError(f"{path}: cannot parse CSV: {exc}") from exc
    if df.empty:
        _missing_columns(df, path)
        raise ManifestError(f"{path}: the manifest has a header but no rows (one row per patient expected)")
    if "split" in df.columns:
        df["split"] = df["split"].fillna("")
    return df


def write_manifest(df: pd.DataFrame, path: PathLike) -> Path:
    """Write a manifest atomically, storing paths relative to the manifest's folder when possible.

    Parameters
    ----------
    df : DataFrame
    path : str or Path

    Returns
    -------
    Path
    """
    path = Path(path)
    out = df.copy()
    base = path.parent.resolve()
    for col in PATH_COLUMNS:
        if col in out.columns:
            out[col] = [_relative(v, base) for v in out[col]]
    cols = list(REQUIRED_COLUMNS) + [c for c in out.columns if c not in REQUIRED_COLUMNS]
    return atomic_to_csv(out[cols], path)


def _relative(value: object, base: Path) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)) or str(value) == "":
        return ""
    p = Path(str(value))
    if not p.is_absolute():
        return p.as_posix()
    try:
        return p.resolve().relative_to(base).as_posix()
    except ValueError:
        import os

        return Path(os.path.relpath(p.resolve(), base)).as_posix()


def manifest_hash(path: PathLike) -> str:
    """SHA-256 of the manifest file (for provenance records).

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    str
    """
    return file_sha256(path)


def training_problems(df: pd.DataFrame) -> list[str]:
    """Why a validated manifest cannot train the study model (empty when it can).

    Parameters
    ----------
    df : DataFrame
        A validated manifest (:func:`validate_manifest`).

    Returns
    -------
    list of str
        A message when no row has split ``train`` or empty (unsplit rows that ``bmstudy split`` assigns).
    """
    splits = df["split"].astype(str) if "split" in df.columns else pd.Series([], dtype=str)
    if len(df) and not splits.isin(["train", ""]).any():
        counts = ", ".join(f"{k}={v}" for k, v in splits.value_counts().sort_index().items())
        return [f"no training rows: every row's split is test or external ({counts}); the study trains on "
                "rows with split 'train' (or an empty split, which `bmstudy split` assigns)"]
    return []


# ---------------------------------------------------------------- CLI: bmstudy validate
def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``bmstudy validate`` options to ``parser``.

    Parameters
    ----------
    parser : argparse.ArgumentParser
    """
    parser.add_argument("manifest", help="path to data_manifest.csv")
    parser.add_argument("--no-check-files", action="store_true", help="do not check that files exist")
    parser.add_argument("--deep", action="store_true",
                        help="also open every image/mask header (readable, 3-D, finite geometry, complete data, "
                             "mask and brain mask on the image's grid); all problems in one table")
    parser.add_argument("--no-train-ok", action="store_true",
                        help="accept a manifest without training rows (prediction / evaluation only)")


def _problem_table(problems: Sequence[Problem]) -> str:
    table = pd.DataFrame([p._asdict() for p in problems]).rename(columns={"line": "row"})
    table["row"] = ["" if v is None or pd.isna(v) else int(v) for v in table["row"]]
    with pd.option_context("display.max_colwidth", 200, "display.width", 250):
        return table.to_string(index=False)


def cli_main(args: argparse.Namespace) -> int:
    """Run ``bmstudy validate``: load and validate the manifest, print patients per site and split.

    With ``--deep`` every problem (manifest fields and file headers) is printed as one table with
    the columns ``row, patient_id, column, file, problem``.

    Parameters
    ----------
    args : argparse.Namespace

    Returns
    -------
    int
        0 when valid; 1 with the problems printed (an unreadable or empty manifest raises
        :class:`ManifestError`, printed by :func:`bmstudy.cli.main`).
    """
    path = Path(args.manifest)
    check_files = not args.no_check_files
    df, problems = _validated(_read_csv(path), path.parent, path, check_files, (18.0, 120.0), CANCER_TYPES)
    if args.deep and check_files:
        problems += header_problems(df, skip={(p.line, p.column) for p in problems})
    if not getattr(args, "no_train_ok", False):
        problems += [Problem(None, "", "split", "", msg) for msg in training_problems(df)]
    if problems:
        print(f"{path}: {len(problems)} problem(s)\n{_problem_table(problems)}")
        return 1
    counts = df.groupby(["site", "split"]).size().to_string()
    print(f"{args.manifest}: {len(df)} patients, valid{' (headers checked)' if args.deep else ''}\n{counts}")
    return 0
