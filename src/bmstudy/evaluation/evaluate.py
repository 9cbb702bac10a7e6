"""Cohort evaluation: per-patient voxel metrics, lesion-wise detection and score histograms.

``evaluate_cohort`` reads, for every patient of the chosen splits, the reference mask named in the
manifest and the prediction files written by :mod:`bmstudy.inference.predictor` in the *input's* voxel grid
(``<pid>_prob.nii.gz`` float32 probabilities, ``<pid>.nii.gz`` uint8 mask), and computes

* the eight voxel-wise metrics of the paper (:func:`bmstudy.evaluation.voxel.case_metrics`),
* lesion-wise detection (:func:`bmstudy.evaluation.voxel.lesion_table` / :func:`~bmstudy.evaluation.voxel.lesion_metrics`),
* the per-patient score histograms (:func:`bmstudy.evaluation.voxel.score_histogram`) that the voxel-level
  DeLong test and the patient-level cluster bootstrap of :mod:`bmstudy.statistics.rank` consume.

Outputs (``out_dir``, all written atomically): ``metrics.csv`` (one row per patient: metrics,
demographics, split, site, ``manual_seconds``, ``model_seconds``, ``status``, ``error``),
``lesions.csv`` (lesion_table rows + ``patient_id`` and ``split``), ``score_hists.npz``
(per-patient histograms, read back with :func:`load_score_hists`) and ``evaluate_params.json``.
One failing case is reported (``status='failed'`` and the error naming case and file) and never
loses the others' results.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from ..utils import PathLike, atomic_path, atomic_to_csv, atomic_write_json, get_logger, params_hash

__all__ = [
    "METRICS",
    "LESION_SUMMARY_KEYS",
    "age_group",
    "evaluate_case",
    "evaluate_cohort",
    "load_score_hists",
    "load_results",
    "prediction_paths",
    "add_cli_arguments",
    "cli_main",
]

log = get_logger("bmstudy.evaluation.evaluate")

#: The paper's eight voxel-wise metrics, in the order of its Table 2.
METRICS: tuple[str, ...] = ("precision", "recall", "f1", "iou", "dice", "specificity", "mcc", "auc")
#: Keys of :func:`bmstudy.evaluation.voxel.lesion_metrics` copied into ``metrics.csv``.
LESION_SUMMARY_KEYS: tuple[str, ...] = (
    "n_true", "n_pred", "n_detected", "n_fp",
    "lesion_sensitivity", "lesion_precision", "lesion_f1", "lesion_dice",
)
DEMOGRAPHIC_COLUMNS: tuple[str, ...] = ("patient_id", "split", "site", "age", "age_group", "sex", "cancer_type")
AGE_CUTOFF = 60.0
OUTPUT_FILES: tuple[str, ...] = ("metrics.csv", "lesions.csv", "score_hists.npz", "evaluate_params.json")
_AFFINE_ATOL = 1e-3


def age_group(age: Any, cutoff: float = AGE_CUTOFF) -> Any:
    """``'<60'`` / ``'>=60'`` for a scalar or array-like of ages (NaN stays missing)."""
    lo, hi = f"<{cutoff:g}", f">={cutoff:g}"
    if np.ndim(age) == 0:
        a = float(age)
        return np.nan if not np.isfinite(a) else (lo if a < cutoff else hi)
    a = pd.to_numeric(pd.Series(age), errors="coerce").to_numpy(dtype=float)
    out = np.where(a < cutoff, lo, hi).astype(object)
    out[~np.isfinite(a)] = np.nan
    return out


def prediction_paths(predictions_dir: PathLike, patient_id: str) -> tuple[Path, Path]:
    """``(prob_path, mask_path)`` written by inference for one patient."""
    d = Path(predictions_dir)
    return d / f"{patient_id}_prob.nii.gz", d / f"{patient_id}.nii.gz"


# --------------------------------------------------------------------------- one case
def _load_nifti(path: Path, what: str, pid: str):
    import nibabel as nib

    if not path.is_file():
        raise FileNotFoundError(f"case {pid!r}: {what} not found: {path}")
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises several types for corrupt files
        raise ValueError(f"case {pid!r}: cannot read {what} {path}: {exc}") from exc
    if data.ndim == 4 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"case {pid!r}: {what} {path} must be a 3-D volume, got shape {data.shape}")
    return img, data


def _check_grid(pid: str, ref_img, ref_data, ref_path: Path, img, data, path: Path, what: str) -> None:
    if data.shape != ref_data.shape:
        raise ValueError(
            f"case {pid!r}: {what} {path} has shape {data.shape} but the reference mask {ref_path} "
            f"has shape {ref_data.shape} (predictions must be in the input's voxel grid)"
        )
    if not np.allclose(img.affine, ref_img.affine, atol=_AFFINE_ATOL):
        raise ValueError(
            f"case {pid!r}: {what} {path} affine differs from the reference mask {ref_path} "
            f"(max abs diff {np.max(np.abs(img.affine - ref_img.affine)):.4g}; predictions must be in "
            "the input's voxel grid)"
        )


def _binary(data: np.ndarray, pid: str, path: Path, what: str) -> np.ndarray:
    if not np.issubdtype(data.dtype, np.integer) and not np.issubdtype(data.dtype, np.bool_):
        if not np.all(np.isfinite(data)):
            raise ValueError(f"case {pid!r}: {what} {path} contains non-finite values")
        if not np.all(np.equal(np.mod(data, 1), 0)):
            raise ValueError(f"case {pid!r}: {what} {path} must be a binary mask, found non-integer values")
    bad = (data != 0) & (data != 1)
    if bad.any():
        values = np.unique(data[bad])
        raise ValueError(f"case {pid!r}: {what} {path} must contain only 0/1, found values {values[:10].tolist()}")
    return data != 0


def evaluate_case(
    patient_id: str,
    truth_path: PathLike,
    predictions_dir: PathLike,
    *,
    threshold: float = 0.5,
    brain_mask_path: PathLike | None = None,
    min_lesion_mm3: float | None = None,
    n_bins: int | None = None,
) -> tuple[dict[str, Any], pd.DataFrame, tuple[np.ndarray, np.ndarray]]:
    """Evaluate one patient; return ``(metrics_row, lesion_rows, (pos_hist, neg_hist))``.

    Voxel metrics use the probability map (``<pid>_prob.nii.gz``); lesion analysis uses the same map
    thresholded at ``threshold`` so both agree. When only the uint8 mask exists it serves as a
    (binary) score. Every file must share the reference mask's shape and affine; errors name the
    case and the file. ``brain_mask_path`` restricts voxel metrics and histograms to the brain.
    """
    from ..evaluation import voxel as M

    pid = str(patient_id)
    truth_path = Path(truth_path)
    prob_path, mask_path = prediction_paths(predictions_dir, pid)
    ref_img, ref_raw = _load_nifti(truth_path, "reference mask", pid)
    truth = _binary(ref_raw, pid, truth_path, "reference mask")

    if prob_path.is_file():
        img, prob = _load_nifti(prob_path, "probability map", pid)
        _check_grid(pid, ref_img, ref_raw, truth_path, img, prob, prob_path, "probability map")
        prob = np.asarray(prob, dtype=np.float32)
        if not np.all(np.isfinite(prob)):
            raise ValueError(f"case {pid!r}: probability map {prob_path} contains non-finite values")
        if prob.size and (prob.min() < 0.0 or prob.max() > 1.0):
            raise ValueError(
                f"case {pid!r}: probability map {prob_path} has values outside [0, 1] "
                f"(min {prob.min():.4g}, max {prob.max():.4g})"
            )
        source = prob_path
    elif mask_path.is_file():
        img, raw = _load_nifti(mask_path, "prediction mask", pid)
        _check_grid(pid, ref_img, ref_raw, truth_path, img, raw, mask_path, "prediction mask")
        prob = _binary(raw, pid, mask_path, "prediction mask").astype(np.float32)
        source = mask_path
        log.warning("case %r: no probability map %s; AUC computed from the binary mask %s", pid, prob_path, mask_path)
    else:
        raise FileNotFoundError(f"case {pid!r}: no prediction found: neither {prob_path} nor {mask_path} exists")

    brain = None
    if brain_mask_path is not None and str(brain_mask_path) != "":
        bpath = Path(brain_mask_path)
        bimg, braw = _load_nifti(bpath, "brain mask", pid)
        _check_grid(pid, ref_img, ref_raw, truth_path, bimg, braw, bpath, "brain mask")
        brain = _binary(braw, pid, bpath, "brain mask")

    spacing = tuple(float(z) for z in ref_img.header.get_zooms()[:3])
    voxel_mm3 = float(np.prod(spacing))
    pred = prob >= threshold
    row: dict[str, Any] = {"patient_id": pid}
    row.update({k: float(v) for k, v in M.case_metrics(prob, truth, threshold=threshold, mask=brain).items()})
    lesion_kwargs: dict[str, Any] = {}
    if min_lesion_mm3 is not None:
        lesion_kwargs["min_volume_mm3"] = float(min_lesion_mm3)
    lesions = M.lesion_table(pred, truth, spacing, **lesion_kwargs)
    summary = M.lesion_metrics(pred, truth, spacing, **lesion_kwargs)
    row.update({k: summary[k] for k in LESION_SUMMARY_KEYS if k in summary})
    row["truth_volume_ml"] = float(truth.sum()) * voxel_mm3 / 1000.0
    row["pred_volume_ml"] = float(pred.sum()) * voxel_mm3 / 1000.0
    row["prediction_file"] = str(source)
    hist_kwargs: dict[str, Any] = {"mask": brain}
    if n_bins is not None:
        hist_kwargs["n_bins"] = int(n_bins)
    pos, neg = M.score_histogram(prob, truth, **hist_kwargs)
    lesions = lesions.copy()
    lesions.insert(0, "patient_id", pid)
    return row, lesions, (np.asarray(pos, dtype=np.int64), np.asarray(neg, dtype=np.int64))


# --------------------------------------------------------------------------- cohort
def _input_files(cases: pd.DataFrame, predictions_dir: Path, brain_mask: bool) -> list[Path]:
    files: list[Path] = [predictions_dir / "timings.csv"]
    for pid, mask in zip(cases["patient_id"], cases["mask"]):
        files.append(Path(mask))
        files.extend(prediction_paths(predictions_dir, str(pid)))
    if brain_mask:
        files.extend(Path(p) for p in cases["brain_mask"] if isinstance(p, str) and p)
    return files


def _up_to_date(out_dir: Path, inputs: Iterable[Path], params: dict[str, Any]) -> bool:
    outs = [out_dir / name for name in OUTPUT_FILES]
    if not all(p.is_file() for p in outs):
        return False
    try:
        stored = json.loads((out_dir / "evaluate_params.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if stored.get("params_hash") != params_hash(params):
        return False
    oldest_out = min(p.stat().st_mtime for p in outs)
    newest_in = max((p.stat().st_mtime for p in inputs if p.exists()), default=0.0)
    return oldest_out > newest_in


def _read_timings(predictions_dir: Path) -> pd.Series | None:
    path = predictions_dir / "timings.csv"
    if not path.is_file():
        return None
    t = pd.read_csv(path, dtype={"patient_id": str})
    if "patient_id" not in t.columns or "total_s" not in t.columns:
        raise ValueError(f"{path}: timings must have columns 'patient_id' and 'total_s' (got {list(t.columns)})")
    t = t.drop_duplicates("patient_id", keep="last")
    return pd.Series(pd.to_numeric(t["total_s"], errors="coerce").to_numpy(), index=t["patient_id"].astype(str))


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
    force: bool = False,
    progress: bool = True,
    n_jobs: int = 1,
) -> pd.DataFrame:
    """Evaluate every patient of ``splits`` against its prediction; one row per patient.

    Parameters
    ----------
    manifest_df : validated manifest (:func:`bmstudy.io.manifest.load_manifest`, absolute paths).
    predictions_dir : folder with ``<pid>_prob.nii.gz`` / ``<pid>.nii.gz`` and optional ``timings.csv``
        (its ``total_s`` becomes ``model_seconds``).
    out_dir : where ``metrics.csv``, ``lesions.csv``, ``score_hists.npz`` go (nothing written if None).
        When these are newer than every input and were made with the same parameters, they are read
        back instead of recomputed, unless ``force``.
    splits : manifest splits to evaluate (None: every row).
    threshold : probability threshold for the binary prediction (paper: 0.5).
    brain_mask : restrict voxel metrics to the manifest's ``brain_mask`` (the paper used whole volumes).
    min_lesion_mm3 : smallest connected component counted as a lesion (None: bmstudy.evaluation.voxel' default).
    n_bins : score-histogram resolution (None: bmstudy.evaluation.voxel' default).
    n_jobs : worker processes (cases are independent; each holds one case's volumes in memory).

    Returns
    -------
    DataFrame with ``patient_id, split, site, age, age_group, sex, cancer_type, manual_seconds,
    model_seconds, status, error`` + the eight metrics + lesion summary columns. Failed cases keep
    their row with ``status='failed'``, the error message, and NaN metrics.
    """
    from tqdm.auto import tqdm

    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    if int(n_jobs) < 1:
        raise ValueError(f"n_jobs must be >= 1, got {n_jobs}")
    pred_dir = Path(predictions_dir)
    if not pred_dir.is_dir():
        raise FileNotFoundError(f"predictions folder not found: {pred_dir}")
    for col in ("patient_id", "split", "mask"):
        if col not in manifest_df.columns:
            raise ValueError(f"manifest has no column {col!r}")
    if brain_mask and "brain_mask" not in manifest_df.columns:
        raise ValueError("brain_mask=True but the manifest has no 'brain_mask' column")
    cases = manifest_df if splits is None else manifest_df[manifest_df["split"].isin(list(splits))]
    cases = cases.reset_index(drop=True)
    if cases.empty:
        raise ValueError(f"no patients in splits {list(splits or [])} of the manifest")

    params = {
        "splits": None if splits is None else list(splits), "threshold": float(threshold),
        "brain_mask": bool(brain_mask), "min_lesion_mm3": min_lesion_mm3, "n_bins": n_bins,
        "predictions_dir": str(pred_dir.resolve()),
        # the evaluated rows themselves (ids, paths, demographics): an edited manifest recomputes
        "cases": params_hash({c: cases[c].astype(str).tolist() for c in cases.columns}),
    }
    out = Path(out_dir) if out_dir is not None else None
    if out is not None and not force and _up_to_date(out, _input_files(cases, pred_dir, brain_mask), params):
        log.info("evaluation in %s is up to date; reading it back (force=True recomputes)", out)
        return load_results(out)[0]

    timings = _read_timings(pred_dir)
    records = cases.to_dict("records")
    case_kwargs = {"threshold": threshold, "min_lesion_mm3": min_lesion_mm3, "n_bins": n_bins}
    jobs = [(str(r["patient_id"]), r["mask"], pred_dir, (r.get("brain_mask") if brain_mask else None), brain_mask,
             case_kwargs) for r in records]
    results: list[tuple[str, Any]] = [("failed", "not run")] * len(jobs)
    t0 = time.perf_counter()
    bar = tqdm(total=len(jobs), desc="evaluate", unit="case", disable=not progress)
    if n_jobs > 1 and len(jobs) > 1:
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(max_workers=min(n_jobs, len(jobs))) as pool:
            futures = {pool.submit(_run_case, *job): i for i, job in enumerate(jobs)}
            for fut in as_completed(futures):
                results[futures[fut]] = fut.result()
                bar.update()
    else:
        for i, job in enumerate(jobs):
            results[i] = _run_case(*job)
            bar.update()
    bar.close()

    rows: list[dict[str, Any]] = []
    lesion_frames: list[pd.DataFrame] = []
    hists: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    n_failed = 0
    for rec, (status, payload) in zip(records, results):
        pid = str(rec["patient_id"])
        base = {
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
        if status != "ok":
            log.error("%s", payload)
            rows.append({**base, "status": "failed", "error": str(payload)})
            n_failed += 1
            continue
        row, lesions, hist = payload
        row.pop("patient_id")
        rows.append({**base, **row, "status": "ok", "error": ""})
        lesions.insert(1, "split", base["split"])
        lesion_frames.append(lesions)
        hists[pid] = hist
    log.info("evaluated %d case(s) in %.1f s: %d ok, %d failed", len(rows), time.perf_counter() - t0,
             len(rows) - n_failed, n_failed)

    df = _order_columns(pd.DataFrame(rows))
    lesions_df = pd.concat(lesion_frames, ignore_index=True) if lesion_frames else pd.DataFrame(
        columns=["patient_id", "split"])
    if out is not None:
        _write_outputs(out, df, lesions_df, hists, params)
    return df


def _run_case(pid: str, mask: str, pred_dir: Path, bpath: Any, brain_mask: bool,
              kwargs: dict[str, Any]) -> tuple[str, Any]:
    """``('ok', (row, lesions, hist))`` or ``('failed', message)``: one bad case never loses the others."""
    if brain_mask and (not isinstance(bpath, str) or not bpath):
        return "failed", f"case {pid!r}: brain_mask=True but the manifest gives no brain mask"
    try:
        return "ok", evaluate_case(pid, mask, pred_dir, brain_mask_path=bpath, **kwargs)
    except Exception as exc:  # reported in the status table
        return "failed", str(exc)


def _order_columns(df: pd.DataFrame) -> pd.DataFrame:
    for m in METRICS:
        if m not in df.columns:
            df[m] = np.nan
    first = [*DEMOGRAPHIC_COLUMNS, "manual_seconds", "model_seconds", "status", "error", *METRICS]
    first = [c for c in first if c in df.columns]
    return df[first + [c for c in df.columns if c not in first]]


def _write_outputs(out: Path, df: pd.DataFrame, lesions: pd.DataFrame,
                   hists: dict[str, tuple[np.ndarray, np.ndarray]], params: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_to_csv(df, out / "metrics.csv")
    atomic_to_csv(lesions, out / "lesions.csv")
    arrays: dict[str, np.ndarray] = {}
    for pid, (pos, neg) in hists.items():
        arrays[f"{pid}.pos"] = pos
        arrays[f"{pid}.neg"] = neg
    with atomic_path(out / "score_hists.npz", suffix=".npz") as tmp:
        np.savez_compressed(tmp, **arrays)
    # written last: its presence + hash marks a complete, reusable evaluation
    atomic_write_json(out / "evaluate_params.json", {"params": params, "params_hash": params_hash(params)})


def load_score_hists(path: PathLike, patient_ids: Iterable[str] | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read ``score_hists.npz`` into ``{patient_id: (pos_counts, neg_counts)}`` (optionally a subset)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"score histograms not found: {path}")
    wanted = None if patient_ids is None else {str(p) for p in patient_ids}
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    with np.load(path, allow_pickle=False) as z:
        pids = sorted({k.rsplit(".", 1)[0] for k in z.files})
        for pid in pids:
            if wanted is not None and pid not in wanted:
                continue
            out[pid] = (z[f"{pid}.pos"], z[f"{pid}.neg"])
    if wanted is not None and (missing := wanted - set(out)):
        raise KeyError(f"{path}: no histograms for patient(s) {sorted(missing)}")
    return out


def load_results(out_dir: PathLike) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read ``(metrics, lesions)`` written by :func:`evaluate_cohort` (string ids kept as strings)."""
    out = Path(out_dir)
    dtypes = {"patient_id": str, "split": str, "site": str, "sex": str, "cancer_type": str,
              "age_group": str, "status": str, "error": str}
    metrics = pd.read_csv(out / "metrics.csv", dtype=dtypes, keep_default_na=False, na_values=[""])
    metrics["error"] = metrics["error"].fillna("") if "error" in metrics.columns else ""
    try:
        lesions = pd.read_csv(out / "lesions.csv", dtype={"patient_id": str, "split": str})
    except pd.errors.EmptyDataError:
        lesions = pd.DataFrame(columns=["patient_id", "split"])
    return metrics, lesions


# --------------------------------------------------------------------------- CLI: bmstudy evaluate
def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("manifest", help="path to data_manifest.csv")
    parser.add_argument("predictions", help="folder written by `bmstudy predict`")
    parser.add_argument("--out", required=True, help="output folder for metrics.csv, lesions.csv, score_hists.npz")
    parser.add_argument("--splits", nargs="+", default=["test", "external"], help="splits to evaluate")
    parser.add_argument("--threshold", type=float, default=0.5, help="probability threshold (default 0.5)")
    parser.add_argument("--brain-mask", action="store_true", help="restrict voxel metrics to the brain mask")
    parser.add_argument("--min-lesion-mm3", type=float, default=None,
                        help="smallest component counted as a lesion (default: bmstudy.evaluation.voxel' default)")
    parser.add_argument("--force", action="store_true", help="recompute even if outputs are up to date")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")


def cli_main(args: argparse.Namespace) -> int:
    from ..io.manifest import load_manifest

    df = evaluate_cohort(
        load_manifest(args.manifest), args.predictions, args.out, splits=args.splits,
        threshold=args.threshold, brain_mask=args.brain_mask, min_lesion_mm3=args.min_lesion_mm3,
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
