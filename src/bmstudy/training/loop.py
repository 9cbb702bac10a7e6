"""Training: profiles (``TrainConfig``), the resumable Keras training loop (``train``), CLI ``bmstudy train``.

Outputs of ``train(preprocessed_dir, manifest_df, out_dir, config)`` in ``out_dir``:

- ``model_best.keras``: best epoch by the monitored quantity (``val_loss``; ``loss`` without validation),
  an uncompiled copy without optimizer state (for inference; ~290 MB instead of ~880 MB).
- ``checkpoint/last.keras`` + ``checkpoint/state.json``: model WITH optimizer state after each epoch, and
  the number of completed epochs, optimizer iterations and best value so far. Both written atomically
  (a kill mid-save leaves the previous checkpoint intact), which is why this is a small callback and not
  ``keras.callbacks.ModelCheckpoint`` (that writes in place). Calling ``train`` again on the same
  ``out_dir`` resumes: epoch counter, optimizer iterations/moments and learning rate are restored, and
  the patch stream continues at sample ``iterations * batch_size`` (samples are a pure function of
  ``(seed, index)``, see ``bmstudy.training.data``), so a resumed run sees the same data as an uninterrupted one.
- ``training_log.csv`` (CSVLogger, appended on resume), ``logs/`` (TensorBoard), ``train_config.json``
  (the config, train/validation case ids, top-level ``inference_patch``, ``inference_stride``,
  ``preprocessing`` copied from the cases' ``meta.json``, package versions, timing, status).

Multi-GPU: ``tf.distribute.MirroredStrategy`` when more than one GPU is visible. Mixed precision
(``mixed_float16``, loss scaling by Keras) only when requested AND a GPU is present.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..training.data import AugmentParams, PatchSampler, load_cases, make_dataset
from ..training.model import build_model, check_patch_size, custom_objects, dice_score, make_loss
from ..utils import PathLike, atomic_path, atomic_write_json, get_logger, params_hash

log = get_logger("bmstudy.training.loop")

CHECKPOINT_DIR = "checkpoint"
LAST_MODEL = "last.keras"
STATE_FILE = "state.json"
BEST_MODEL = "model_best.keras"
CONFIG_FILE = "train_config.json"
LOG_FILE = "training_log.csv"


from ..plan import TrainConfig  # noqa: E402


# ----------------------------------------------------------------------------- helpers


def select_training_cases(preprocessed_dir: PathLike, manifest_df: pd.DataFrame) -> list[str]:
    """Patient ids with split == 'train' in the manifest AND status 'ok' in preprocess_report.csv."""
    report_path = Path(preprocessed_dir) / "preprocess_report.csv"
    if not report_path.is_file():
        raise FileNotFoundError(f"{report_path} not found: run `bmstudy preprocess` first")
    report = pd.read_csv(report_path, dtype={"patient_id": str})
    for col in ("patient_id", "status"):
        if col not in report.columns:
            raise ValueError(f"{report_path}: missing column {col!r}")
    if "patient_id" not in manifest_df.columns or "split" not in manifest_df.columns:
        raise ValueError("manifest_df needs columns 'patient_id' and 'split'")
    ok = set(report.loc[report["status"] == "ok", "patient_id"].astype(str))
    train_ids = manifest_df.loc[manifest_df["split"].astype(str) == "train", "patient_id"].astype(str)
    ids = [p for p in train_ids if p in ok]
    skipped = sorted(set(train_ids) - ok)
    if skipped:
        log.warning("%d training case(s) not 'ok' in %s, skipped: %s", len(skipped), report_path, skipped[:10])
    if not ids:
        raise ValueError(f"no training cases: none of the manifest's split=='train' rows has status 'ok' in {report_path}")
    return ids


def split_validation(ids: Sequence[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Deterministic hold-out: ``round(val_fraction * n)`` cases (>= 1 if fraction > 0 and n >= 2)."""
    ids = sorted(ids)
    n_val = int(round(val_fraction * len(ids)))
    if val_fraction > 0 and len(ids) >= 2:
        n_val = max(1, n_val)
    n_val = min(n_val, len(ids) - 1)
    perm = np.random.default_rng(seed).permutation(len(ids))
    val = sorted(ids[i] for i in perm[:n_val])
    train = [p for p in ids if p not in set(val)]
    return train, val


def _preprocessing_record(preprocessed_dir: Path, ids: Sequence[str]) -> dict[str, Any]:
    """The preprocessing parameters shared by the training cases (from their meta.json)."""
    records: dict[str, dict[str, Any]] = {}
    for pid in ids:
        path = preprocessed_dir / pid / "meta.json"
        if not path.is_file():
            continue
        meta = json.loads(path.read_text(encoding="utf-8"))
        params = meta.get("params", meta.get("preprocess_params"))
        if isinstance(params, dict):
            records[params_hash(params)] = params
    if not records:
        log.warning("no preprocessing params found in %s/*/meta.json", preprocessed_dir)
        return {}
    if len(records) > 1:
        raise ValueError(f"training cases in {preprocessed_dir} were preprocessed with {len(records)} different parameter sets")
    return next(iter(records.values()))


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("tensorflow-cpu", "tensorflow", "keras", "segmentation-models-3D", "classification-models-3D",
                "volumentations-3D", "numpy", "bmstudy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def _make_callbacks_module() -> Any:
    import keras

    class EpochCheckpoint(keras.callbacks.Callback):
        """Atomic best-model and last-checkpoint (with optimizer) saving after every epoch."""

        def __init__(self, out_dir: Path, monitor: str, best: float = math.inf,
                     inference_factory: Any = None) -> None:
            super().__init__()
            self.out_dir, self.monitor, self.best = out_dir, monitor, best
            self.inference_factory, self._inference_model = inference_factory, None

        def _save_best(self, path: Path) -> None:
            # Keras 3 .keras files always carry the optimizer of a compiled model (3x the size);
            # the best model is for inference, so save an uncompiled twin with the same weights.
            if self.inference_factory is None:
                self.model.save(path)
                return
            if self._inference_model is None:
                self._inference_model = self.inference_factory()
            self._inference_model.set_weights(self.model.get_weights())
            self._inference_model.save(path)

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            logs = dict(logs or {})
            value = logs.get(self.monitor)
            if value is not None and np.isfinite(value) and value < self.best:
                log.info("epoch %d: %s improved %.5f -> %.5f, saving %s", epoch + 1, self.monitor,
                         self.best, value, BEST_MODEL)
                self.best = float(value)
                with atomic_path(self.out_dir / BEST_MODEL) as tmp:
                    self._save_best(tmp)
            ckpt = self.out_dir / CHECKPOINT_DIR
            with atomic_path(ckpt / LAST_MODEL) as tmp:
                self.model.save(tmp)
            atomic_write_json(ckpt / STATE_FILE, {
                "epoch": epoch + 1,
                "iterations": int(self.model.optimizer.iterations.numpy()),
                "monitor": self.monitor, "best": self.best,
                "logs": {k: float(v) for k, v in logs.items()},
            })

    return EpochCheckpoint


def _truncate_log(path: Path, n_epochs: int) -> None:
    """Keep only rows of completed (checkpointed) epochs in the CSV log before appending on resume."""
    if not path.is_file():
        return
    df = pd.read_csv(path)
    if "epoch" in df.columns and (df["epoch"] >= n_epochs).any():
        from ..utils import atomic_to_csv

        atomic_to_csv(df[df["epoch"] < n_epochs], path)


# ----------------------------------------------------------------------------- train


def train(preprocessed_dir: PathLike, manifest_df: pd.DataFrame, out_dir: PathLike,
          config: TrainConfig | None = None, *, resume: bool = True,
          extra_callbacks: Sequence[Any] = ()) -> Path:
    """Train the model on the manifest's ``split == 'train'`` cases that preprocessed ``ok``.

    Resumes from ``out_dir/checkpoint`` when it exists and ``resume`` is true (the stored config must
    match ``config``, except ``epochs`` which may be raised). Returns ``out_dir``.
    ``extra_callbacks`` are appended to the Keras callbacks (tests use one to simulate a crash).
    """
    import keras
    import tensorflow as tf

    config = config or TrainConfig.from_profile("cpu")
    preprocessed_dir, out_dir = Path(preprocessed_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ids = select_training_cases(preprocessed_dir, manifest_df)
    train_ids, val_ids = split_validation(ids, config.val_fraction, config.seed)
    monitor = config.monitor if val_ids else config.monitor.removeprefix("val_")
    log.info("training on %d case(s), validating on %d; %d epochs x %d steps, batch %d, patch %s",
             len(train_ids), len(val_ids), config.epochs, config.steps_per_epoch, config.batch_size,
             config.patch_size)

    state_path = out_dir / CHECKPOINT_DIR / STATE_FILE
    cfg_path = out_dir / CONFIG_FILE
    state = None
    if resume and state_path.is_file():
        state = json.loads(state_path.read_text(encoding="utf-8"))
        if cfg_path.is_file():
            old = dict(json.loads(cfg_path.read_text(encoding="utf-8")).get("config", {}))
            new = config.to_dict()
            old.pop("epochs", None), new.pop("epochs", None)
            if json.loads(json.dumps(old)) != json.loads(json.dumps(new)):
                raise ValueError(f"{out_dir} holds a checkpoint trained with a different config; "
                                 "use a new out_dir or resume=False")

    record: dict[str, Any] = {
        "config": config.to_dict(), "profile": config.profile,
        "patch_size": list(config.patch_size),
        "inference_patch": config.inference_patch, "inference_stride": config.inference_stride,
        "preprocessing": _preprocessing_record(preprocessed_dir, ids),
        "train_cases": train_ids, "val_cases": val_ids, "monitor": monitor,
        "versions": _versions(), "status": "running",
    }
    atomic_write_json(cfg_path, record)

    gpus = tf.config.list_physical_devices("GPU")
    strategy = tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    use_mp = bool(config.mixed_precision and gpus)
    if config.mixed_precision and not gpus:
        log.warning("mixed_precision requested but no GPU is visible: training in float32")
    old_policy = keras.mixed_precision.global_policy()
    keras.utils.set_random_seed(config.seed)
    t0 = time.perf_counter()
    try:
        if use_mp:
            keras.mixed_precision.set_global_policy("mixed_float16")
        with strategy.scope():
            if state is not None:
                model = keras.models.load_model(out_dir / CHECKPOINT_DIR / LAST_MODEL,
                                                custom_objects=custom_objects(), compile=True)
                initial_epoch, best = int(state["epoch"]), float(state.get("best", math.inf))
                log.info("resuming from %s: epoch %d, optimizer iterations %d", state_path, initial_epoch,
                         int(model.optimizer.iterations.numpy()))
            else:
                # spatial dims left open: fully convolutional, so inference may use larger windows
                model = build_model(None, config.encoder_weights, config.decoder_dropout,
                                    backbone=config.backbone, dropout_type=config.dropout_type)
                opt = keras.optimizers.Adam(learning_rate=config.learning_rate, beta_1=config.beta_1,
                                            beta_2=config.beta_2, epsilon=config.epsilon)
                model.compile(optimizer=opt, loss=make_loss(config.dice_weight, config.bce_weight),
                              metrics=[dice_score])
                initial_epoch, best = 0, math.inf

        iterations = int(model.optimizer.iterations.numpy()) if state is not None else 0
        aug = AugmentParams.from_dict(config.augment)
        sampler = PatchSampler(load_cases(preprocessed_dir, train_ids), config.patch_size,
                               config.lesion_fraction, aug, seed=config.seed, center_jitter=config.center_jitter,
                               border_overhang=config.border_overhang)
        train_ds = make_dataset(sampler, config.batch_size, start_index=iterations * config.batch_size,
                                num_parallel_calls=config.num_parallel_calls)
        val_data = None
        if val_ids:
            vs = PatchSampler(load_cases(preprocessed_dir, val_ids), config.patch_size, 0.5, None,
                              seed=config.seed + 1_000_003, center_jitter=config.center_jitter,
                              border_overhang=config.border_overhang)
            val_data = vs.arrays(max(1, config.val_patches_per_case * len(val_ids)))

        _truncate_log(out_dir / LOG_FILE, initial_epoch)
        callbacks: list[Any] = [
            _make_callbacks_module()(out_dir, monitor, best, inference_factory=lambda: build_model(
                None, None, config.decoder_dropout, backbone=config.backbone, dropout_type=config.dropout_type)),
            keras.callbacks.CSVLogger(str(out_dir / LOG_FILE), append=initial_epoch > 0),
            keras.callbacks.TensorBoard(log_dir=str(out_dir / "logs"), write_graph=False, profile_batch=0),
            keras.callbacks.TerminateOnNaN(),
        ]
        if config.early_stopping_patience:
            callbacks.append(keras.callbacks.EarlyStopping(monitor=monitor, patience=config.early_stopping_patience,
                                                           restore_best_weights=False))
        callbacks.extend(extra_callbacks)
        history = None
        if initial_epoch < config.epochs:
            history = model.fit(train_ds, steps_per_epoch=config.steps_per_epoch, epochs=config.epochs,
                                initial_epoch=initial_epoch, validation_data=val_data,
                                validation_batch_size=config.batch_size, callbacks=callbacks, verbose=2)
        else:
            log.info("checkpoint already has %d epoch(s) >= epochs=%d: nothing to train", initial_epoch, config.epochs)
    finally:
        keras.mixed_precision.set_global_policy(old_policy)

    final_state = json.loads(state_path.read_text(encoding="utf-8")) if state_path.is_file() else {}
    if not (out_dir / BEST_MODEL).is_file():  # e.g. every monitored value was NaN
        raise RuntimeError(f"training in {out_dir} produced no {BEST_MODEL} (monitored {monitor} never finite)")
    record.update(status="complete", epochs_completed=final_state.get("epoch"),
                  optimizer_iterations=final_state.get("iterations"), best=final_state.get("best"),
                  train_seconds_this_run=round(time.perf_counter() - t0, 1),
                  stopped_early=bool(history is not None and final_state.get("epoch", 0) < config.epochs))
    atomic_write_json(cfg_path, record)
    log.info("training finished: %s epochs, best %s = %s; outputs in %s", record["epochs_completed"], monitor,
             record["best"], out_dir)
    return out_dir


# ----------------------------------------------------------------------------- CLI


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preprocessed", required=True, help="folder written by `bmstudy preprocess`")
    parser.add_argument("--manifest", required=True, help="data_manifest.csv (split column selects 'train')")
    parser.add_argument("--out", required=True, help="output folder (resumed if it holds a checkpoint)")
    parser.add_argument("--profile", default="cpu", choices=TrainConfig.PROFILES)
    parser.add_argument("--encoder-weights", default=None, help="local .h5 of 3-channel ImageNet encoder weights")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--steps-per-epoch", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--patch-size", type=int, default=None, help="cubic patch edge (multiple of 32)")
    parser.add_argument("--learning-rate", type=float, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--mixed-precision", action="store_true")
    parser.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` described by parsed ``bmstudy train`` arguments."""
    overrides: dict[str, Any] = {}
    for key in ("encoder_weights", "epochs", "steps_per_epoch", "batch_size", "learning_rate", "seed"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    if args.patch_size is not None:
        overrides["patch_size"] = (args.patch_size,) * 3
    if args.mixed_precision:
        overrides["mixed_precision"] = True
    return TrainConfig.from_profile(args.profile, **overrides)


def cli_main(args: argparse.Namespace) -> int:
    from ..io.manifest import load_manifest

    config = config_from_args(args)
    out = train(args.preprocessed, load_manifest(args.manifest), args.out, config, resume=not args.no_resume)
    print(out / BEST_MODEL)
    return 0
