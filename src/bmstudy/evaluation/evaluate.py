"""Cohort evaluation: ``metrics.csv``, ``lesions.csv`` and ``score_hists.npz`` of a prediction folder.

:func:`evaluate_cohort` evaluates every patient of the chosen manifest splits with
:func:`bmstudy.evaluation.case.evaluate_case` (the paper's eight voxel-wise metrics, lesion-wise
detection, and the per-patient score histograms that the voxel-level DeLong test and the
patient-level cluster bootstrap of :mod:`bmstudy.statistics` consume). The per-case loop is
:func:`bmstudy.cases.run_cases` (serial or ``n_jobs`` worker processes, progress bar): one failing
case is reported (``status='failed'`` and the error naming case and file) and never loses the
others' results.

Outputs (``out_dir``, all written atomically): ``metrics.csv`` (one row per patient: metrics,
demographics, split, site, ``manual_seconds``, ``model_seconds``, ``status``, ``error``, then the
BraTS-METS lesion-wise ``brats_*`` columns, ``hd95``, ``nsd`` and the provenance columns
``eval_code_hash``, ``eval_params_hash``, ``inputs_sha256``), ``lesions.csv`` (lesion_table rows +
``patient_id`` and ``split``; both diameters), ``froc.csv`` (per-lesion and false-positive candidate
scores for the cohort FROC, :func:`load_froc`), ``score_hists.npz`` (per-patient histograms, read back
with :func:`bmstudy.evaluation.load_score_hists`) and ``evaluate_params.json`` (the parameters, the
code hash and every input's content hash: outputs made by the same code and parameters from inputs
with the same content are read back instead of recomputed; :mod:`bmstudy.evaluation.provenance`).
Also the ``bmstudy evaluate`` command.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from ..cases import run_cases
from ..plan import EvalParams
from ..utils import PathLike, atomic_to_csv, atomic_write_json, get_logger, params_hash
from .case import FROC_COLUMNS, evaluate_case, prediction_paths
from .froc import LesionScores, scores_from_rows
from .groups import AGE_CUTOFF, age_group
from .histograms import save_score_hists
from ..io.hashing import HashCache
from .provenance import code_hash, digest_of, input_sha256
from .voxel import METRIC_KEYS

__all__ = [
    "METRICS",
    "OUTPUT_FILES",
    "age_group",
    "evaluate_cohort",
    "load_results",
    "load_froc",
    "add_cli_arguments",
    "cli_main",
]

log = get_logger("bmstudy.evaluation.evaluate")

#: The paper's eight voxel-wise metrics, in the order of its Table 2.
METRICS: tuple[str, ...] = METRIC_KEYS
DEMOGRAPHIC_COLUMNS: tuple[str, ...] = ("patient_id", "split", "site", "age", "age_group", "sex", "cancer_type")
#: Files written by :func:`evaluate_cohort` (``evaluate_params.json`` last: it marks a complete run).
OUTPUT_FILES: tuple[str, ...] = ("metrics.csv", "lesions.csv", "froc.csv", "score_hists.npz", "evaluate_params.json")


def _evaluate_record(record: dict[str, Any], *, pred_dir: Path, brain_mask: bool,
                     case_kwargs: dict[str, Any]) -> dict[str, Any]:
    """Status row of one manifest record for :func:`bmstudy.cases.run_cases`.

    ``status`` is ``ok`` (the results in ``payload``) or ``failed`` with the error message as
    ``reason``: one bad case never loses the others.
    """
    pid = str(record["patient_id"])
    bpath = record.get("brain_mask") if brain_mask else None
    if brain_mask and (not isinstance(bpath, str) or not bpath):
        return {"patient_id": pid, "status": "failed",
                "reason": f"case {pid!r}: brain_mask=True but the manifest gives no brain mask"}
    try:
        payload = evaluate_case(pid, record["mask"], pred_dir, brain_mask_path=bpath, **case_kwargs)
    except Exception as exc:  # noqa: BLE001  reported in metrics.csv
        return {"patient_id": pid, "status": "failed", "reason": str(exc)}
    return {"patient_id": pid, "status": "ok", "reason": "", "payload": payload}


# --------------------------------------------------------------------------- cohort
def _input_files(cases: pd.DataFrame, predictions_dir: Path, brain_mask: bool) -> list[Path]:
    files: list[Path] = [predictions_dir / "timings.csv"]
    for pid, mask in zip(cases["patient_id"], cases["mask"]):
        files.append(Path(mask))
        files.extend(prediction_paths(predictions_dir, str(pid)))
    if brain_mask:
        files.extend(Path(p) for p in cases["brain_mask"] if isinstance(p, str) and p)
    return files


def _stored_run(out_dir: Path) -> dict[str, Any]:
    """``evaluate_params.json`` of a previous run ({} when absent or unreadable)."""
    try:
        return dict(json.loads((out_dir / "evaluate_params.json").read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return {}


def _up_to_date(out_dir: Path, inputs: Iterable[Path], params: dict[str, Any], cache: HashCache) -> bool:
    """Same parameters (code hash included) and every input with the recorded content hash."""
    if not all((out_dir / name).is_file() for name in OUTPUT_FILES):
        return False
    stored = _stored_run(out_dir)
    if stored.get("params_hash") != params_hash(params):
        return False
    recorded = stored.get("input_sha256") or {}
    return all(recorded.get(str(p)) == input_sha256(cache, p) for p in inputs)


def _read_timings(predictions_dir: Path) -> pd.Series | None:
    path = predictions_dir / "timings.csv"
    if not path.is_file():
        return None
    t = pd.read_csv(path, dtype={"patient_id": str})
    if "patient_id" not in t.columns or "total_s" not in t.columns:
        raise ValueError(f"{path}: timings must have columns 'patient_id' and 'total_s' (got {list(t.columns)})")
    t = t.drop_duplicates("patient_id", keep="last")
    return pd.Series(pd.to_numeric(t["total_s"], errors="coerce").to_numpy(), index=t["patient_id"].astype(str))


def _settings(params: EvalParams | None, **given: Any) -> dict[str, Any]:
    """The evaluation settings: ``params`` (when given) replaces the keyword values."""
    if params is None:
        return {**given, "eval_params": EvalParams()}
    return {"splits": params.splits, "threshold": params.threshold, "brain_mask": params.brain_mask,
            "min_lesion_mm3": params.min_lesion_mm3, "n_bins": params.n_bins,
            "mask_labels": params.mask_labels, "label_threshold": params.label_threshold, "eval_params": params}


def _select_cases(manifest_df: pd.DataFrame, pred_dir: Path, s: dict[str, Any]) -> pd.DataFrame:
    """The manifest rows to evaluate (after checking the inputs)."""
    if not 0.0 <= float(s["threshold"]) <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {s['threshold']}")
    if not pred_dir.is_dir():
        raise FileNotFoundError(f"predictions folder not found: {pred_dir}")
    for col in ("patient_id", "split", "mask"):
        if col not in manifest_df.columns:
            raise ValueError(f"manifest has no column {col!r}")
    if s["brain_mask"] and "brain_mask" not in manifest_df.columns:
        raise ValueError("brain_mask=True but the manifest has no 'brain_mask' column")
    splits = s["splits"]
    cases = manifest_df if splits is None else manifest_df[manifest_df["split"].isin(list(splits))]
    cases = cases.reset_index(drop=True)
    if cases.empty:
        raise ValueError(f"no patients in splits {list(splits or [])} of the manifest")
    return cases


def _run_params(s: dict[str, Any], pred_dir: Path, cases: pd.DataFrame) -> dict[str, Any]:
    """The parameters recorded in ``evaluate_params.json`` (their hash decides the up-to-date skip)."""
    params: dict[str, Any] = {
        "splits": None if s["splits"] is None else list(s["splits"]), "threshold": float(s["threshold"]),
        "brain_mask": bool(s["brain_mask"]), "min_lesion_mm3": s["min_lesion_mm3"], "n_bins": s["n_bins"],
        "predictions_dir": str(pred_dir.resolve()), "code": code_hash(),
        # the evaluated rows themselves (ids, paths, demographics): an edited manifest recomputes
        "cases": params_hash({c: cases[c].astype(str).tolist() for c in cases.columns}),
    }
    # label-map settings only when used, so runs without them keep their recorded hash
    if s.get("mask_labels") is not None:
        params["mask_labels"] = [int(v) for v in s["mask_labels"]]
    if s.get("label_threshold") is not None:
        params["label_threshold"] = float(s["label_threshold"])
    ep: EvalParams = s["eval_params"]
    params.update(nsd_tolerance_mm=float(ep.nsd_tolerance_mm), froc_candidate_threshold=float(ep.froc_candidate_threshold),
                  brats_dilation=int(ep.brats_dilation), brats_min_volume_mm3=float(ep.brats_min_volume_mm3),
                  empty=str(ep.empty))
    return params


def _base_row(rec: dict[str, Any], timings: pd.Series | None) -> dict[str, Any]:
    """Demographic and timing columns of one manifest record."""
    pid = str(rec["patient_id"])
    return {
        "patient_id": pid,
        "split": rec.get("split", ""),
        "site": rec.get("site", ""),
        "age": rec.get("age", np.nan),
        "age_group": age_group(rec.get("age", np.nan)),
        "sex": rec.get("sex", ""),
        "cancer_type": rec.get("cancer_type", ""),
        "manual_seconds": rec.get("manual_seconds", np.nan),
        "model_seconds": float(timings.get(pid, np.nan)) if timings is not None else np.nan,
    }


Hists = dict[str, tuple[np.ndarray, np.ndarray]]


def _case_files(rec: dict[str, Any], pred_dir: Path, brain_mask: bool) -> list[Path]:
    """The files one case's metrics are computed from (reference, both prediction files, brain mask)."""
    files = [Path(rec["mask"]), *prediction_paths(pred_dir, str(rec["patient_id"]))]
    bpath = rec.get("brain_mask") if brain_mask else None
    if isinstance(bpath, str) and bpath:
        files.append(Path(bpath))
    return files


def _collect(records: list[dict[str, Any]], status_rows: list[dict[str, Any]], timings: pd.Series | None,
             provenance: list[dict[str, str]]) -> tuple[pd.DataFrame, pd.DataFrame, Hists, pd.DataFrame]:
    """``(metrics, lesions, hists, froc rows)`` of the cohort from the per-case status rows (input order)."""
    rows: list[dict[str, Any]] = []
    lesion_frames: list[pd.DataFrame] = []
    froc_frames: list[pd.DataFrame] = []
    hists: Hists = {}
    for rec, status, prov in zip(records, status_rows, provenance):
        base = _base_row(rec, timings)
        if status.get("status") != "ok":
            rows.append({**base, "status": "failed", "error": str(status.get("reason", "")), **prov})
            continue
        row, lesions, hist, froc = status["payload"]
        row = {k: v for k, v in row.items() if k != "patient_id"}
        rows.append({**base, **row, "status": "ok", "error": "", **prov})
        lesions.insert(1, "split", base["split"])
        lesion_frames.append(lesions)
        froc = froc.copy()
        froc.insert(1, "split", base["split"])
        froc_frames.append(froc)
        hists[base["patient_id"]] = hist
    df = _order_columns(pd.DataFrame(rows))
    lesions_df = pd.concat(lesion_frames, ignore_index=True) if lesion_frames else pd.DataFrame(
        columns=["patient_id", "split"])
    froc_df = pd.concat(froc_frames, ignore_index=True) if froc_frames else pd.DataFrame(
        columns=["patient_id", "split", *FROC_COLUMNS[1:]])
    return df, lesions_df, hists, froc_df


def _evaluate_cases(cases: pd.DataFrame, pred_dir: Path, s: dict[str, Any], run_params: dict[str, Any],
                    cache: HashCache, *, n_jobs: int, progress: bool,
                    ) -> tuple[pd.DataFrame, pd.DataFrame, Hists, pd.DataFrame]:
    """Run :func:`bmstudy.cases.run_cases` over the cases; ``(metrics, lesions, hists, froc)`` in manifest order."""
    timings = _read_timings(pred_dir)
    records = cases.to_dict("records")
    case_kwargs = {"threshold": s["threshold"], "min_lesion_mm3": s["min_lesion_mm3"], "n_bins": s["n_bins"],
                   "mask_labels": s["mask_labels"], "label_threshold": s["label_threshold"],
                   "params": s["eval_params"]}
    t0 = time.perf_counter()
    result = run_cases(_evaluate_record, records, n_jobs=int(n_jobs), desc="evaluate", progress=progress,
                       kwargs={"pred_dir": pred_dir, "brain_mask": bool(s["brain_mask"]), "case_kwargs": case_kwargs})
    common = {"eval_code_hash": run_params["code"], "eval_params_hash": params_hash(run_params)}
    provenance = [{**common, "inputs_sha256": digest_of(input_sha256(cache, f) for f in
                                                        _case_files(r, pred_dir, bool(s["brain_mask"])))}
                  for r in records]
    df, lesions_df, hists, froc_df = _collect(records, result.rows, timings, provenance)
    n_failed = int((df["status"] != "ok").sum())
    log.info("evaluated %d case(s) in %.1f s: %d ok, %d failed", len(df), time.perf_counter() - t0,
             len(df) - n_failed, n_failed)
    return df, lesions_df, hists, froc_df


def evaluate_cohort(
    manifest_df: pd.DataFrame,
    predictions_dir: PathLike,
    out_dir: PathLike | None = None,
    splits: Sequence[str] | None = ("test", "external"),
    threshold: float = 0.5,
    brain_mask: bool = False,
    min_lesion_mm3: float | None = None,
    *,
    n_bins: int | None = None,
    mask_labels: Sequence[int] | None = None,
    label_threshold: float | None = None,
    params: EvalParams | None = None,
    force: bool = False,
    progress: bool = True,
    n_jobs: int = 1,
) -> pd.DataFrame:
    """Evaluate every patient of ``splits`` against its prediction; one row per patient.

    Parameters
    ----------
    manifest_df : DataFrame
        Validated manifest (:func:`bmstudy.io.load_manifest`, absolute paths).
    predictions_dir : path-like
        Folder with ``<pid>_prob.nii.gz`` / ``<pid>.nii.gz`` and optional ``timings.csv`` (its
        ``total_s`` becomes ``model_seconds``).
    out_dir : path-like, optional
        Where :data:`OUTPUT_FILES` go (nothing written if None); outputs of the same code, parameters
        and input contents are read back instead of recomputed, unless ``force``.
    splits : sequence of str or None, default=('test', 'external')
        Manifest splits to evaluate (None: every row).
    threshold : float, default=0.5
        Probability threshold of the binary prediction (paper: 0.5).
    brain_mask : bool, default=False
        Restrict voxel metrics to the manifest's ``brain_mask`` (the paper used whole volumes).
    min_lesion_mm3 : float, optional
        Smallest connected component counted as a lesion (None: the library default).
    n_bins : int, optional
        Score-histogram resolution (None: the library default).
    mask_labels, label_threshold : optional
        How label-map references become 0/1 masks (default: references must hold only 0/1).
    params : EvalParams, optional
        The plan's evaluation settings: replace the keywords when given (NSD tolerance, FROC, BraTS
        and ``empty`` settings come only from it; default ``EvalParams()``).
    force, progress : bool
        Recompute even when the outputs are up to date (default False); show a progress bar (True).
    n_jobs : int, default=1
        Worker processes (each holds one case's volumes in memory).

    Returns
    -------
    DataFrame
        ``patient_id, split, site, age, age_group, sex, cancer_type, manual_seconds, model_seconds,
        status, error`` + the eight metrics + lesion-wise, surface and provenance columns (module
        docstring). Failed cases keep their row with ``status='failed'``, the error, NaN metrics.

    Raises
    ------
    FileNotFoundError
        When ``predictions_dir`` does not exist.
    ValueError
        A threshold outside [0, 1], ``n_jobs < 1``, missing manifest columns or no patient in ``splits``.
    """
    if int(n_jobs) < 1:
        raise ValueError(f"n_jobs must be >= 1, got {n_jobs}")
    s = _settings(params, splits=splits, threshold=threshold, brain_mask=brain_mask, min_lesion_mm3=min_lesion_mm3,
                  n_bins=n_bins, mask_labels=mask_labels, label_threshold=label_threshold)
    pred_dir = Path(predictions_dir)
    cases = _select_cases(manifest_df, pred_dir, s)
    run_params = _run_params(s, pred_dir, cases)
    out = Path(out_dir) if out_dir is not None else None
    cache = HashCache(entries=None if out is None else _stored_run(out).get("hash_cache"))
    inputs = _input_files(cases, pred_dir, s["brain_mask"])
    if out is not None and not force and _up_to_date(out, inputs, run_params, cache):
        log.info("evaluation in %s is up to date; reading it back (force=True recomputes)", out)
        return load_results(out)[0]
    df, lesions_df, hists, froc_df = _evaluate_cases(cases, pred_dir, s, run_params, cache, n_jobs=n_jobs, progress=progress)
    if out is not None:
        _write_outputs(out, df, lesions_df, hists, froc_df, run_params, inputs, cache)
    return df


def _order_columns(df: pd.DataFrame) -> pd.DataFrame:
    for m in METRICS:
        if m not in df.columns:
            df[m] = np.nan
    first = [*DEMOGRAPHIC_COLUMNS, "manual_seconds", "model_seconds", "status", "error", *METRICS]
    first = [c for c in first if c in df.columns]
    return df[first + [c for c in df.columns if c not in first]]


def _write_outputs(out: Path, df: pd.DataFrame, lesions: pd.DataFrame, hists: Hists, froc: pd.DataFrame,
                   params: dict[str, Any], inputs: Iterable[Path], cache: HashCache) -> None:
    digests = {str(p): input_sha256(cache, p) for p in inputs}
    out.mkdir(parents=True, exist_ok=True)
    atomic_to_csv(df, out / "metrics.csv")
    atomic_to_csv(lesions, out / "lesions.csv")
    atomic_to_csv(froc, out / "froc.csv")
    save_score_hists(out / "score_hists.npz", hists)
    # written last: its presence + hashes mark a complete, reusable evaluation
    atomic_write_json(out / "evaluate_params.json", {"params": params, "params_hash": params_hash(params),
                                                     "input_sha256": digests, "hash_cache": cache.to_dict()})


def load_results(out_dir: PathLike) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read the per-patient metrics and the lesion rows written by :func:`evaluate_cohort`.

    Parameters
    ----------
    out_dir : path-like
        The evaluation folder (``metrics.csv``, ``lesions.csv``).

    Returns
    -------
    metrics, lesions : DataFrame
        String ids and categorical columns kept as strings; ``error`` is ``''`` for ok cases.

    Raises
    ------
    FileNotFoundError
        When ``metrics.csv`` or ``lesions.csv`` is missing.
    """
    out = Path(out_dir)
    dtypes = {"patient_id": str, "split": str, "site": str, "sex": str, "cancer_type": str,
              "age_group": str, "status": str, "error": str, "prediction_file": str,
              "eval_code_hash": str, "eval_params_hash": str, "inputs_sha256": str}
    metrics = pd.read_csv(out / "metrics.csv", dtype=dtypes, keep_default_na=False, na_values=[""])
    metrics["error"] = metrics["error"].fillna("") if "error" in metrics.columns else ""
    try:
        lesions = pd.read_csv(out / "lesions.csv", dtype={"patient_id": str, "split": str})
    except pd.errors.EmptyDataError:
        lesions = pd.DataFrame(columns=["patient_id", "split"])
    return metrics, lesions


def load_froc(out_dir: PathLike, metrics: pd.DataFrame | None = None,
              splits: Sequence[str] | None = None) -> list[LesionScores]:
    """Per-patient FROC candidates of an evaluation (``froc.csv``) for :func:`bmstudy.evaluation.froc_curve`.

    Parameters
    ----------
    out_dir : path-like
        The evaluation folder.
    metrics : DataFrame, optional
        ``metrics.csv`` (read when None): every ``ok`` patient of ``splits`` is included, also those
        without any lesion or candidate (they count in the FP-per-patient rate).
    splits : sequence of str, optional
        Restrict to these splits (default: all).

    Returns
    -------
    list of LesionScores

    Raises
    ------
    FileNotFoundError
        When ``froc.csv`` is missing (an evaluation made before FROC was added: re-run it).
    """
    out = Path(out_dir)
    if metrics is None:
        metrics = load_results(out)[0]
    ok = metrics[metrics["status"] == "ok"]
    if splits is not None:
        ok = ok[ok["split"].isin(list(splits))]
    path = out / "froc.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: re-run the evaluation to get the FROC candidates")
    try:
        rows = pd.read_csv(path, dtype={"patient_id": str, "split": str, "kind": str})
    except pd.errors.EmptyDataError:
        rows = pd.DataFrame(columns=["patient_id", "split", *FROC_COLUMNS[1:]])
    return scores_from_rows(rows, patients=ok["patient_id"].astype(str).tolist())


# --------------------------------------------------------------------------- CLI: bmstudy evaluate
def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``bmstudy evaluate``."""
    parser.add_argument("manifest", help="path to data_manifest.csv")
    parser.add_argument("predictions", help="folder written by `bmstudy predict`")
    parser.add_argument("--out", required=True, help="output folder for metrics.csv, lesions.csv, score_hists.npz")
    parser.add_argument("--splits", nargs="+", default=["test", "external"], help="splits to evaluate")
    parser.add_argument("--threshold", type=float, default=0.5, help="probability threshold (default 0.5)")
    parser.add_argument("--brain-mask", action="store_true", help="restrict voxel metrics to the brain mask")
    parser.add_argument("--min-lesion-mm3", type=float, default=None,
                        help="smallest component counted as a lesion (default: the library default, 3 mm^3)")
    parser.add_argument("--mask-labels", type=int, nargs="+", default=None,
                        help="label values forming the lesion in label-map references (e.g. 4)")
    parser.add_argument("--label-threshold", type=float, default=None,
                        help="reference voxels above this value form the lesion")
    parser.add_argument("--force", action="store_true", help="recompute even if outputs are up to date")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")


def cli_main(args: argparse.Namespace) -> int:
    """Run ``bmstudy evaluate``; exit status 1 when a case failed."""
    from ..io.manifest import load_manifest

    df = evaluate_cohort(
        load_manifest(args.manifest), args.predictions, args.out, splits=args.splits,
        threshold=args.threshold, brain_mask=args.brain_mask, min_lesion_mm3=args.min_lesion_mm3,
        mask_labels=args.mask_labels, label_threshold=args.label_threshold,
        force=args.force, progress=not args.no_progress, n_jobs=args.jobs,
    )
    ok = df[df["status"] == "ok"]
    print(f"{len(ok)}/{len(df)} case(s) evaluated -> {args.out}")
    if not ok.empty:
        med = ok.groupby("split")[list(METRICS)].median()
        print("median per split:\n" + med.round(3).to_string())
    failed = df[df["status"] != "ok"]
    for pid, err in zip(failed["patient_id"], failed["error"]):
        print(f"FAILED {pid}: {err}")
    return 0 if failed.empty else 1
