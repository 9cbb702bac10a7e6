"""Checkpoint and resume of a training run: the per-epoch checkpoint callback and the resume checks.

This module owns ``<out_dir>/checkpoint/`` of a :func:`bmstudy.training.loop.train` run: after every
epoch, :func:`epoch_checkpoint_class`'s callback writes ``checkpoint/last.keras`` (model WITH optimizer
state) and ``checkpoint/state.json`` (completed epochs, optimizer iterations, monitored value, the
epoch's logs), and ``model_best.keras`` (uncompiled) when the monitored value improved. Every file is
written atomically, so a kill mid-save leaves the previous checkpoint intact (the reason this is not
``keras.callbacks.ModelCheckpoint``, which writes in place). :func:`resume_state` reads the state back
and refuses a checkpoint trained with another config; :func:`truncate_log` drops CSV-log rows of
epochs the checkpoint does not hold.

Keras is imported only inside :func:`epoch_checkpoint_class`.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..plan import TrainConfig
from ..utils import atomic_path, atomic_to_csv, atomic_write_json, get_logger
from .ema import averaged_weights
from .model import BEST_MODEL, CHECKPOINT_DIR, CONFIG_FILE, LAST_MODEL

__all__ = ["STATE_FILE", "monitor_mode", "initial_best", "nonfinite_weights", "finite_weights_guard_class",
           "epoch_checkpoint_class", "resume_state", "truncate_log"]

log = get_logger("bmstudy.training.checkpoint")

#: The last checkpoint's state (epochs, optimizer iterations, best value) inside :data:`CHECKPOINT_DIR`.
STATE_FILE = "state.json"


def monitor_mode(monitor: str) -> str:
    """``"max"`` for a monitored Dice/sensitivity/precision (higher is better), else ``"min"`` (losses).

    Parameters
    ----------
    monitor : str
        The monitored log key (``val_case_dice``, ``val_loss``, ...).

    Returns
    -------
    str
    """
    return "max" if any(k in monitor for k in ("dice", "sensitivity", "precision", "f1")) else "min"


def initial_best(mode: str) -> float:
    """The best value before any epoch: ``inf`` for ``"min"``, ``-inf`` for ``"max"``."""
    return -math.inf if mode == "max" else math.inf


def nonfinite_weights(model: Any) -> list[str]:
    """Paths of ``model``'s variables (weights and BatchNorm statistics) that hold a NaN or an infinity."""
    return [str(getattr(w, "path", w.name)) for w in model.weights if not np.isfinite(np.asarray(w)).all()]


def seed_generator_states(model: Any) -> list[list[int]]:
    """The states of the model's random seed generators (its dropout layers), in the model's order.

    Keras saves no seed-generator state in ``.keras`` files; the checkpoint keeps them so that a resumed
    run draws the dropout masks an uninterrupted run would have drawn.

    Parameters
    ----------
    model : keras.Model

    Returns
    -------
    list of list of int
    """
    return [np.asarray(v.numpy()).astype(np.int64).tolist() for v in _seed_variables(model)]


def restore_seed_generator_states(model: Any, states: list[list[int]]) -> None:
    """Set the model's seed generators to ``states`` (from :func:`seed_generator_states`).

    Raises
    ------
    ValueError
        If the number or shape of the states does not match the model's seed generators.
    """
    variables = _seed_variables(model)
    if len(states) != len(variables):
        raise ValueError(f"the checkpoint holds {len(states)} seed-generator state(s), the model has {len(variables)}")
    for var, value in zip(variables, states):
        arr = np.asarray(value, dtype=np.int64)
        if arr.shape != tuple(var.shape):
            raise ValueError(f"seed-generator state {var.path}: shape {arr.shape} in the checkpoint, "
                             f"{tuple(var.shape)} in the model")
        var.assign(arr.astype(var.dtype))


def _seed_variables(model: Any) -> list[Any]:
    return [v for v in model.variables if str(getattr(v, "path", v.name)).endswith("seed_generator_state")]


def finite_weights_guard_class() -> Any:
    """The Keras callback class that stops a diverged run before anything of its epoch is validated or saved.

    Returns
    -------
    type
        ``FiniteWeightsGuard()``: at the end of every epoch, a ``RuntimeError`` naming the epoch and the
        first non-finite variables (:func:`nonfinite_weights`) when the model holds any. Put it before
        the validation and checkpoint callbacks: a NaN network predicts no lesion anywhere, which
        would otherwise be validated as Dice 0 (or 1 on a lesion-free case) and could be kept as the
        best model. The checkpoint then still holds the last finite epoch.
    """
    import keras

    class FiniteWeightsGuard(keras.callbacks.Callback):
        """Raise when the model's weights stopped being finite."""

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            bad = nonfinite_weights(self.model)
            if bad:
                raise RuntimeError(
                    f"training diverged in epoch {epoch + 1}: {len(bad)} variable(s) hold NaN or infinity "
                    f"({', '.join(bad[:4])}{', ...' if len(bad) > 4 else ''}); nothing of this epoch was "
                    "validated or saved, the checkpoint holds the epoch before")

    return FiniteWeightsGuard


def epoch_checkpoint_class() -> Any:
    """The Keras callback class that saves the best model and the last checkpoint after every epoch.

    A factory so that importing this module needs no Keras.

    Returns
    -------
    type
        ``EpochCheckpoint(out_dir, monitor, best=None, inference_factory=None, mode=None)``, a
        ``keras.callbacks.Callback``. ``best`` is the best monitored value so far (from the checkpoint
        when resuming; ``None``: :func:`initial_best`); ``mode`` ``"min"``/``"max"`` (``None``:
        :func:`monitor_mode`); ``inference_factory`` builds an uncompiled twin of the model into which the
        weights are copied before saving ``model_best.keras`` (``None``: ``keras.models.clone_model`` of
        the trained model). The best model never carries the optimizer: with a weight EMA its moving
        averages would be saved swapped (holding the raw weights).
    """
    import keras

    class EpochCheckpoint(keras.callbacks.Callback):
        """Atomic best-model and last-checkpoint (with optimizer) saving after every epoch."""

        def __init__(self, out_dir: Path, monitor: str, best: float | None = None,
                     inference_factory: Any = None, mode: str | None = None) -> None:
            super().__init__()
            self.mode = mode or monitor_mode(monitor)
            self.out_dir, self.monitor = out_dir, monitor
            self.best = initial_best(self.mode) if best is None else float(best)
            self.best_epoch: int | None = None
            self.inference_factory, self._inference_model = inference_factory, None

        def _save_best(self, path: Path) -> None:
            # Keras 3 .keras files always carry the optimizer of a compiled model (3x the size);
            # the best model is for inference, so save an uncompiled twin with the same weights.
            # With a weight EMA (bmstudy.training.ema) the best model holds the averaged weights.
            with averaged_weights(self.model):
                weights = self.model.get_weights()
            if self._inference_model is None:
                factory = self.inference_factory or (lambda: keras.models.clone_model(self.model))
                self._inference_model = factory()
            self._inference_model.set_weights(weights)
            self._inference_model.save(path)

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            logs = dict(logs or {})
            value = logs.get(self.monitor)
            better = value is not None and np.isfinite(value) and (
                value > self.best if self.mode == "max" else value < self.best)
            if better:
                log.info("epoch %d: %s improved %.5f -> %.5f, saving %s", epoch + 1, self.monitor,
                         self.best, value, BEST_MODEL)
                self.best, self.best_epoch = float(value), epoch
                with atomic_path(self.out_dir / BEST_MODEL) as tmp:
                    self._save_best(tmp)
            ckpt = self.out_dir / CHECKPOINT_DIR
            with atomic_path(ckpt / LAST_MODEL) as tmp:
                self.model.save(tmp)
            atomic_write_json(ckpt / STATE_FILE, {
                "epoch": epoch + 1,
                "iterations": int(self.model.optimizer.iterations.numpy()),
                "monitor": self.monitor, "mode": self.mode, "best": self.best,
                "best_epoch": self.best_epoch if self.best_epoch is not None else self._previous_best_epoch(),
                "logs": {k: float(v) for k, v in logs.items()},
                "seed_states": seed_generator_states(self.model),
            })

        def _previous_best_epoch(self) -> int | None:
            """The best epoch recorded by the checkpoint being continued (resume)."""
            path = self.out_dir / CHECKPOINT_DIR / STATE_FILE
            if not path.is_file():
                return None
            return json.loads(path.read_text(encoding="utf-8")).get("best_epoch")

    return EpochCheckpoint


def resume_state(out_dir: Path, config: TrainConfig) -> dict[str, Any] | None:
    """The checkpoint state to resume ``out_dir`` from.

    Parameters
    ----------
    out_dir : pathlib.Path
        The run's output folder.
    config : TrainConfig
        The config of the run about to start.

    Returns
    -------
    dict or None
        The parsed ``checkpoint/state.json`` (``epoch``, ``iterations``, ``monitor``, ``best``,
        ``logs``, ``seed_states``), or ``None`` when there is no checkpoint.

    Raises
    ------
    ValueError
        If ``train_config.json`` records a config that differs from ``config`` in anything but
        ``epochs`` (which may be raised to train longer).
    """
    state_path = out_dir / CHECKPOINT_DIR / STATE_FILE
    if not state_path.is_file():
        return None
    state = json.loads(state_path.read_text(encoding="utf-8"))
    cfg_path = out_dir / CONFIG_FILE
    if cfg_path.is_file():
        old = dict(json.loads(cfg_path.read_text(encoding="utf-8")).get("config", {}))
        new = config.to_dict()
        old.pop("epochs", None), new.pop("epochs", None)
        new = {k: v for k, v in new.items() if k in old}  # fields added since the checkpoint: their defaults
        if json.loads(json.dumps(old)) != json.loads(json.dumps(new)):
            raise ValueError(f"{out_dir} holds a checkpoint trained with a different config; "
                             "use a new out_dir or resume=False")
    return state


def truncate_log(path: Path, n_epochs: int) -> None:
    """Keep only the rows of checkpointed epochs in the CSV log, before appending to it on resume.

    Parameters
    ----------
    path : pathlib.Path
        The CSV log (nothing happens when it does not exist).
    n_epochs : int
        Epochs held by the checkpoint; rows with ``epoch >= n_epochs`` are dropped (atomic rewrite).
    """
    if not path.is_file():
        return
    df = pd.read_csv(path)
    if "epoch" in df.columns and (df["epoch"] >= n_epochs).any():
        atomic_to_csv(df[df["epoch"] < n_epochs], path)
