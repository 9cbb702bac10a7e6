"""Prediction of cases and cohorts: masks back in the input's space, per-case timing, ``bmstudy predict``.

Per case (:func:`predict_case`): read + preprocess with the training's recorded parameters
(:func:`bmstudy.preprocessing.preprocess_image`; the skull-strip backend may be overridden), predict
with :func:`bmstudy.inference.sliding_window.sliding_window_predict`, resample the probability map
back to the input grid (linear, :func:`bmstudy.preprocessing.restore_to_input`), threshold it there
and write ``<pid>_prob.nii.gz`` (float32) and ``<pid>.nii.gz`` (uint8) with the input's affine,
atomically.

Per cohort (:func:`predict_cohort`): the cases of a manifest, a folder of volumes or one image
(:mod:`bmstudy.inference.inputs`) run through :func:`bmstudy.cases.run_cases`; ``timings.csv``
(:data:`TIMING_COLUMNS` first) is rewritten after every case, a failing case is recorded and the
others complete, finished cases are skipped on a re-run unless ``force=True``. A case is finished
only when its row records the same model (``model_best.keras`` + ``train_config.json`` content),
code (preprocessing and inference sources), settings and input content as this run
(:data:`bmstudy.inference.outputs.RECORD_COLUMNS`): predicting with another model redoes every case.
The output folder is locked for the run (:func:`bmstudy.io.folder_lock`).

Reads ``<model_dir>/train_config.json`` (and the Keras model through
:func:`bmstudy.training.load_trained`); writes ``<out_dir>/<pid>.nii.gz``, ``<pid>_prob.nii.gz`` and
``timings.csv``. TensorFlow is imported only inside :func:`load_predictor` (via training).
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ..cases import exit_code, run_cases
from ..io.hashing import HashCache
from ..io.locks import folder_lock
from ..plan import BLENDS, SKULL_STRIP_BACKENDS, InferenceParams, PreprocessParams
from ..precision import PRECISIONS, resolve_here
from ..utils import PathLike, atomic_path, clean_stale_temps, get_logger
from .inputs import PredictionCase, cases_from_input
from .network import TimedFn, as_predict_fn, resolve_model, warmup as warm_up
from .outputs import HASH_CACHE_NAME, TimingTable, case_records, failed_row, output_paths, timings_frame
from .sliding_window import PredictFn, as_triple, count_windows, sliding_window_predict

__all__ = ["predict_case", "predict_cohort", "add_cli_arguments", "cli_main"]

log = get_logger("bmstudy.inference.predictor")


def _config_get(config: Mapping[str, Any], *keys: str, default: Any = None) -> Any:
    for k in keys:
        if k in config and config[k] is not None:
            return config[k]
    return default


def _preprocess_params(config: Mapping[str, Any], skull_strip: str | None = None) -> Any:
    """The preprocessing parameters recorded by training (``skull_strip`` overridden when given)."""
    raw = _config_get(config, "preprocessing", "preprocess", "preprocess_params")
    if not raw:
        _warn_once("the model config records no preprocessing parameters; using PreprocessParams() defaults")
        params = PreprocessParams()
    elif isinstance(raw, PreprocessParams) or not isinstance(raw, Mapping):
        params = raw
    else:
        params = PreprocessParams.from_dict(dict(raw))
    if skull_strip is not None:
        params = dataclasses.replace(params, skull_strip=skull_strip)
    return params


@functools.lru_cache(maxsize=None)
def _warn_once(message: str) -> None:
    log.warning(message)


def _inference_settings(config: Mapping[str, Any], patch: Any, stride: Any) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    patch = patch if patch is not None else _config_get(config, "inference_patch", "patch_size", default=128)
    stride = stride if stride is not None else _config_get(config, "inference_stride", default=64)
    return as_triple(patch, "patch"), as_triple(stride, "stride")


def _check_skull_strip(skull_strip: str | None) -> None:
    if skull_strip is not None and skull_strip not in SKULL_STRIP_BACKENDS:
        raise ValueError(f"skull_strip must be one of {SKULL_STRIP_BACKENDS} or None, got {skull_strip!r}")


@dataclass
class _Timer:
    seconds: float = 0.0

    def __enter__(self) -> "_Timer":
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self._t0


# --------------------------------------------------------------------------- one case
def _preprocess(image_path: Path, config: Mapping[str, Any], brain_mask_path: PathLike | None, pid: str,
                skull_strip: str | None) -> tuple[np.ndarray, dict[str, Any], np.ndarray]:
    """``(array, record, brain)`` of :func:`bmstudy.preprocessing.preprocess_image`, checked."""
    from ..preprocessing import preprocess_image

    params = _preprocess_params(config, skull_strip)
    try:
        array, record, brain = preprocess_image(image_path, params, brain_mask_path, case=pid, return_brain=True)
    except Exception as exc:  # noqa: BLE001 - re-raised naming the case and the file
        raise RuntimeError(f"case {pid!r}: preprocessing {image_path} failed: "
                           f"{type(exc).__name__}: {exc}") from exc
    array = np.asarray(array)
    if array.ndim != 3:
        raise ValueError(f"case {pid!r}: preprocessed {image_path} has shape {array.shape}, expected 3-D")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"case {pid!r}: preprocessed {image_path} contains non-finite values")
    return array, record, brain


def _check_probabilities(prob: np.ndarray, pid: str, image_path: Path) -> None:
    lo, hi = float(prob.min()), float(prob.max())
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo < -1e-4 or hi > 1 + 1e-4:
        raise ValueError(f"case {pid!r}: the network returned values in [{lo:.4g}, {hi:.4g}] for {image_path}; "
                         "expected probabilities in [0, 1] (a sigmoid output, not logits)")


def _write_outputs(prob: np.ndarray, record: dict[str, Any], out_dir: PathLike, pid: str,
                   threshold: float) -> np.ndarray:
    """Restore ``prob`` to the input grid, write mask + probabilities; returns the input-grid map."""
    from ..preprocessing import restore_to_input, save_like_input

    np.clip(prob, 0.0, 1.0, out=prob)
    prob_in = np.asarray(restore_to_input(prob, record, 1), dtype=np.float32)
    np.clip(prob_in, 0.0, 1.0, out=prob_in)
    mask_in = (prob_in >= np.float32(threshold)).astype(np.uint8)
    mask_path, prob_path = output_paths(out_dir, pid)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    with atomic_path(prob_path) as tmp:
        save_like_input(prob_in, record, tmp, np.float32)
    with atomic_path(mask_path) as tmp:
        save_like_input(mask_in, record, tmp, np.uint8)
    return prob_in


def predict_case(
    image_path: PathLike,
    model: Any,
    config: Mapping[str, Any],
    out_dir: PathLike,
    patient_id: str,
    brain_mask_path: PathLike | None = None,
    *,
    patch: int | Sequence[int] | None = None,
    stride: int | Sequence[int] | None = None,
    batch_size: int = 1,
    blend: str = "mean",
    tta_flip: bool = False,
    threshold: float = 0.5,
    restrict_to_brain: bool = True,
    progress: bool = False,
    skull_strip: str | None = None,
) -> dict[str, Any]:
    """Predict one image and write its mask and probability map in the input's voxel grid.

    Parameters
    ----------
    image_path : path-like
        The input volume (any format :func:`bmstudy.io.read_volume` reads, any orientation / spacing).
    model : keras.Model or callable
        The network or any predict_fn (batch (B, px, py, pz, 1) -> probabilities).
    config : mapping
        The training config (``train_config.json``): recorded preprocessing parameters (key
        ``preprocessing``) and ``inference_patch`` / ``inference_stride``.
    out_dir : path-like
        Where ``<pid>.nii.gz`` (uint8) and ``<pid>_prob.nii.gz`` (float32) are written.
    patient_id : str
        The case's id (file names, error messages).
    brain_mask_path : path-like or None, default=None
        Brain mask in the input's grid (used by the ``'mask'`` / ``'auto'`` skull-strip backends).
    patch, stride : int or sequence of 3 int or None, default=None
        Override the config's inference window / step.
    batch_size, blend, tta_flip, progress
        See :func:`bmstudy.inference.sliding_window.sliding_window_predict`.
    threshold : float, default=0.5
        Probability threshold applied in the input grid (``prob >= threshold``).
    restrict_to_brain : bool, default=True
        Zero the probabilities outside the skull-stripping brain mask (metastases are intracranial).
    skull_strip : {'auto', 'mask', 'deepbet', 'synthstrip', 'none'} or None, default=None
        Override the skull-strip backend of the recorded preprocessing parameters.

    Returns
    -------
    dict
        A timing row (:data:`~bmstudy.inference.outputs.TIMING_COLUMNS`, ``status='ok'``) plus
        ``network_s`` (time inside the network; ``model_s - network_s`` is the stitching overhead).

    Raises
    ------
    FileNotFoundError, ValueError, RuntimeError
        A missing image, bad settings, failed preprocessing or a network output that is not a
        probability; messages name the case and the file.
    """
    pid, image_path = str(patient_id), Path(image_path)
    if not 0.0 < float(threshold) < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold!r}")
    _check_skull_strip(skull_strip)
    if not image_path.exists():
        raise FileNotFoundError(f"case {pid!r}: image not found: {image_path}")
    patch3, stride3 = _inference_settings(config, patch, stride)
    fn = TimedFn(as_predict_fn(model))
    t_start = time.perf_counter()
    with _Timer() as t_pre:
        array, record, brain = _preprocess(image_path, config, brain_mask_path, pid, skull_strip)
    with _Timer() as t_model:
        prob = sliding_window_predict(array, fn, patch3, stride3, batch_size=batch_size, blend=blend,
                                      tta_flip=tta_flip, pad_value=0.0, progress=progress)
        if restrict_to_brain:
            prob[np.asarray(brain) == 0] = 0.0
    n_windows = count_windows(array.shape, patch3, stride3)
    _check_probabilities(prob, pid, image_path)
    with _Timer() as t_post:
        prob_in = _write_outputs(prob, record, out_dir, pid, threshold)
    times = (t_pre.seconds, t_model.seconds, t_post.seconds, time.perf_counter() - t_start, fn.seconds)
    return _ok_row(pid, image_path, times, n_windows, prob_in.shape, array.shape)


def _ok_row(pid: str, image_path: Path, times: tuple[float, ...], n_windows: int, input_shape: Sequence[int],
            model_shape: Sequence[int]) -> dict[str, Any]:
    """The timing row of a predicted case; ``times``: preprocess, model, postprocess, total, network."""
    pre, model, post, total, network = (round(t, 4) for t in times)
    return {
        "patient_id": pid, "preprocess_s": pre, "model_s": model, "postprocess_s": post, "total_s": total,
        "status": "ok", "error": "", "n_windows": n_windows,
        "input_shape": "x".join(str(int(n)) for n in input_shape),
        "model_shape": "x".join(str(int(n)) for n in model_shape),
        "image": str(image_path), "network_s": network,
    }


# --------------------------------------------------------------------------- cohort
def _predict_one(case: PredictionCase, *, table: TimingTable, records: Mapping[str, dict[str, str]],
                 **settings: Any) -> dict[str, Any]:
    """:func:`predict_case` for one case of a cohort; its timing row (``failed`` on error) is recorded."""
    pid, image, brain = case
    try:
        row = {**predict_case(image, patient_id=pid, brain_mask_path=brain, **settings), **records.get(pid, {})}
        log.info("case %s: ok, total %.1f s (preprocess %.1f, model %.1f, postprocess %.1f)", pid,
                 row["total_s"], row["preprocess_s"], row["model_s"], row["postprocess_s"])
    except Exception as exc:  # noqa: BLE001 - one bad case never stops the cohort
        row = failed_row(pid, image, exc)
    table.record(row)
    return {**row, "reason": row["error"]}


#: predict_cohort keywords that :class:`bmstudy.plan.InferenceParams` can supply instead (default values).
_PARAM_KEYWORDS: dict[str, Any] = {"splits": ("test", "external"), "patch": None, "stride": None, "batch_size": 1,
                                   "blend": "mean", "tta_flip": False, "threshold": 0.5, "restrict_to_brain": True,
                                   "precision": "float32", "jit_compile": False}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return tuple(a) == tuple(b)
    try:
        return bool(a == b)
    except (TypeError, ValueError):  # e.g. an array
        return False


def _settings(params: InferenceParams | None, given: dict[str, Any]) -> dict[str, Any]:
    """The inference keywords of predict_cohort, from ``params`` when given (keywords then at default)."""
    if params is None:
        return given
    if not isinstance(params, InferenceParams):
        raise TypeError(f"params must be an InferenceParams, got {type(params).__name__}")
    both = [k for k, default in _PARAM_KEYWORDS.items() if not _same(given[k], default)]
    if both:
        raise ValueError(f"pass the inference settings either as params or as keywords, not both: {both}")
    return {"splits": params.splits, "patch": params.patch, "stride": params.stride,
            "batch_size": params.batch_size, "blend": params.blend, "tta_flip": params.tta,
            "threshold": params.threshold, "restrict_to_brain": params.restrict_to_brain,
            "precision": params.precision, "jit_compile": params.jit_compile}


def predict_cohort(
    manifest_df_or_folder: pd.DataFrame | PathLike,
    model_dir: PathLike | None,
    out_dir: PathLike,
    splits: Sequence[str] | None = ("test", "external"),
    force: bool = False,
    *,
    predict_fn: PredictFn | None = None,
    config: Mapping[str, Any] | None = None,
    patch: int | Sequence[int] | None = None,
    stride: int | Sequence[int] | None = None,
    batch_size: int = 1,
    blend: str = "mean",
    tta_flip: bool = False,
    threshold: float = 0.5,
    restrict_to_brain: bool = True,
    warmup: bool = True,
    progress: bool = True,
    params: InferenceParams | None = None,
    brain_mask: PathLike | None = None,
    skull_strip: str | None = None,
    precision: str = "float32",
    jit_compile: bool = False,
) -> pd.DataFrame:
    """Predict every case of a manifest (rows of ``splits``), a folder of volumes or one image.

    Writes per case ``out_dir/<pid>.nii.gz`` / ``<pid>_prob.nii.gz`` and, after every case,
    ``out_dir/timings.csv`` (:mod:`bmstudy.inference.outputs`). A failing case is recorded with
    ``status='failed'`` and an error naming the case and the file; the others complete. A case
    whose previous row is ``ok`` and whose outputs exist is skipped (row kept) unless ``force``.

    Parameters
    ----------
    manifest_df_or_folder : DataFrame or path-like
        A manifest, a folder of volumes or one volume (:func:`bmstudy.inference.inputs.cases_from_input`).
    model_dir : path-like or None
        Training output folder; may be ``None`` when ``predict_fn`` and ``config`` are given.
    out_dir : path-like
        Prediction folder.
    splits : sequence of str or None, default=('test', 'external')
        Manifest splits to predict (``None``: every row; ignored without a ``split`` column).
    force : bool, default=False
        Recompute finished cases.
    predict_fn, config : optional
        Use this predict_fn / config instead of loading them from ``model_dir``.
    patch, stride, batch_size, blend, tta_flip, threshold, restrict_to_brain : see :func:`predict_case`
    warmup : bool, default=True
        Run the network once before the first case, so graph tracing (tens of seconds for
        TensorFlow) is not charged to the first case's ``model_s``.
    progress : bool, default=True
        Show a progress bar over cases.
    params : InferenceParams or None, default=None
        The study plan's settings instead of the eight keywords above (which then keep their defaults).
    brain_mask : path-like or None, default=None
        Brain mask file or folder (:func:`bmstudy.inference.inputs.match_brain_masks`).
    skull_strip : {'auto', 'mask', 'deepbet', 'synthstrip', 'none'} or None, default=None
        Override the skull-strip backend of the model's recorded preprocessing parameters.

    Returns
    -------
    DataFrame
        The timing rows of this run's cases (also in ``timings.csv``).

    Raises
    ------
    ValueError, FileNotFoundError
        Conflicting settings, a bad ``skull_strip``, a missing input, brain mask or model.
    """
    s = _settings(params, {"splits": splits, "patch": patch, "stride": stride, "batch_size": batch_size,
                           "blend": blend, "tta_flip": tta_flip, "threshold": threshold,
                           "restrict_to_brain": restrict_to_brain, "precision": precision,
                           "jit_compile": jit_compile})
    if s["precision"] == "auto":  # the policy this machine runs is what the records and hashes name
        s = {**s, "precision": resolve_here("auto")}
    cases = cases_from_input(manifest_df_or_folder, s["splits"], brain_mask=brain_mask)
    if not cases:
        log.warning("no cases to predict (splits=%s)", s["splits"])
    with folder_lock(out_dir, "prediction output folder"):
        clean_stale_temps(out_dir, recursive=False)
        return _predict_cases(cases, s, model_dir, out_dir, force, predict_fn, config, warmup, progress, skull_strip)


def _predict_cases(cases: Sequence[PredictionCase], s: Mapping[str, Any], model_dir: PathLike | None,
                   out_dir: PathLike, force: bool, predict_fn: PredictFn | None, config: Mapping[str, Any] | None,
                   warmup: bool, progress: bool, skull_strip: str | None) -> pd.DataFrame:
    """The cases of :func:`predict_cohort` whose record differs from ``timings.csv``'s, through run_cases."""
    hashes = HashCache(Path(out_dir) / HASH_CACHE_NAME)
    records = case_records(cases, hashes, model_dir, predict_fn, config, s, skull_strip)
    hashes.save()
    table = TimingTable(Path(out_dir) / "timings.csv")
    finished = {} if force else {c.patient_id: r for c in cases
                                 if (r := table.finished(out_dir, c.patient_id, records[c.patient_id]))}
    n_todo = len(cases) - len(finished)
    log.info("%d case(s): %d to predict, %d already finished -> %s", len(cases), n_todo, len(finished), out_dir)
    kwargs = _cohort_kwargs(s, model_dir, predict_fn, config, warmup, n_todo, out_dir, skull_strip)
    result = run_cases(_predict_one, cases, case_id=lambda c: c.patient_id,
                       kwargs={"table": table, "records": records, **kwargs},
                       is_finished=lambda c: _skip(finished, c.patient_id), desc="predict", progress=progress)
    return _cohort_table(cases, result.rows, table)


def _cohort_table(cases: Sequence[PredictionCase], results: Sequence[Mapping[str, Any]],
                  table: TimingTable) -> pd.DataFrame:
    """The timing rows of ``cases`` (``timings.csv`` is written even when every case was skipped)."""
    if cases and not table.path.is_file():
        table.write()
    rows = [table.rows.get(r["patient_id"]) or failed_row(c.patient_id, c.image, RuntimeError(r.get("reason", "")))
            for c, r in zip(cases, results)]
    n_failed = sum(str(r.get("status")) == "failed" for r in rows)
    if n_failed:
        log.warning("%d of %d case(s) failed; see %s", n_failed, len(rows), table.path)
    return timings_frame(rows).reset_index(drop=True) if rows else timings_frame([])


def _skip(finished: Mapping[str, dict[str, Any]], pid: str) -> dict[str, Any] | None:
    row = finished.get(pid)
    if row is not None:
        log.info("case %s: finished earlier, skipped (force=True recomputes)", pid)
    return row


def _cohort_kwargs(s: Mapping[str, Any], model_dir: PathLike | None, predict_fn: PredictFn | None,
                   config: Mapping[str, Any] | None, warmup: bool, n_todo: int, out_dir: PathLike,
                   skull_strip: str | None) -> dict[str, Any]:
    """The :func:`predict_case` keywords of a cohort (the model is loaded only when a case needs it)."""
    _check_skull_strip(skull_strip)
    fn, patch3, stride3 = predict_fn, None, None
    if n_todo:
        options = {k: s[k] for k, default in (("precision", "float32"), ("jit_compile", False))
                   if s.get(k, default) != default}  # batch_size: passed per call below
        fn, config = resolve_model(model_dir, predict_fn, config, options)
        patch3, stride3 = _inference_settings(config, s["patch"], s["stride"])
        if warmup:
            warm_up(fn, s["batch_size"], patch3)
    return {"model": fn, "config": config, "out_dir": out_dir, "patch": patch3, "stride": stride3,
            "batch_size": s["batch_size"], "blend": s["blend"], "tta_flip": s["tta_flip"],
            "threshold": s["threshold"], "restrict_to_brain": s["restrict_to_brain"], "skull_strip": skull_strip}


# --------------------------------------------------------------------------- CLI
def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``bmstudy predict`` to ``parser``.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The sub-command's parser.
    """
    parser.add_argument("-i", "--input", required=True,
                        help="one image, a folder of images (NIfTI .nii/.nii.gz, NRRD .nrrd/.nhdr, MetaImage "
                             ".mha/.mhd, DICOM series as sub-folders) or a manifest csv (columns patient_id, "
                             "image; optional brain_mask, split; or the study's data manifest)")
    parser.add_argument("-o", "--output", required=True, help="output folder (masks, probabilities, timings.csv)")
    parser.add_argument("-m", "--model", required=True, help="training output folder (model_best.keras + train_config.json)")
    parser.add_argument("--brain-mask", default=None, metavar="FILE|FOLDER",
                        help="brain mask of the image, or a folder of brain masks named like the images "
                             "(e.g. p1.nii.gz or p1_brain.nii.gz for p1.nrrd); overrides a manifest's brain_mask")
    parser.add_argument("--skull-strip", choices=SKULL_STRIP_BACKENDS, default=None,
                        help="skull-strip backend (default: the model's recorded preprocessing setting)")
    parser.add_argument("--splits", nargs="*", default=["test", "external"],
                        help="manifest splits to predict (default: test external; 'all' for every row; "
                             "a manifest without a split column is predicted whole)")
    parser.add_argument("--patch", type=int, nargs="+", default=None, help="window size (1 or 3 ints; default: the model config's)")
    parser.add_argument("--stride", type=int, nargs="+", default=None, help="window step (1 or 3 ints; default: the model config's)")
    parser.add_argument("--batch-size", type=int, default=1, help="windows per network call (default 1)")
    parser.add_argument("--precision", choices=PRECISIONS, default="float32",
                        help="network precision (mixed_bfloat16 is ~1.8x faster on CPUs with AMX/AVX-512 BF16; "
                             "auto: mixed_bfloat16 where the CPU has it natively, else float32)")
    parser.add_argument("--jit-compile", action="store_true", help="XLA-compile the network (GPU; slow on CPU)")
    parser.add_argument("--blend", choices=BLENDS, default="mean", help="overlap blending (default mean, as the paper)")
    parser.add_argument("--tta", action="store_true", help="left-right flip test-time augmentation")
    parser.add_argument("--threshold", type=float, default=0.5, help="probability threshold (default 0.5)")
    parser.add_argument("--no-brain-restrict", action="store_true",
                        help="keep probabilities outside the brain mask (default: set them to 0)")
    parser.add_argument("--force", action="store_true", help="recompute cases that are already finished")


def _cli_window(values: list[int] | None) -> int | tuple[int, ...] | None:
    if values is None:
        return None
    if len(values) not in (1, 3):
        raise ValueError(f"--patch/--stride take 1 or 3 integers, got {values}")
    return values[0] if len(values) == 1 else tuple(values)


def cli_main(args: argparse.Namespace) -> int:
    """Run ``bmstudy predict``.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments (:func:`add_cli_arguments`).

    Returns
    -------
    int
        :func:`bmstudy.cases.exit_code`: 0 every case ok, 3 some failed (others ok), 1 none ok.
    """
    splits = None if args.splits in ([], ["all"]) else tuple(args.splits)
    df = predict_cohort(args.input, args.model, args.output, splits=splits, force=args.force,
                        patch=_cli_window(args.patch), stride=_cli_window(args.stride),
                        batch_size=args.batch_size, blend=args.blend, tta_flip=args.tta,
                        threshold=args.threshold, restrict_to_brain=not args.no_brain_restrict,
                        brain_mask=getattr(args, "brain_mask", None), skull_strip=getattr(args, "skull_strip", None),
                        precision=args.precision, jit_compile=args.jit_compile)
    n_failed = int((df["status"] == "failed").sum()) if len(df) else 0
    print(f"{len(df) - n_failed} case(s) ok, {n_failed} failed -> {Path(args.output) / 'timings.csv'}")
    return exit_code(df)
