"""Whole-volume validation during training: the held-out cases predicted as inference predicts them.

This module owns the model-selection measurement of a :func:`bmstudy.training.loop.train` run. Every
``TrainConfig.val_every`` epochs, :func:`epoch_validation_class`'s callback

1. optionally re-estimates BatchNorm statistics on random head patches of the training cases
   ("precise BN", :func:`bmstudy.training.model.recalibrate_batchnorm`),
2. predicts every validation case with the inference code itself
   (:func:`bmstudy.inference.sliding_window.sliding_window_predict` on the preprocessed array, mean
   blending, probabilities zeroed outside the preprocessing brain mask as
   :func:`bmstudy.inference.predictor.predict_case` does with ``restrict_to_brain=True``),
3. scores each case (:func:`validate_cases`: Dice at threshold 0.5, lesion-wise sensitivity overall
   and for lesions > 10 mm, false-positive components) and adds the cohort summary
   (:func:`summarise`, keys :data:`SUMMARY_KEYS`) to the epoch's logs, so ``training_log.csv``, the
   best-model checkpoint (``monitor="val_case_dice"``) and early stopping see it.

Per-case rows go to ``validation_cases.csv``; the summary also goes to TensorBoard
(``logs/whole_volume``). On epochs without whole-volume validation the summary keys are NaN (the CSV
log keeps fixed columns; a NaN is never "best"). The current learning rate is logged as ``lr``.

TensorFlow is imported only inside functions.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from ..evaluation.lesions import lesion_table
from ..evaluation.voxel import confusion_counts, metrics_from_counts
from ..inference.sliding_window import sliding_window_predict
from ..utils import PathLike, atomic_to_csv, get_logger
from ..plan import TrainConfig
from .ema import averaged_weights
from .norm import recalibrate_batchnorm
from .sampling import PatchSampler, load_cases, load_preprocessed_case

__all__ = ["CASES_FILE", "SUMMARY_KEYS", "ValidationCase", "load_validation_cases", "predict_volume", "meta_spacing",
           "append_rows", "validate_cases", "summarise", "epoch_validation_class", "make_validation_callback", "select_monitor"]

log = get_logger("bmstudy.training.validation")

#: Per-case whole-volume validation rows (epoch, patient_id, dice, ...), appended per validation.
CASES_FILE = "validation_cases.csv"
#: The epoch-log keys of the whole-volume validation summary.
SUMMARY_KEYS: tuple[str, ...] = ("val_case_dice", "val_case_dice_median", "val_case_dice_min", "val_global_dice",
                                 "val_lesion_sensitivity", "val_lesion_sensitivity_gt10", "val_fp_per_case")
#: Seed offset of the precise-BN recalibration patches.
_BN_SEED_OFFSET = 2_000_003


@dataclass
class ValidationCase:
    """One held-out case: preprocessed image, lesion mask, brain mask (``None``: whole volume) and spacing."""

    patient_id: str
    image: np.ndarray
    mask: np.ndarray
    brain: np.ndarray | None
    spacing: tuple[float, float, float]


def meta_spacing(meta: dict[str, Any]) -> tuple[float, float, float]:
    """Voxel size (mm) recorded in a preprocessed case's ``meta.json`` (1 mm when absent)."""
    report, params = meta.get("report") or {}, meta.get("params") or {}
    for value in (report.get("output_spacing"), params.get("target_spacing"), params.get("spacing_mm")):
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                continue
        if isinstance(value, (int, float)):
            return (float(value),) * 3
        if isinstance(value, (list, tuple)) and len(value) == 3:
            return tuple(float(v) for v in value)  # type: ignore[return-value]
    return (1.0, 1.0, 1.0)


def append_rows(path: PathLike, new: pd.DataFrame) -> None:
    """Append ``new`` to the CSV table at ``path`` (created when missing), atomically.

    Earlier rows are read back with round-trip float parsing, so rewriting them keeps their text.
    """
    path = Path(path)
    old = pd.read_csv(path, dtype={"patient_id": str}, float_precision="round_trip") if path.is_file() else None
    atomic_to_csv(new if old is None else pd.concat([old, new], ignore_index=True), path)


def load_validation_cases(preprocessed_dir: PathLike, patient_ids: Sequence[str]) -> list[ValidationCase]:
    """Load (memory-mapped) the validation cases written by ``bmstudy preprocess``.

    Parameters
    ----------
    preprocessed_dir : str or PathLike
    patient_ids : sequence of str

    Returns
    -------
    list of ValidationCase

    Raises
    ------
    FileNotFoundError, ValueError
        As :func:`bmstudy.training.sampling.load_preprocessed_case` (messages name case and file).
    """
    out = []
    for pid in patient_ids:
        c = load_preprocessed_case(preprocessed_dir, pid)
        out.append(ValidationCase(str(pid), c["image"], c["mask"], c.get("brain"), meta_spacing(c["meta"])))
    return out


def predict_volume(case: ValidationCase, predict_fn: Callable[[np.ndarray], Any], patch: int, stride: int,
                   batch_size: int = 1) -> np.ndarray:
    """Probability map of one case: sliding window (mean blend), zero outside the brain mask.

    Parameters
    ----------
    case : ValidationCase
    predict_fn : callable
        Batch (B, p, p, p, 1) -> probabilities, as for ``sliding_window_predict``.
    patch, stride : int
        Window and step (the inference settings unless the config says otherwise).
    batch_size : int, default=1

    Returns
    -------
    ndarray of float32, the shape of ``case.image``
    """
    prob = sliding_window_predict(np.asarray(case.image), predict_fn, patch, stride, batch_size=batch_size,
                                  blend="mean", pad_value=0.0)
    if case.brain is not None:
        prob[np.asarray(case.brain) == 0] = 0.0
    return prob


def validate_cases(predict_fn: Callable[[np.ndarray], Any], cases: Sequence[ValidationCase], patch: int,
                   stride: int, threshold: float = 0.5, batch_size: int = 1) -> pd.DataFrame:
    """Per-case whole-volume Dice and lesion-wise detection of ``cases``.

    Parameters
    ----------
    predict_fn : callable
        The network as a predict_fn.
    cases : sequence of ValidationCase
    patch, stride : int
        Sliding-window settings.
    threshold : float, default=0.5
        Probability threshold (``prob >= threshold``, as the evaluation stage).
    batch_size : int, default=1

    Returns
    -------
    DataFrame
        One row per case: patient_id, dice, lesion_sensitivity, lesion_sensitivity_gt10 (NaN when the
        case has no lesion > 10 mm), n_true, n_detected, n_fp, the voxel counts tp, fp, fn, tn, seconds.
    """
    import time

    rows = []
    for case in cases:
        t0 = time.perf_counter()
        pred = predict_volume(case, predict_fn, patch, stride, batch_size) >= threshold
        truth = np.asarray(case.mask) > 0
        counts = confusion_counts(pred, truth)
        dice = metrics_from_counts(*counts)["dice"]
        table = lesion_table(pred, truth, case.spacing)
        true_rows = table[table["origin"] == "truth"]
        big = true_rows[true_rows["size_bin"] == ">10 mm"]
        n_true, n_det = len(true_rows), int(true_rows["matched"].sum())
        rows.append({
            "patient_id": case.patient_id, "dice": float(dice),
            "lesion_sensitivity": n_det / n_true if n_true else 1.0,
            "lesion_sensitivity_gt10": float(big["matched"].mean()) if len(big) else math.nan,
            "n_true": n_true, "n_detected": n_det,
            "n_fp": int((~table.loc[table["origin"] == "pred", "matched"]).sum()),
            **dict(zip(("tp", "fp", "fn", "tn"), (int(c) for c in counts))),
            "seconds": round(time.perf_counter() - t0, 2),
        })
    return pd.DataFrame(rows)


def summarise(per_case: pd.DataFrame) -> dict[str, float]:
    """The epoch-log summary (:data:`SUMMARY_KEYS`) of :func:`validate_cases`' rows.

    ``val_case_dice`` is the mean per-case Dice (the model-selection value); ``val_global_dice`` pools
    the voxels of all cases (nnU-Net's "pseudo Dice": a lesion-free or tiny-lesion case cannot pull it to
    0 with a few false-positive voxels; NaN for rows without voxel counts); lesion sensitivities
    pool the lesions of all cases; ``val_fp_per_case`` is the mean number of false-positive components.
    """
    if per_case.empty:
        return {k: math.nan for k in SUMMARY_KEYS}
    n_true = per_case["n_true"].sum()
    return {
        "val_case_dice": float(per_case["dice"].mean()),
        "val_case_dice_median": float(per_case["dice"].median()),
        "val_case_dice_min": float(per_case["dice"].min()),
        "val_global_dice": _pooled_dice(per_case),
        "val_lesion_sensitivity": float(per_case["n_detected"].sum() / n_true) if n_true else 1.0,
        "val_lesion_sensitivity_gt10": float(np.nanmean(per_case["lesion_sensitivity_gt10"]))
        if per_case["lesion_sensitivity_gt10"].notna().any() else math.nan,
        "val_fp_per_case": float(per_case["n_fp"].mean()),
    }


def _pooled_dice(per_case: pd.DataFrame) -> float:
    """2 TP / (2 TP + FP + FN) over all cases' voxels (NaN without counts, 1.0 when both are empty)."""
    if not {"tp", "fp", "fn"} <= set(per_case.columns):
        return math.nan
    tp, fp, fn = (float(per_case[k].sum()) for k in ("tp", "fp", "fn"))
    return 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) > 0 else 1.0


def _bn_batches(sampler: PatchSampler | None, n: int, batch_size: int) -> list[np.ndarray]:
    """``n`` fixed recalibration patches (samples 0..n-1 of ``sampler``) in batches."""
    if sampler is None or n <= 0:
        return []
    images, _ = sampler.arrays(n)
    return [images[i:i + batch_size] for i in range(0, n, batch_size)]


def _write_scalars(writer: Any, summary: dict[str, float], epoch: int) -> None:
    """The summary as TensorBoard scalars (finite values only)."""
    import tensorflow as tf

    with writer.as_default():
        for k, v in summary.items():
            if np.isfinite(v):
                tf.summary.scalar(k, v, step=epoch)
        writer.flush()


def epoch_validation_class() -> Any:
    """The Keras callback class of the whole-volume validation (module docstring).

    Returns
    -------
    type
        ``EpochValidation(out_dir, cases, every, patch, stride, bn_sampler=None, bn_patches=0,
        batch_size=1, last_epoch=None)``: ``cases`` are :class:`ValidationCase`; ``every`` 0 disables
        validation (``lr`` is still logged, precise BN still runs before every checkpoint);
        ``bn_sampler`` (a :class:`PatchSampler` without augmentation or lesion oversampling) gives
        the ``bn_patches`` precise-BN patches; the last epoch (``last_epoch``, 0-based) is always validated.
    """
    import keras

    class EpochValidation(keras.callbacks.Callback):
        """Precise BN + whole-volume validation at the end of every ``every``-th epoch."""

        def __init__(self, out_dir: Path, cases: Sequence[ValidationCase], every: int, patch: int, stride: int,
                     bn_sampler: PatchSampler | None = None, bn_patches: int = 0, batch_size: int = 1,
                     last_epoch: int | None = None) -> None:
            super().__init__()
            self.out_dir, self.cases, self.every = Path(out_dir), list(cases), int(every)
            self.patch, self.stride, self.batch_size, self.last_epoch = int(patch), int(stride), batch_size, last_epoch
            self.bn_batches = _bn_batches(bn_sampler, bn_patches, batch_size)
            self._writer: Any = None

        def _due(self, epoch: int) -> bool:
            return bool(self.cases) and self.every > 0 and ((epoch + 1) % self.every == 0 or epoch == self.last_epoch)

        def _predict(self, batch: np.ndarray) -> np.ndarray:
            strategy = getattr(self.model, "distribute_strategy", None)
            if strategy is not None and strategy.num_replicas_in_sync > 1:  # predict_on_batch splits the batch
                return np.asarray(self.model(batch, training=False), dtype=np.float32)
            return np.asarray(self.model.predict_on_batch(batch), dtype=np.float32)

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            if logs is None:
                return
            logs["lr"] = float(np.asarray(self.model.optimizer.learning_rate))
            summary = {k: math.nan for k in SUMMARY_KEYS} if self.cases else {}
            due = self._due(epoch)
            recalibrate = bool(self.bn_batches) and (due or not self.cases or self.every == 0)
            if due or recalibrate:  # swap the averages in only in epochs that use the weights here
                with averaged_weights(self.model):
                    if recalibrate:
                        recalibrate_batchnorm(self.model, self.bn_batches)
                    if due:
                        per_case = validate_cases(self._predict, self.cases, self.patch, self.stride,
                                                  batch_size=self.batch_size)
            if due:
                summary = summarise(per_case)
                self._append_cases(per_case, epoch)
                self._tensorboard(summary, epoch)
                log.info("epoch %d whole-volume validation: %s", epoch + 1,
                         ", ".join(f"{k}={v:.4f}" for k, v in summary.items()))
            logs.update(summary)

        def _append_cases(self, per_case: pd.DataFrame, epoch: int) -> None:
            path = self.out_dir / CASES_FILE
            append_rows(path, per_case.assign(epoch=epoch)[["epoch", *per_case.columns]])

        def _tensorboard(self, summary: dict[str, float], epoch: int) -> None:
            if not (self.out_dir / "logs").is_dir():
                return
            import tensorflow as tf

            if self._writer is None:
                self._writer = tf.summary.create_file_writer(str(self.out_dir / "logs" / "whole_volume"))
            _write_scalars(self._writer, summary, epoch)

    return EpochValidation


def select_monitor(config: TrainConfig, val_ids: Sequence[str]) -> str:
    """The monitored key: ``config.monitor``, or its training-set twin when no case is held out.

    Parameters
    ----------
    config : TrainConfig
    val_ids : sequence of str
        The validation cases.

    Returns
    -------
    str
        ``config.monitor``; without validation cases ``loss`` for whole-volume monitors, else the
        monitor without its ``val_`` prefix.

    Raises
    ------
    ValueError
        If a whole-volume monitor is asked for with ``val_every = 0``.
    """
    if val_ids:
        if config.monitor.startswith("val_case") and config.val_every <= 0:
            raise ValueError(f"monitor={config.monitor!r} needs whole-volume validation (val_every > 0)")
        return config.monitor
    return "loss" if config.monitor.startswith("val_case") else config.monitor.removeprefix("val_")


def make_validation_callback(out_dir: Path, preprocessed_dir: Path, train_ids: list[str], val_ids: list[str],
                         config: TrainConfig) -> Any:
    """The whole-volume validation / precise-BN / ``lr`` callback of a run with ``config``.

    Parameters
    ----------
    out_dir : pathlib.Path
        The run's output folder.
    preprocessed_dir : pathlib.Path
        Folder written by ``bmstudy preprocess``.
    train_ids, val_ids : list of str
        Training cases (precise-BN patches) and validation cases (whole-volume validation).
    config : TrainConfig

    Returns
    -------
    keras.callbacks.Callback
        An :func:`epoch_validation_class` instance.
    """
    cases = load_validation_cases(preprocessed_dir, val_ids) if config.val_every > 0 else []
    bn_sampler = None
    if config.precise_bn_patches > 0 and config.norm == "batch":
        bn_sampler = PatchSampler(load_cases(preprocessed_dir, train_ids), config.patch_size, 0.0, None,
                                  seed=config.seed + _BN_SEED_OFFSET, background="head")
    window = int(config.val_window or config.inference_patch)
    stride = int(config.val_stride or config.inference_stride)
    return epoch_validation_class()(out_dir, cases, config.val_every, window, min(stride, window), bn_sampler,
                                    config.precise_bn_patches, batch_size=config.batch_size,
                                    last_epoch=config.epochs - 1)
