"""What inference writes: the two output files of a case and ``timings.csv``.

Per case ``out_dir/<pid>.nii.gz`` (uint8 mask) and ``out_dir/<pid>_prob.nii.gz`` (float32
probabilities), built with :func:`bmstudy.utils.safe_join` (an id never leaves ``out_dir``); per
cohort ``out_dir/timings.csv`` with :data:`TIMING_COLUMNS` first, rewritten atomically after every
case (rows of earlier runs for other patients are kept). Each row also records what produced the
case (:data:`RECORD_COLUMNS`: model, code, settings and input content hashes); a case counts as
finished only when its row is ``ok``, its files exist and its record equals this run's.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ..io.hashing import HashCache
from ..utils import PathLike, atomic_to_csv, get_logger, params_hash, safe_join, source_hash

__all__ = ["TIMING_COLUMNS", "RECORD_COLUMNS", "CODE_MODULES", "HASH_CACHE_NAME", "output_paths", "TimingTable",
           "failed_row", "timings_frame", "model_hash", "case_records"]

log = get_logger("bmstudy.inference.outputs")

#: Columns of ``timings.csv`` (the contract of DESIGN.md first, then extras).
TIMING_COLUMNS: tuple[str, ...] = (
    "patient_id", "preprocess_s", "model_s", "postprocess_s", "total_s", "status", "error",
    "n_windows", "input_shape", "model_shape", "image",
)
#: What produced a case (recorded in its ``timings.csv`` row): SHA-256 of the model files
#: (``model_best.keras`` + ``train_config.json``), of the source of the modules that predict, of the
#: inference settings and of the input image (+ brain mask) content.
RECORD_COLUMNS: tuple[str, ...] = ("model_hash", "code_hash", "settings_hash", "input_hash")


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

    Raises
    ------
    ValueError
        For an id that would leave ``out_dir`` (``../x``, ``a/b``, ``/abs``).
    """
    return safe_join(out_dir, f"{patient_id}.nii.gz"), safe_join(out_dir, f"{patient_id}_prob.nii.gz")


def _read_timings(path: Path) -> dict[str, dict[str, Any]]:
    """``{patient_id: row}`` of an existing ``timings.csv`` ({} when missing or unreadable)."""
    if not path.is_file():
        return {}
    try:
        text_cols = ("patient_id", "status", "error", "input_shape", "model_shape", "image", *RECORD_COLUMNS)
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

    def finished(self, out_dir: PathLike, pid: str, record: dict[str, str] | None = None) -> dict[str, Any] | None:
        """The recorded row of a case whose last run was ``ok``, whose outputs exist and whose record
        (:data:`RECORD_COLUMNS`) equals ``record`` (when given), else None."""
        prev = self.rows.get(pid)
        if prev is None or str(prev.get("status", "")) != "ok":
            return None
        if record is not None:
            changed = [k for k, v in record.items() if str(prev.get(k, "")) != str(v)]
            if changed:
                log.info("case %s: predicted earlier with another %s: predicted again", pid,
                         ", ".join(k.removesuffix("_hash") for k in changed))
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


#: Hidden file of ``out_dir`` caching the input and model files' content hashes (by path + size + mtime).
HASH_CACHE_NAME = ".bmstudy_hashes.json"
#: The modules whose source produces a prediction (preprocessing's and inference's).
CODE_MODULES: tuple[str, ...] = (
    "bmstudy.inference.predictor", "bmstudy.inference.sliding_window", "bmstudy.inference.network",
    "bmstudy.inference.outputs",
)


def model_hash(hashes: HashCache, model_dir: PathLike | None, predict_fn: Any,
               config: Mapping[str, Any] | None) -> str:
    """SHA-256 of the network: the folder's ``model_best.keras`` + ``train_config.json`` content, a given
    config's content and a given predict_fn's qualified name (a custom function is known by name only).

    Parameters
    ----------
    hashes : HashCache
        Content hashes by path + size + mtime.
    model_dir : path-like or None
        Training output folder.
    predict_fn : callable or None
        A network given instead of the folder's model.
    config : mapping or None
        A training config given instead of the folder's.

    Returns
    -------
    str
        64 hex digits.
    """
    import hashlib

    parts = []
    if model_dir is not None:
        for name in ("model_best.keras", "train_config.json"):
            f = Path(model_dir) / name
            parts.append(f"{name}={hashes.sha256(f) if f.is_file() else 'absent'}")
    if config is not None:
        parts.append(f"config={params_hash(dict(config))}")
    if predict_fn is not None:
        fn = predict_fn if hasattr(predict_fn, "__qualname__") else type(predict_fn)
        parts.append(f"predict_fn={getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', repr(fn))}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def case_records(cases: Sequence[Any], hashes: HashCache, model_dir: PathLike | None,
                 predict_fn: Any, config: Mapping[str, Any] | None, s: Mapping[str, Any],
                 skull_strip: str | None) -> dict[str, dict[str, str]]:
    """What produces each case: ``{pid: {model_hash, code_hash, settings_hash, input_hash}}``.

    Parameters
    ----------
    cases : sequence of PredictionCase
        The cases (image and brain mask content is hashed through ``hashes``).
    hashes : HashCache
        Content hashes by path + size + mtime.
    model_dir, predict_fn, config
        The network as :func:`bmstudy.inference.predict_cohort` got it (:func:`model_hash`).
    s : mapping
        The inference settings (``splits`` and ``batch_size`` do not change a prediction: left out).
    skull_strip : str or None
        The skull-strip override.

    Returns
    -------
    dict of str to dict
        :data:`RECORD_COLUMNS` per patient id.
    """
    from ..preprocessing.store import CODE_MODULES as PREPROCESS_MODULES

    model = model_hash(hashes, model_dir, predict_fn, config)
    code = source_hash(*PREPROCESS_MODULES, *CODE_MODULES)
    settings = params_hash({k: v for k, v in s.items() if k not in ("splits", "batch_size")} |
                           {"skull_strip": skull_strip})
    out = {}
    for c in cases:
        inputs = [hashes.sha256(c.image) if c.image.exists() else "absent"]
        if c.brain_mask is not None:
            inputs.append(hashes.sha256(c.brain_mask) if Path(c.brain_mask).exists() else "absent")
        out[c.patient_id] = {"model_hash": model, "code_hash": code, "settings_hash": settings,
                             "input_hash": params_hash({"inputs": inputs})}
    return out
