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

from ..utils import PathLike, atomic_to_csv, file_sha256

REQUIRED_COLUMNS: tuple[str, ...] = (
    "patient_id", "site", "split", "age", "sex", "cancer_type", "image", "mask", "manual_seconds",
)
PATH_COLUMNS: tuple[str, ...] = ("image", "mask", "brain_mask")
SPLITS: frozenset[str] = frozenset({"train", "test", "external", ""})
SEXES: frozenset[str] = frozenset({"M", "F"})
CANCER_TYPES: tuple[str, ...] = ("lung", "other")


class ManifestError(ValueError):
    """A manifest problem; the message names the file, row (CSV line) and column."""


def _where(path: Path | None, idx: int | None = None, col: str | None = None, pid: str | None = None) -> str:
    parts = [str(path) if path is not None else "<DataFrame>"]
    if idx is not None:
        parts.append(f"line {idx + 2}")  # header is line 1, first data row line 2
    if pid is not None:
        parts.append(f"patient_id={pid!r}")
    if col is not None:
        parts.append(f"column {col!r}")
    return ", ".join(parts)


def _check_ids(out: pd.DataFrame, src: Path | None) -> None:
    """Raise for empty or duplicate patient ids (before any other check)."""
    errors = [f"{_where(src, i, 'patient_id')}: empty patient_id" for i, v in enumerate(out["patient_id"]) if v == ""]
    dup = out["patient_id"].duplicated(keep=False) & (out["patient_id"] != "")
    for i in np.flatnonzero(dup.to_numpy()):
        errors.append(f"{_where(src, int(i), 'patient_id', out['patient_id'].iat[i])}: duplicate patient_id")
    if errors:
        raise ManifestError("\n".join(errors))


def _check_fields(df: pd.DataFrame, out: pd.DataFrame, src: Path | None, age_range: tuple[float, float],
                  cancer_types: Sequence[str]) -> list[str]:
    """Normalise (in ``out``) and check age, sex, cancer type, split, site and manual seconds; returns the errors."""
    errors: list[str] = []

    def check_col(col: str, ok: Iterable[bool], msg: str) -> None:
        for i, good in enumerate(ok):
            if not good:
                errors.append(f"{_where(src, i, col, out['patient_id'].iat[i])}: {msg} (got {df[col].iat[i]!r})")

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


def _resolve_paths(out: pd.DataFrame, src: Path | None, base: Path, check_files: bool) -> list[str]:
    """Resolve (in ``out``) the path columns against ``base``; returns the errors (empty or missing files)."""
    errors: list[str] = []
    for col in PATH_COLUMNS:
        if col not in out.columns:
            continue
        required = col in REQUIRED_COLUMNS
        resolved = []
        for i, raw in enumerate(out[col]):
            raw = "" if raw is None or (isinstance(raw, float) and np.isnan(raw)) else str(raw).strip()
            if raw == "":
                if required:
                    errors.append(f"{_where(src, i, col, out['patient_id'].iat[i])}: empty path")
                resolved.append("")
                continue
            p = Path(raw)
            p = p if p.is_absolute() else (base / p)
            if check_files and not p.exists():
                errors.append(f"{_where(src, i, col, out['patient_id'].iat[i])}: file not found: {p}")
            resolved.append(str(p.resolve() if p.exists() else p))
        out[col] = resolved
    return errors


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
        On the first class of problem found, listing every offending row.
    """
    src = Path(source) if source is not None else None
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ManifestError(f"{_where(src)}: missing required column(s) {missing}; expected {list(REQUIRED_COLUMNS)}")
    out = df.copy()
    for col in ("patient_id", "site", "split", "sex", "cancer_type", "image", "mask"):
        out[col] = out[col].astype("string").fillna("").str.strip().astype(object)
    _check_ids(out, src)
    errors = _check_fields(df, out, src, age_range, cancer_types)
    errors += _resolve_paths(out, src, base, check_files)
    if errors:
        raise ManifestError("\n".join(errors))
    out = out.reset_index(drop=True)
    out.attrs["manifest_dir"] = str(base.resolve())
    if src is not None:
        out.attrs["manifest_path"] = str(src.resolve())
    return out


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
        When the file is missing, not CSV, or invalid.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest not found: {path}")
    try:
        df = pd.read_csv(path, dtype={"patient_id": str, "split": str, "site": str}, keep_default_na=True)
    except Exception as exc:  # pandas raises several types for malformed CSV
        raise ManifestError(f"{path}: cannot parse CSV: {exc}") from exc
    if "split" in df.columns:
        df["split"] = df["split"].fillna("")
    return validate_manifest(df, path.parent, source=path, check_files=check_files, **kwargs)


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


# ---------------------------------------------------------------- CLI: bmstudy validate
def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``bmstudy validate`` options to ``parser``.

    Parameters
    ----------
    parser : argparse.ArgumentParser
    """
    parser.add_argument("manifest", help="path to data_manifest.csv")
    parser.add_argument("--no-check-files", action="store_true", help="do not check that files exist")


def cli_main(args: argparse.Namespace) -> int:
    """Run ``bmstudy validate``: load and validate the manifest, print patients per site and split.

    Parameters
    ----------
    args : argparse.Namespace

    Returns
    -------
    int
        0 (an invalid manifest raises :class:`ManifestError`).
    """
    df = load_manifest(args.manifest, check_files=not args.no_check_files)
    counts = df.groupby(["site", "split"]).size().to_string()
    print(f"{args.manifest}: {len(df)} patients, valid\n{counts}")
    return 0
