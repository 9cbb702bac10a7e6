"""Exponential moving average (EMA, Polyak averaging) of the weights, for validation and export.

With ``TrainConfig.ema_momentum`` set, the Adam optimizer keeps ``average = m * average + (1 - m) *
weight`` after every step (Keras' ``use_ema``; the averages are optimizer variables, so the training
checkpoint carries them and a resumed run continues them exactly). Training itself updates the raw
weights; whole-volume validation, the patch validation of ``model.fit`` and ``model_best.keras`` see
the averaged ones. The swap is an exact copy (not Keras' add/subtract swap, which rounds), so
swapping in and back leaves training bit-identical to a run that never looked.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np


def moving_averages(model: Any) -> list[Any] | None:
    """The optimizer's moving averages of ``model.trainable_variables``, in that order.

    Parameters
    ----------
    model : keras.Model
        A compiled model.

    Returns
    -------
    list of keras.Variable or None
        ``None`` when the model has no optimizer, the optimizer keeps no averages (``use_ema=False``)
        or it has not been built yet (no training step).

    Raises
    ------
    ValueError
        If the averages do not match the model's trainable variables one to one.
    """
    opt = getattr(model, "optimizer", None)
    opt = getattr(opt, "inner_optimizer", opt)
    if opt is None or not getattr(opt, "use_ema", False):
        return None
    averages = getattr(opt, "_model_variables_moving_average", None)
    if not averages:
        return None
    weights = model.trainable_variables
    if len(averages) != len(weights) or any(tuple(a.shape) != tuple(w.shape) for a, w in zip(averages, weights)):
        raise ValueError(f"the optimizer's {len(averages)} moving averages do not match the model's "
                         f"{len(weights)} trainable variables")
    return list(averages)


def swap_averages(model: Any) -> bool:
    """Exchange the values of the trainable variables and their moving averages (exactly).

    Parameters
    ----------
    model : keras.Model

    Returns
    -------
    bool
        Whether anything was swapped (``False`` without averages; see :func:`moving_averages`).
    """
    averages = moving_averages(model)
    if averages is None:
        return False
    for var, avg in zip(model.trainable_variables, averages):
        raw = np.array(var.numpy(), copy=True)
        var.assign(avg.numpy())
        avg.assign(raw)
    return True


@contextmanager
def averaged_weights(model: Any) -> Iterator[bool]:
    """Run a block with the averaged weights in ``model`` (a no-op without averages).

    Yields whether the averages are in; the raw weights are back afterwards, also on errors.
    """
    swapped = swap_averages(model)
    try:
        yield swapped
    finally:
        if swapped:
            swap_averages(model)


def ema_evaluation_class() -> Any:
    """The Keras callback class that evaluates ``model.fit``'s validation data with the averaged weights.

    A factory so that importing this module needs no Keras.

    Returns
    -------
    type
        ``EMAEvaluation()``, a ``keras.callbacks.Callback`` swapping the averages in at
        ``on_test_begin`` and out at ``on_test_end`` (a no-op without averages).
    """
    import keras

    class EMAEvaluation(keras.callbacks.Callback):
        """Patch validation (``val_loss``, ``val_dice_score``) of the averaged weights."""

        def __init__(self) -> None:
            super().__init__()
            self._swapped = False

        def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
            self._swapped = swap_averages(self.model)

        def on_test_end(self, logs: dict[str, Any] | None = None) -> None:
            if self._swapped:
                swap_averages(self.model)
                self._swapped = False

    return EMAEvaluation
