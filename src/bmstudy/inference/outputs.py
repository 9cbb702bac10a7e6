"""What inference writes: the two output files of a case and ``timings.csv``.

Per case ``out_dir/<pid>.nii.gz`` (uint8 mask) and ``out_dir/<pid>_prob.nii.gz`` (float32
probabilities); per cohort ``out_dir/timings.csv`` with :data:`TIMING_COLUMNS` first, rewritten
atomically after every case (rows of earlier runs for other patients are kept).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..utils import PathLike, atomic_to_csv, get_logger

__all__ = ["TIMING_COLUMNS", "output_paths", "TimingTable", "failed_row", "timings_frame"]

log = get_logger("bmstudy.inference.outputs")

#: Columns of ``timings.csv`` (the contract of DESIGN.md first, then extras).
TIMING_COLUMNS: tuple[str, ...] = (
    "patient_id", "preprocess_s", "model_s", "postprocess_s", "total_s", "status", "error",
    "n_windows", "input_shape", "model_shape", "image",
)


def output_paths(out_dir: PathLike, patient_id: str) -> tuple[Path, Path]:
    """The two output files of a case.

    Parameters
    ----------
    out_dir : path-like
        Prediction folder.
    patient_id : str
        The case's id.

    Returns
    -------
    (mask_path, prob_path) : tuple of Path
        ``out_dir/<pid>.nii.gz`` and ``out_dir/<pid>_prob.nii.gz``.
    """
    d = Path(out_dir)
    return d / f"{patient_id}.nii.gz", d / f"{patient_id}_prob.nii.gz"


def _read_timings(path: Path) -> dict[str, dict[str, Any]]:
    """``{patient_id: row}`` of an existing ``timings.csv`` ({} when missing or unreadable)."""
    if not path.is_file():
        return {}
    try:
        text_cols = ("patient_id", "status", "error", "input_shape", "model_shape", "image")
        df = pd.read_csv(path, dtype={c: str for c in text_cols})
        for c in text_cols:
            if c in df.columns:
                df[c] = df[c].fillna("")
    except Exception as exc:  # noqa: BLE001 - a corrupt table only disables skipping
        log.warning("cannot read %s (%s); finished cases will be recomputed", path, exc)
        return {}
    if "patient_id" not in df.columns:
        return {}
    return {str(r["patient_id"]): dict(r) for r in df.to_dict("records")}


def timings_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows as a DataFrame with the contract's columns first (missing ones added empty)."""
    df = pd.DataFrame(rows)
    for c in TIMING_COLUMNS:
        if c not in df.columns:
            df[c] = np.nan
    return df[list(TIMING_COLUMNS) + [c for c in df.columns if c not in TIMING_COLUMNS]]


class TimingTable:
    """``timings.csv``: the rows of earlier runs, updated and rewritten after every case."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows = _read_timings(path)

    def finished(self, out_dir: PathLike, pid: str) -> dict[str, Any] | None:
        """The recorded row of a case whose last run was ``ok`` and whose outputs exist, else None."""
        prev = self.rows.get(pid)
        if prev is None or str(prev.get("status", "")) != "ok":
            return None
        return prev if all(p.is_file() for p in output_paths(out_dir, pid)) else None

    def record(self, row: dict[str, Any]) -> None:
        """Put ``row`` last (replacing the case's earlier row) and rewrite the table."""
        self.rows.pop(row["patient_id"], None)
        self.rows[row["patient_id"]] = row
        self.write()

    def write(self) -> None:
        """Write the table atomically (:data:`TIMING_COLUMNS` first)."""
        atomic_to_csv(timings_frame(list(self.rows.values())), self.path)


def failed_row(pid: str, image: Path, exc: BaseException) -> dict[str, Any]:
    """The timing row of a failed case: ``status='failed'``, the error naming the case and file, no times."""
    msg = str(exc)
    if not msg.startswith(f"case {pid!r}"):
        msg = f"case {pid!r} ({image}): {type(exc).__name__}: {msg}"
    return {"patient_id": pid, "preprocess_s": np.nan, "model_s": np.nan, "postprocess_s": np.nan,
            "total_s": np.nan, "status": "failed", "error": msg,
            "n_windows": np.nan, "input_shape": "", "model_shape": "", "image": str(image),
            "network_s": np.nan}
