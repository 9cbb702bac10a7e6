"""Normalisation layers of the 3D U-Net: BatchNorm replacement (group/instance norm) and precise BN.

``norm="group"``/``"instance"`` (:func:`replace_batchnorm`, used by
:func:`bmstudy.training.model.build_model`) swap every BatchNormalization for a per-sample
GroupNormalization (:func:`norm_layer_class`, ``groups = gcd(channels, 16)`` or one group per
channel): no running statistics, so training and inference mode compute the same thing. Precise BN
(:func:`recalibrate_batchnorm`) keeps BatchNorm but re-estimates its running statistics as the mean
batch statistics of representative patches, so eval-mode statistics are not those of the last
lesion-heavy training batches.

Keras is imported only inside functions.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

__all__ = ["NORMS", "groups_for", "norm_layer_class", "norm_layers", "replace_batchnorm", "recalibrate_batchnorm"]

#: Normalisation choices of :func:`bmstudy.training.model.build_model`.
NORMS: tuple[str, ...] = ("batch", "group", "instance")

_NORM_CLASS: Any = None


def groups_for(channels: int, norm: str) -> int:
    """Groups of the GroupNormalization replacing a BatchNormalization over ``channels``."""
    return int(channels) if norm == "instance" else math.gcd(int(channels), 16)


def replace_batchnorm(encoder: Any, norm: str) -> Any:
    """Clone ``encoder`` with each BatchNormalization replaced by a per-sample GroupNormalization.

    The other layers' weights are copied; the norm layers keep the BN's gamma/beta.
    """
    import keras

    cls = norm_layer_class()

    def clone(layer: Any) -> Any:
        if isinstance(layer, keras.layers.BatchNormalization):
            channels = int(layer.input.shape[-1])
            return cls(groups=groups_for(channels, norm), axis=-1, epsilon=layer.epsilon, center=layer.center,
                       scale=layer.scale, name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    new = keras.models.clone_model(encoder, clone_function=clone)
    for old_layer, new_layer in zip(encoder.layers, new.layers):
        weights = old_layer.get_weights()
        if isinstance(old_layer, keras.layers.BatchNormalization):
            weights = weights[: len(new_layer.get_weights())]  # gamma/beta, not the moving statistics
        if weights:
            new_layer.set_weights(weights)
    return new


def norm_layer_class() -> Any:
    """The registered per-sample normalisation layer (``bmstudy>GroupNorm``) used for group/instance norm.

    Returns
    -------
    type
        A ``keras.layers.GroupNormalization`` subclass whose ``call`` accepts (and ignores) the
        ``training``/``mask`` arguments that sm's graph passes to its BatchNormalization layers.
    """
    global _NORM_CLASS
    if _NORM_CLASS is not None:
        return _NORM_CLASS
    import keras

    @keras.saving.register_keras_serializable(package="bmstudy", name="GroupNorm")
    class GroupNorm(keras.layers.GroupNormalization):
        """GroupNormalization with BatchNormalization's call signature (no running statistics)."""

        def call(self, inputs: Any, training: Any = None, mask: Any = None) -> Any:
            return super().call(inputs)

    _NORM_CLASS = GroupNorm
    return GroupNorm


def norm_layers(model: Any, kind: str = "batch") -> list[Any]:
    """Every BatchNormalization (``kind="batch"``) or GroupNorm (``"group"``) layer, nested models included.

    Parameters
    ----------
    model : keras.Model
    kind : {"batch", "group"}, default="batch"

    Returns
    -------
    list of keras.layers.Layer
    """
    import keras

    cls = keras.layers.BatchNormalization if kind == "batch" else keras.layers.GroupNormalization
    out: list[Any] = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out.extend(norm_layers(layer, kind))
        elif isinstance(layer, cls):
            out.append(layer)
    return out


def recalibrate_batchnorm(model: Any, batches: Sequence[Any]) -> int:
    """Precise BN: set every BatchNorm's running statistics to the mean batch statistics of ``batches``.

    Each batch goes through the model in training mode (no gradient step; dropout switched off)
    with the BN momentum set so that after ``k`` batches the running mean/variance are the average
    of the ``k`` batches' statistics. Momenta and dropout rates are restored afterwards.

    Parameters
    ----------
    model : keras.Model
        A model from :func:`build_model` (its trainable weights are not changed).
    batches : sequence of ndarray of shape (B, D, H, W, 1)
        Representative inputs (e.g. random head patches, not lesion-centred).

    Returns
    -------
    int
        The number of BatchNormalization layers recalibrated (0: nothing done).
    """
    bns = norm_layers(model, "batch")
    if not bns or not batches:
        return 0
    drops = [l for l in _all_layers(model) if hasattr(l, "rate") and "dropout" in type(l).__name__.lower()]
    momenta, rates = [b.momentum for b in bns], [d.rate for d in drops]
    try:
        for d in drops:
            d.rate = 0.0
        for k, batch in enumerate(batches):
            for b in bns:
                b.momentum = k / (k + 1.0)  # k = 0: replace, then running average
            model(batch, training=True)
    finally:
        for b, m in zip(bns, momenta):
            b.momentum = m
        for d, r in zip(drops, rates):
            d.rate = r
    return len(bns)


def _all_layers(model: Any) -> list[Any]:
    """Layers of ``model`` and of its nested models."""
    out: list[Any] = []
    for layer in model.layers:
        out.extend(_all_layers(layer) if hasattr(layer, "layers") and layer.layers else [layer])
    return out
