"""The resumable Keras training loop (:func:`train`); the ``bmstudy train`` command is in :mod:`.train_cli`.

TensorFlow and Keras are imported only inside functions.

This module owns the training run: choosing the training and validation cases, building or resuming
the model, fitting it on the :mod:`~bmstudy.training.sampling` patch stream, and the files of the
run's output folder. Settings: :class:`~bmstudy.plan.TrainConfig` (with its profiles, in :mod:`bmstudy.plan`).

Reads ``preprocess_report.csv`` and ``<patient_id>/{image,mask}.npy, meta.json`` (``bmstudy preprocess``).

Outputs of ``train(preprocessed_dir, manifest_df, out_dir, config)`` in ``out_dir``:

- ``model_best.keras``: best epoch by the monitored quantity (``config.monitor``: ``val_case_dice``, the
  whole-volume validation of :mod:`bmstudy.training.validation`, for ``cpu``/``tiny``; ``val_loss`` on
  the fixed validation patches for ``paper``; ``loss`` without validation cases),
  an uncompiled copy without optimizer state (for inference; ~290 MB instead of ~880 MB).
- ``checkpoint/last.keras`` + ``checkpoint/state.json``: model WITH optimizer state after each epoch, and
  the number of completed epochs, optimizer iterations and best value so far. Both written atomically
  (a kill mid-save leaves the previous checkpoint intact) by :mod:`bmstudy.training.checkpoint`'s
  callback, not ``keras.callbacks.ModelCheckpoint`` (that writes in place). Calling ``train`` again on the same
  ``out_dir`` resumes: epoch counter, optimizer state (moments, weight averages), learning rate and the
  dropout seed states are restored, and the patch stream continues at sample ``iterations * batch_size``
  (a pure function of ``(seed, index)``): a resumed run ends with the weights of an uninterrupted one.
- ``validation_cases.csv``: per-case whole-volume validation (Dice, lesion-wise sensitivity) per validated epoch.
- ``training_log.csv`` (CSVLogger, appended on resume), ``logs/`` (TensorBoard), ``train_config.json``
  (the config, train/validation case ids, top-level ``inference_patch``, ``inference_stride``,
  ``preprocessing`` copied from the cases' ``meta.json``, package versions, timing, status, and
  ``determinism``: ``op_determinism``, ``inter_op_threads`` and ``deterministic``, whether the run is
  expected to repeat exactly, see :mod:`bmstudy.training.determinism`).

Determinism (``config.deterministic``, default on): ``keras.utils.set_random_seed(seed)`` always;
op determinism and ONE inter-op thread as well when set (:func:`.determinism.configure_determinism`,
before TensorFlow's runtime starts): two runs with one seed write a byte-identical ``training_log.csv``
(2-core CPU, oneDNN on; op determinism alone differs from the first epochs). Both are process-wide.

Multi-GPU: ``tf.distribute.MirroredStrategy`` when more than one GPU is visible. Precision
(``config.precision``, :mod:`bmstudy.precision`): ``mixed_float16`` (loss scaling by Keras) only on a
GPU; ``mixed_bfloat16`` anywhere (``auto`` picks it on CPUs with native bfloat16); the exported
``model_best.keras`` is built float32 either way.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ..plan import AugmentParams, TrainConfig
from ..utils import PathLike, atomic_write_json, get_logger, params_hash
from ..precision import resolve_precision
from .checkpoint import (STATE_FILE, epoch_checkpoint_class, finite_weights_guard_class, initial_best, monitor_mode,
                         restore_seed_generator_states, resume_state, truncate_log)
from .ema import ema_evaluation_class
from .model import (BEST_MODEL, CHECKPOINT_DIR, CONFIG_FILE, LAST_MODEL, build_model, custom_objects, dice_score,
                    make_loss)
from .sampling import PatchSampler, load_cases, make_dataset
from .validation import CASES_FILE, make_validation_callback, meta_spacing, select_monitor

__all__ = ["CHECKPOINT_DIR", "LAST_MODEL", "STATE_FILE", "BEST_MODEL", "CONFIG_FILE", "LOG_FILE", "TrainConfig",
           "select_training_cases", "split_validation", "lesion_volumes", "train"]

log = get_logger("bmstudy.training.loop")

#: Per-epoch CSV log (appended on resume).
LOG_FILE = "training_log.csv"

#: Seed offset of the (fixed, un-augmented) validation patches.
_VAL_SEED_OFFSET = 1_000_003


# ----------------------------------------------------------------------------- cases


def select_training_cases(preprocessed_dir: PathLike, manifest_df: pd.DataFrame) -> list[str]:
    """Patient ids with ``split == 'train'`` in the manifest AND status ``ok`` in ``preprocess_report.csv``.

    Parameters
    ----------
    preprocessed_dir : str or PathLike
        Folder written by ``bmstudy preprocess`` (holds ``preprocess_report.csv``).
    manifest_df : pandas.DataFrame
        The data manifest; needs columns ``patient_id`` and ``split``.

    Returns
    -------
    list of str
        The training case ids, in manifest order (train cases not ``ok`` are logged and skipped).

    Raises
    ------
    FileNotFoundError
        If ``preprocess_report.csv`` is missing.
    ValueError
        If a required column is missing or no training case is left.
    """
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


def split_validation(ids: Sequence[str], val_fraction: float, seed: int,
                     strata: Mapping[str, float] | None = None) -> tuple[list[str], list[str]]:
    """Deterministic hold-out of ``round(val_fraction * n)`` cases.

    At least one case is held out when ``val_fraction > 0`` and ``n >= 2``; at least one is always
    left for training. Without ``strata`` the held-out cases are a seeded random draw. With ``strata``
    (e.g. each case's lesion volume) they are a systematic sample over the cases ranked by it: a
    seeded random start inside the first interval of ``n / n_val`` ranks, then one case per interval, so
    every seed validates on the whole range (a random draw of 5 of 32 cases gave one seed 4 cases with
    <= 0.3 mL of lesion and another 0.8-1.5 mL each).

    Parameters
    ----------
    ids : sequence of str
        The training case ids (order does not matter: they are sorted first).
    val_fraction : float
        Share of cases held out.
    seed : int
        Seed of the permutation (random) or of the start (stratified).
    strata : mapping of str to float, optional
        A value per id to stratify on; ties are broken by id.

    Returns
    -------
    train : list of str
        The remaining cases, sorted.
    val : list of str
        The held-out cases, sorted.

    Raises
    ------
    ValueError
        If ``strata`` lacks an id or holds a non-finite value.
    """
    ids = sorted(ids)
    n_val = int(round(val_fraction * len(ids)))
    if val_fraction > 0 and len(ids) >= 2:
        n_val = max(1, n_val)
    n_val = min(n_val, len(ids) - 1)
    rng = np.random.default_rng(seed)
    if strata is None or n_val == 0:
        perm = rng.permutation(len(ids))
        val = sorted(ids[i] for i in perm[:n_val])
    else:
        missing = [i for i in ids if i not in strata or not np.isfinite(float(strata[i]))]
        if missing:
            raise ValueError(f"split_validation: no finite stratum for case(s) {missing[:5]}")
        ranked = sorted(ids, key=lambda i: (float(strata[i]), i))
        step = len(ranked) / n_val
        start = rng.uniform(0.0, step)
        val = sorted(ranked[min(int(start + k * step), len(ranked) - 1)] for k in range(n_val))
    held = set(val)
    train = [p for p in ids if p not in held]
    return train, val


def lesion_volumes(preprocessed_dir: PathLike, ids: Sequence[str]) -> dict[str, float]:
    """Lesion voxel count x voxel volume (mL) of each preprocessed case (``mask.npy``, ``meta.json``)."""
    out: dict[str, float] = {}
    for pid in ids:
        case_dir = Path(preprocessed_dir) / pid
        meta = json.loads((case_dir / "meta.json").read_text(encoding="utf-8"))
        spacing = meta_spacing(meta)
        mask = np.load(case_dir / "mask.npy", mmap_mode="r")
        out[pid] = float(np.count_nonzero(mask)) * float(np.prod(spacing)) / 1000.0
    return out


# ----------------------------------------------------------------------------- run record


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
    """Installed versions of the packages that make a trained model (those found)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("tensorflow-cpu", "tensorflow", "keras", "segmentation-models-3D", "classification-models-3D",
                "volumentations-3D", "numpy", "bmstudy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def _start_record(config: TrainConfig, preprocessed_dir: Path, ids: Sequence[str], train_ids: list[str],
                  val_ids: list[str], monitor: str) -> dict[str, Any]:
    """The ``train_config.json`` content written when a run starts (``status: running``)."""
    return {
        "config": config.to_dict(), "profile": config.profile,
        "patch_size": list(config.patch_size),
        "inference_patch": config.inference_patch, "inference_stride": config.inference_stride,
        "preprocessing": _preprocessing_record(preprocessed_dir, ids),
        "train_cases": train_ids, "val_cases": val_ids, "monitor": monitor,
        "versions": _versions(), "status": "running",
    }


def _finish_record(out_dir: Path, record: dict[str, Any], config: TrainConfig, monitor: str,
                   history: Any, t0: float) -> None:
    """Check that a best model exists and rewrite ``train_config.json`` with ``status: complete``."""
    state_path = out_dir / CHECKPOINT_DIR / STATE_FILE
    final_state = json.loads(state_path.read_text(encoding="utf-8")) if state_path.is_file() else {}
    if not (out_dir / BEST_MODEL).is_file():  # e.g. every monitored value was NaN
        raise RuntimeError(f"training in {out_dir} produced no {BEST_MODEL} (monitored {monitor} never finite)")
    record.update(status="complete", epochs_completed=final_state.get("epoch"),
                  optimizer_iterations=final_state.get("iterations"), best=final_state.get("best"),
                  train_seconds_this_run=round(time.perf_counter() - t0, 1),
                  stopped_early=bool(history is not None and final_state.get("epoch", 0) < config.epochs))
    atomic_write_json(out_dir / CONFIG_FILE, record)
    log.info("training finished: %s epochs, best %s = %s; outputs in %s", record["epochs_completed"], monitor,
             record["best"], out_dir)


# ----------------------------------------------------------------------------- model


def _model_and_start(out_dir: Path, config: TrainConfig, state: dict[str, Any] | None) -> tuple[Any, int, float]:
    """``(compiled model, initial epoch, best monitored value)``: the checkpoint's, or a new model's.

    Call inside the distribution strategy's scope.
    """
    import keras

    if state is not None:
        model = keras.models.load_model(out_dir / CHECKPOINT_DIR / LAST_MODEL,
                                        custom_objects=custom_objects(), compile=True)
        mode = state.get("mode", monitor_mode(str(state.get("monitor", config.monitor))))
        initial_epoch, best = int(state["epoch"]), float(state.get("best", initial_best(mode)))
        if "seed_states" in state:  # dropout masks continue as in an uninterrupted run
            restore_seed_generator_states(model, state["seed_states"])
        log.info("resuming from %s: epoch %d, optimizer iterations %d", out_dir / CHECKPOINT_DIR / STATE_FILE,
                 initial_epoch, int(model.optimizer.iterations.numpy()))
        return model, initial_epoch, best
    # spatial dims left open: fully convolutional, so inference may use larger windows
    model = build_model(None, config.encoder_weights, config.decoder_dropout,
                        backbone=config.backbone, dropout_type=config.dropout_type, norm=config.norm,
                        output_prior=config.output_prior)
    opt = keras.optimizers.Adam(learning_rate=learning_rate(config), beta_1=config.beta_1,
                                beta_2=config.beta_2, epsilon=config.epsilon,
                                use_ema=config.ema_momentum is not None, ema_momentum=config.ema_momentum or 0.99)
    model.compile(optimizer=opt, loss=make_loss(config.dice_weight, config.bce_weight), metrics=[dice_score])
    return model, 0, initial_best(monitor_mode(config.monitor))


def learning_rate(config: TrainConfig) -> Any:
    """The optimizer's learning rate: a float (``constant``) or a Keras schedule over all steps.

    ``poly``: nnU-Net's ``lr * (1 - step / total) ** 0.9``; ``cosine``: cosine decay to 0. The schedule
    is a function of the optimizer's iteration counter, which the checkpoint restores, so a resumed
    run continues the schedule where it stopped (raising ``epochs`` on resume keeps the old length).

    Parameters
    ----------
    config : TrainConfig

    Returns
    -------
    float or keras.optimizers.schedules.LearningRateSchedule
    """
    import keras

    total = config.epochs * config.steps_per_epoch
    if config.lr_schedule == "poly":
        return keras.optimizers.schedules.PolynomialDecay(config.learning_rate, total, 0.0, power=0.9)
    if config.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(config.learning_rate, total, alpha=0.0)
    return float(config.learning_rate)


# ----------------------------------------------------------------------------- data and callbacks


def _datasets(preprocessed_dir: Path, train_ids: list[str], val_ids: list[str], config: TrainConfig,
              iterations: int) -> tuple[Any, tuple[np.ndarray, np.ndarray] | None]:
    """The training ``tf.data`` stream (continuing at sample ``iterations * batch_size``) and validation arrays.

    Validation patches are fixed (seed ``config.seed + 1_000_003``), un-augmented and half
    lesion-centred; ``None`` without validation cases.
    """
    aug = AugmentParams.from_dict(config.augment)
    quantile = config.hard_negative_quantile if config.hard_negative_fraction > 0 else None
    sampler = PatchSampler(load_cases(preprocessed_dir, train_ids, quantile), config.patch_size,
                           config.lesion_fraction, aug, seed=config.seed, center_jitter=config.center_jitter,
                           border_overhang=config.border_overhang, background=config.background_sampling,
                           hard_negative_fraction=config.hard_negative_fraction)
    train_ds = make_dataset(sampler, config.batch_size, start_index=iterations * config.batch_size,
                            num_parallel_calls=config.num_parallel_calls)
    val_data = None
    if val_ids:
        vs = PatchSampler(load_cases(preprocessed_dir, val_ids), config.patch_size, 0.5, None,
                          seed=config.seed + _VAL_SEED_OFFSET, center_jitter=config.center_jitter,
                          border_overhang=config.border_overhang)
        val_data = vs.arrays(max(1, config.val_patches_per_case * len(val_ids)))
    return train_ds, val_data


def _callbacks(out_dir: Path, config: TrainConfig, monitor: str, best: float, initial_epoch: int,
               extra_callbacks: Sequence[Any], validation: Any) -> list[Any]:
    """TensorBoard, the finite-weights guard, whole-volume validation, checkpointing, CSV log (appended on
    resume), NaN-loss stop, optional early stopping, extras (in this order: each sees the keys the
    previous ones added)."""
    import keras

    def inference_model() -> Any:  # float32 whatever the training policy: inference chooses its own
        old = keras.mixed_precision.global_policy()
        keras.mixed_precision.set_global_policy("float32")
        try:
            return build_model(None, None, config.decoder_dropout, backbone=config.backbone,
                               dropout_type=config.dropout_type, norm=config.norm)
        finally:
            keras.mixed_precision.set_global_policy(old)

    mode = monitor_mode(monitor)
    callbacks: list[Any] = [
        keras.callbacks.TensorBoard(log_dir=str(out_dir / "logs"), write_graph=False, profile_batch=0),
        finite_weights_guard_class()(),
        ema_evaluation_class()(),
        validation,
        epoch_checkpoint_class()(out_dir, monitor, best, inference_factory=inference_model, mode=mode),
        keras.callbacks.CSVLogger(str(out_dir / LOG_FILE), append=initial_epoch > 0),
        keras.callbacks.TerminateOnNaN(),
    ]
    if config.early_stopping_patience:
        callbacks.append(keras.callbacks.EarlyStopping(monitor=monitor, patience=config.early_stopping_patience,
                                                       mode=mode, restore_best_weights=False))
    callbacks.extend(extra_callbacks)
    return callbacks


def _strategy(config: TrainConfig) -> tuple[Any, str, dict[str, Any]]:
    """``(Distribution, Keras dtype policy, determinism record)``.

    Configures determinism first (it must precede the runtime's start, which making the strategy
    triggers), then makes the strategy of ``config.strategy`` (see :mod:`bmstudy.training.distribute`,
    which logs replicas and global batch) and resolves ``config.precision`` (:func:`bmstudy.precision.resolve_precision`).
    """
    import tensorflow as tf

    from .determinism import configure_determinism, cpu_bfloat16_policy
    from .distribute import distribution

    gpus = tf.config.list_physical_devices("GPU")  # does not start the runtime: the pool can still be set
    requested = "mixed_float16" if config.mixed_precision and config.precision == "float32" else config.precision
    policy = resolve_precision(requested, bool(gpus))
    if requested == "mixed_float16" and not gpus:
        log.warning("mixed_float16 requested but no GPU is visible: training in float32")
    if policy == "mixed_bfloat16" and not gpus:
        policy = cpu_bfloat16_policy(requested, config.strategy)
    det = configure_determinism(config.deterministic, config.strategy)
    dist = distribution(config)
    log.info("training precision: %s (requested %s)", policy, requested)
    return dist, policy, det


def _fit(out_dir: Path, preprocessed_dir: Path, train_ids: list[str], val_ids: list[str], config: TrainConfig,
         monitor: str, state: dict[str, Any] | None, extra_callbacks: Sequence[Any], strategy: Any,
         policy: str) -> Any:
    """Build or resume the model, then ``model.fit`` up to ``config.epochs``; the Keras history or ``None``.

    Seeds Keras with ``config.seed``; runs under ``strategy`` and the Keras dtype ``policy`` (the
    previous global policy is restored afterwards, also on errors).
    """
    import keras

    old_policy = keras.mixed_precision.global_policy()
    _seed_everything(config)
    try:
        if policy != "float32":
            keras.mixed_precision.set_global_policy(policy)
        with strategy.scope():
            model, initial_epoch, best = _model_and_start(out_dir, config, state)
        iterations = int(model.optimizer.iterations.numpy()) if state is not None else 0
        train_ds, val_data = _datasets(preprocessed_dir, train_ids, val_ids, config, iterations)
        truncate_log(out_dir / LOG_FILE, initial_epoch)
        truncate_log(out_dir / CASES_FILE, initial_epoch)
        validation = make_validation_callback(out_dir, preprocessed_dir, train_ids, val_ids, config)
        callbacks = _callbacks(out_dir, config, monitor, best, initial_epoch, extra_callbacks, validation)
        if initial_epoch >= config.epochs:
            log.info("checkpoint already has %d epoch(s) >= epochs=%d: nothing to train", initial_epoch, config.epochs)
            return None
        return model.fit(train_ds, steps_per_epoch=config.steps_per_epoch, epochs=config.epochs,
                         initial_epoch=initial_epoch, validation_data=val_data,
                         validation_batch_size=config.batch_size, callbacks=callbacks, verbose=2)
    finally:
        keras.mixed_precision.set_global_policy(old_policy)


def _seed_everything(config: TrainConfig) -> None:
    """Seed Python, numpy and TensorFlow (determinism itself is configured in :func:`_strategy`)."""
    import keras

    keras.utils.set_random_seed(config.seed)


# ----------------------------------------------------------------------------- train


def train(preprocessed_dir: PathLike, manifest_df: pd.DataFrame, out_dir: PathLike,
          config: TrainConfig | None = None, *, resume: bool = True,
          extra_callbacks: Sequence[Any] = ()) -> Path:
    """Train the model on the manifest's ``split == 'train'`` cases that preprocessed ``ok``.

    A share ``config.val_fraction`` of those cases is held out for validation
    (:func:`split_validation`). The outputs in ``out_dir`` are listed in this module's docstring.

    Parameters
    ----------
    preprocessed_dir : str or PathLike
        Folder written by ``bmstudy preprocess``.
    manifest_df : pandas.DataFrame
        The data manifest (columns ``patient_id`` and ``split``).
    out_dir : str or PathLike
        Output folder (created; resumed when it holds a checkpoint).
    config : TrainConfig or None, default=None
        Training settings; ``None`` means ``TrainConfig.from_profile("cpu")``.
    resume : bool, default=True
        Resume from ``out_dir/checkpoint`` when it exists: epoch counter, optimizer state and the
        patch stream continue where the checkpoint left off. The stored config must match ``config``,
        except ``epochs`` which may be raised.
    extra_callbacks : sequence of keras.callbacks.Callback, default=()
        Appended to the Keras callbacks (tests use one to simulate a crash).

    Returns
    -------
    pathlib.Path
        ``out_dir``.

    Raises
    ------
    ValueError
        If no training case is usable, the cases were preprocessed with different parameters, or the
        checkpoint in ``out_dir`` was trained with a different config.
    FileNotFoundError
        If ``preprocess_report.csv`` or a case file is missing.
    RuntimeError
        If training produced no best model (the monitored value was never finite).
    """
    config = config or TrainConfig.from_profile("cpu")
    preprocessed_dir, out_dir = Path(preprocessed_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ids = select_training_cases(preprocessed_dir, manifest_df)
    strata = lesion_volumes(preprocessed_dir, ids) if config.val_split == "stratified" else None
    train_ids, val_ids = split_validation(ids, config.val_fraction, config.seed, strata)
    monitor = select_monitor(config, val_ids)
    log.info("training on %d case(s), validating on %d; %d epochs x %d steps, batch %d, patch %s",
             len(train_ids), len(val_ids), config.epochs, config.steps_per_epoch, config.batch_size,
             config.patch_size)
    state = resume_state(out_dir, config) if resume else None
    from . import distribute  # strategy, global batch (= batch_size x replicas), chief-only writing

    dist, policy, det = _strategy(config)
    distribute.check_resume(out_dir, state, dist)
    distribute.check_same_start(dist, int(state["epoch"]) if state else 0)
    record = {**_start_record(config, preprocessed_dir, ids, train_ids, val_ids, monitor), **dist.record(),
              "determinism": det, "precision": policy}
    with distribute.writable_dir(dist, out_dir) as work_dir:  # out_dir on the chief, a temp folder elsewhere
        atomic_write_json(work_dir / CONFIG_FILE, record)
        t0 = time.perf_counter()
        history = _fit(work_dir, preprocessed_dir, train_ids, val_ids, distribute.global_config(config, dist),
                       monitor, state, extra_callbacks, dist.strategy, policy)
        _finish_record(work_dir, record, config, monitor, history, t0)
    return out_dir
