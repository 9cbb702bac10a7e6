"""3D U-Net with a ResNet-34 encoder (segmentation-models-3D), the Dice+BCE loss, and model loading.

Architecture (``build_model``)::

    input (D, H, W, 1) -> repeat to 3 channels -> sm ResNet-34 encoder ("encoder", 3-channel, so the
    ImageNet weights of classification-models-3D load unchanged) -> 5 decoder blocks written here
    (UpSampling3D x2 -> concat skip -> 2 x [Conv3D 3^3 + BN + ReLU] -> Dropout) with the filters of
    ``sm.Unet`` (256, 128, 64, 32, 16) -> Conv3D 3^3 -> sigmoid (float32).

Why a custom decoder: ``segmentation_models_3D.Unet(dropout=...)`` adds ONE SpatialDropout3D after the
last decoder block only, whereas the study applied dropout 0.5 "in the decoder layers". The decoder
here is a layer-for-layer copy of sm's ``DecoderUpsamplingX2Block`` (same names ``decoder_stage{i}a/b``)
with a ``decoder_stage{i}_dropout`` layer (SpatialDropout3D by default, i.e. whole feature channels
are dropped, the usual choice for convolutional feature maps) closing EVERY block, at the
configured rate. The encoder is sm's own backbone and skip layers
(``Backbones.get_feature_layers('resnet34')``), so encoder weights are interchangeable with sm models.

Why the input is repeated to 3 channels: the ImageNet encoder weights are 3-channel; repeating the
single MR channel (the package author's advice) keeps them usable as they are. The repeat is part of
the graph for random initialisation too, so pretrained and scratch models share one architecture.

Loading (``load_trained``) reads a trained-model folder written by :func:`bmstudy.training.loop.train`
(``model_best.keras`` or ``checkpoint/last.keras``, and ``train_config.json``); the file names are the
constants below, shared with the loop.

Normalisation (``norm``): ``"batch"`` is sm's BatchNormalization everywhere (the paper). ``"group"``
and ``"instance"`` replace EVERY BatchNormalization of the encoder (the sm backbone is cloned with a
``clone_function``; weights of the other layers, and gamma/beta, are copied over) and of the decoder
by :func:`norm_layer_class`'s per-sample GroupNormalization (``groups = gcd(channels, 16)`` or one
group per channel), which has no running statistics and so behaves the same in training and
inference mode. :func:`recalibrate_batchnorm` is "precise BN": BatchNorm running statistics
re-estimated as the average batch statistics of representative patches.

This module imports TensorFlow/Keras only inside functions.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

from ..plan import DIVISOR, check_patch_size
from ..utils import PathLike
from .norm import NORMS, groups_for, norm_layer_class, norm_layers, recalibrate_batchnorm, replace_batchnorm

__all__ = ["DECODER_FILTERS", "DIVISOR", "ENCODER_NAME", "CHECKPOINT_DIR", "LAST_MODEL", "BEST_MODEL",
           "CONFIG_FILE", "NORMS", "check_patch_size", "build_model", "decoder_dropout_layers", "make_loss",
           "dice_score", "custom_objects", "dice_bce_numpy", "load_trained", "norm_layer_class",
           "norm_layers", "recalibrate_batchnorm"]



#: Filters of the 5 decoder blocks (those of ``segmentation_models_3D.Unet``).
DECODER_FILTERS: tuple[int, ...] = (256, 128, 64, 32, 16)
#: Name of the encoder sub-model inside :func:`build_model`'s model.
ENCODER_NAME = "encoder"
# File names of a trained-model folder (written by bmstudy.training.loop.train, read by load_trained).
#: Sub-folder holding the last checkpoint (model with optimizer state + ``state.json``).
CHECKPOINT_DIR = "checkpoint"
#: The last checkpoint's model file inside :data:`CHECKPOINT_DIR`.
LAST_MODEL = "last.keras"
#: The best epoch's model, uncompiled (for inference).
BEST_MODEL = "model_best.keras"
#: The training record (config, cases, preprocessing parameters, versions, status).
CONFIG_FILE = "train_config.json"

_LOSS_CLASS: Any = None


def build_model(
    patch_size: int | Sequence[int] | None,
    encoder_weights: PathLike | None = None,
    decoder_dropout: float = 0.5,
    *,
    backbone: str = "resnet34",
    decoder_filters: Sequence[int] = DECODER_FILTERS,
    dropout_type: str = "spatial",
    decoder_use_batchnorm: bool = True,
    name: str = "unet3d_resnet34",
    norm: str = "batch",
    output_prior: float | None = None,
) -> Any:
    """Build the 3D U-Net (sm ResNet encoder, custom decoder with dropout in every block).

    Parameters
    ----------
    patch_size : int, sequence of 3 int or None
        Spatial input size (multiples of 32), or ``None`` for a fully-convolutional model accepting
        any multiple-of-32 size.
    encoder_weights : str, PathLike or None, default=None
        Path of a local 3-channel encoder weights file (``.h5``, e.g. classification-models-3D's
        ``resnet34_inp_channel_3_tch_0_top_False.h5``). Never downloaded.
    decoder_dropout : float, default=0.5
        Dropout rate closing each of the 5 decoder blocks, in [0, 1) (0 disables it).
    backbone : str, default="resnet34"
        segmentation-models-3D backbone name (the study used ``resnet34``).
    decoder_filters : sequence of 5 int, default=DECODER_FILTERS
        Filters of the 5 decoder blocks.
    dropout_type : {"spatial", "standard"}, default="spatial"
        ``SpatialDropout3D`` (whole feature channels) or ``Dropout``.
    decoder_use_batchnorm : bool, default=True
        Batch normalisation after each decoder convolution (convolutions then have no bias).
    name : str, default="unet3d_resnet34"
        The model's name.
    norm : {"batch", "group", "instance"}, default="batch"
        Normalisation layers of encoder and decoder (module docstring); ``decoder_use_batchnorm=False``
        leaves the decoder without any.
    output_prior : float or None, default=None
        Initial foreground probability: the last convolution's bias starts at ``log(p / (1 - p))``
        (the prior initialisation of Lin et al., RetinaNet), so an untrained network predicts ``p``
        everywhere instead of 0.5; ``None`` keeps a zero bias (the paper's Keras default).

    Returns
    -------
    keras.Model
        Uncompiled, mapping (B, D, H, W, 1) images to (B, D, H, W, 1) float32 probabilities.

    Raises
    ------
    ValueError
        If ``decoder_dropout``, ``dropout_type``, ``decoder_filters`` or ``patch_size`` is invalid,
        if ``encoder_weights="imagenet"`` (that would download), or if the weights file does not fit
        the backbone (the message names the file).
    FileNotFoundError
        If ``encoder_weights`` is not an existing file.
    """
    _check_builder_args(decoder_dropout, dropout_type, norm, output_prior, decoder_filters)
    spatial = (None, None, None) if patch_size is None else check_patch_size(patch_size)
    weights_path = _weights_file(encoder_weights, backbone)

    import keras
    from keras import layers

    feature_model = _feature_model(backbone, spatial, weights_path, norm)
    inputs = keras.Input(shape=(*spatial, 1), name="image")
    x3 = layers.Concatenate(axis=-1, name="repeat_to_rgb")([inputs, inputs, inputs])
    x, *skips = feature_model(x3)
    for stage, filters in enumerate(decoder_filters):
        x = _decoder_block(x, skips[stage] if stage < len(skips) else None, stage, filters, decoder_dropout,
                           dropout_type, decoder_use_batchnorm, norm)
    bias = 0.0 if output_prior is None else math.log(output_prior / (1.0 - output_prior))
    x = layers.Conv3D(1, 3, padding="same", kernel_initializer="glorot_uniform",
                      bias_initializer=keras.initializers.Constant(bias), name="final_conv")(x)
    outputs = layers.Activation("sigmoid", dtype="float32", name="sigmoid")(x)
    return keras.Model(inputs, outputs, name=name)


def _check_builder_args(decoder_dropout: float, dropout_type: str, norm: str, output_prior: float | None,
                        decoder_filters: Sequence[int]) -> None:
    """``ValueError`` naming the first bad :func:`build_model` argument."""
    if not 0.0 <= float(decoder_dropout) < 1.0:
        raise ValueError(f"decoder_dropout must be in [0, 1); got {decoder_dropout!r}")
    if dropout_type not in ("spatial", "standard"):
        raise ValueError(f"dropout_type must be 'spatial' or 'standard'; got {dropout_type!r}")
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}; got {norm!r}")
    if output_prior is not None and not 0.0 < float(output_prior) < 1.0:
        raise ValueError(f"output_prior must be in (0, 1) or None; got {output_prior!r}")
    if len(decoder_filters) != 5:
        raise ValueError(f"decoder_filters needs 5 entries (one per decoder block); got {decoder_filters!r}")


def _weights_file(encoder_weights: PathLike | None, backbone: str) -> Path | None:
    """The local encoder weights file, checked (``None`` for random initialisation); never downloads."""
    if encoder_weights is None:
        return None
    weights_path = Path(encoder_weights)
    if str(encoder_weights).lower() == "imagenet":
        raise ValueError(
            "encoder_weights='imagenet' would download from GitHub; pass the local path of "
            f"{backbone}_inp_channel_3_tch_0_top_False.h5 instead (bmstudy never downloads weights)"
        )
    if not weights_path.is_file():
        raise FileNotFoundError(f"encoder weights file not found: {weights_path} (bmstudy never downloads weights)")
    return weights_path


def _feature_model(backbone: str, spatial: Sequence[int | None], weights_path: Path | None,
                   norm: str = "batch") -> Any:
    """sm's 3-channel ``backbone`` as the ``encoder`` sub-model: outputs ``[bottleneck, *4 skips]``.

    With ``norm != "batch"`` the backbone is cloned with every BatchNormalization replaced.
    """
    import keras
    import segmentation_models_3D as sm

    encoder = sm.Backbones.get_backbone(backbone, input_shape=(*spatial, 3), weights=None, include_top=False)
    if weights_path is not None:
        try:
            encoder.load_weights(str(weights_path))
        except Exception as exc:  # noqa: BLE001 - re-raised with the file name
            raise ValueError(f"cannot load encoder weights from {weights_path} into {backbone}: {exc}") from exc
    if norm != "batch":
        encoder = replace_batchnorm(encoder, norm)
    skip_names = sm.Backbones.get_feature_layers(backbone, n=4)
    return keras.Model(
        encoder.input,
        [encoder.output] + [encoder.get_layer(n).output for n in skip_names],
        name=ENCODER_NAME,
    )


def _decoder_block(x: Any, skip: Any, stage: int, filters: int, dropout: float, dropout_type: str,
                   use_batchnorm: bool, norm: str = "batch") -> Any:
    """One decoder block (sm's ``DecoderUpsamplingX2Block`` layer names) closed by its dropout layer.

    UpSampling3D x2 -> concat ``skip`` (if any) -> 2 x [Conv3D 3^3 (+ BN) + ReLU] -> dropout (if > 0).
    """
    from keras import layers

    x = layers.UpSampling3D(size=2, name=f"decoder_stage{stage}_upsampling")(x)
    if skip is not None:
        x = layers.Concatenate(axis=-1, name=f"decoder_stage{stage}_concat")([x, skip])
    for suffix in ("a", "b"):
        x = layers.Conv3D(filters, 3, padding="same", use_bias=not use_batchnorm,
                          kernel_initializer="he_uniform", name=f"decoder_stage{stage}{suffix}_conv")(x)
        if use_batchnorm and norm == "batch":
            x = layers.BatchNormalization(axis=-1, name=f"decoder_stage{stage}{suffix}_bn")(x)
        elif use_batchnorm:
            x = norm_layer_class()(groups=groups_for(filters, norm), axis=-1, name=f"decoder_stage{stage}{suffix}_bn")(x)
        x = layers.Activation("relu", name=f"decoder_stage{stage}{suffix}_relu")(x)
    if dropout > 0:
        drop = layers.SpatialDropout3D if dropout_type == "spatial" else layers.Dropout
        x = drop(float(dropout), name=f"decoder_stage{stage}_dropout")(x)
    return x


def decoder_dropout_layers(model: Any) -> dict[int, Any]:
    """The dropout layer of each decoder block (for inspection and tests).

    Parameters
    ----------
    model : keras.Model
        A model from :func:`build_model`.

    Returns
    -------
    dict of int to keras.layers.Layer
        Decoder stage (0-4) -> its ``decoder_stage{i}_dropout`` layer (empty when dropout is 0).
    """
    out = {}
    for layer in model.layers:
        if layer.name.startswith("decoder_stage") and layer.name.endswith("_dropout"):
            out[int(layer.name[len("decoder_stage"):].split("_")[0])] = layer
    return out


# ----------------------------------------------------------------------------- loss and metric


def _get_loss_class() -> Any:
    """Create (once) and register the Keras loss class; deferred so importing bmstudy stays TF-free."""
    global _LOSS_CLASS
    if _LOSS_CLASS is not None:
        return _LOSS_CLASS
    import keras
    from keras import ops

    @keras.saving.register_keras_serializable(package="bmstudy", name="DiceBCELoss")
    class DiceBCELoss(keras.losses.Loss):
        """``dice_weight * (1 - soft Dice) + bce_weight * BCE``; soft Dice pooled over the whole batch.

        Soft Dice = (2 sum(t p) + smooth) / (sum(t) + sum(p) + smooth); BCE is the voxel mean with
        predictions clipped to [eps, 1 - eps].
        """

        def __init__(self, dice_weight: float = 0.5, bce_weight: float = 0.5, smooth: float = 1e-5,
                     eps: float = 1e-7, name: str = "dice_bce", **kwargs: Any) -> None:
            kwargs.pop("reduction", None)
            super().__init__(name=name, reduction="sum_over_batch_size", **kwargs)
            self.dice_weight, self.bce_weight = float(dice_weight), float(bce_weight)
            self.smooth, self.eps = float(smooth), float(eps)

        def call(self, y_true: Any, y_pred: Any) -> Any:
            y_true = ops.cast(y_true, "float32")
            y_pred = ops.clip(ops.cast(y_pred, "float32"), self.eps, 1.0 - self.eps)
            inter = ops.sum(y_true * y_pred)
            dice = (2.0 * inter + self.smooth) / (ops.sum(y_true) + ops.sum(y_pred) + self.smooth)
            bce = -ops.mean(y_true * ops.log(y_pred) + (1.0 - y_true) * ops.log(1.0 - y_pred))
            # one scalar per batch; broadcast so the 'sum_over_batch_size' reduction returns it
            total = self.dice_weight * (1.0 - dice) + self.bce_weight * bce
            return ops.ones_like(y_true[:, 0, 0, 0, 0]) * total

        def get_config(self) -> dict[str, Any]:
            return {"name": self.name, "dice_weight": self.dice_weight, "bce_weight": self.bce_weight,
                    "smooth": self.smooth, "eps": self.eps}

    _LOSS_CLASS = DiceBCELoss
    return DiceBCELoss


def make_loss(dice_weight: float = 0.5, bce_weight: float = 0.5, smooth: float = 1e-5) -> Any:
    """The study's hybrid loss (0.5 Dice + 0.5 BCE by default) as a serialisable Keras loss.

    Parameters
    ----------
    dice_weight : float, default=0.5
        Weight of ``1 - soft Dice`` (pooled over the whole batch).
    bce_weight : float, default=0.5
        Weight of the voxel-mean binary cross-entropy.
    smooth : float, default=1e-5
        Smoothing term of the soft Dice.

    Returns
    -------
    keras.losses.Loss
        A ``bmstudy>DiceBCELoss`` instance (registered, so compiled models reload with
        :func:`custom_objects`); :func:`dice_bce_numpy` is its numpy reference.
    """
    return _get_loss_class()(dice_weight=dice_weight, bce_weight=bce_weight, smooth=smooth)


def dice_score(y_true: Any, y_pred: Any) -> Any:
    """Hard Dice (threshold 0.5) over the whole batch, a Keras metric.

    Parameters
    ----------
    y_true, y_pred : tensor
        Truth and predicted probabilities of the same shape.

    Returns
    -------
    tensor
        Scalar Dice of the thresholded batch; 1.0 when truth and prediction are both empty.
    """
    from keras import ops

    t = ops.cast(y_true > 0.5, "float32")
    p = ops.cast(y_pred > 0.5, "float32")
    denom = ops.sum(t) + ops.sum(p)
    return ops.where(denom > 0, 2.0 * ops.sum(t * p) / ops.maximum(denom, 1.0), 1.0)


def custom_objects() -> dict[str, Any]:
    """Objects needed to deserialise a compiled bmstudy model.

    Returns
    -------
    dict
        ``custom_objects`` for ``keras.models.load_model``: the loss class (under both of its names)
        and :func:`dice_score`.
    """
    cls = _get_loss_class()
    norm = norm_layer_class()
    return {"DiceBCELoss": cls, "bmstudy>DiceBCELoss": cls, "dice_score": dice_score, "GroupNorm": norm,
            "bmstudy>GroupNorm": norm}


def dice_bce_numpy(y_true: Any, y_pred: Any, dice_weight: float = 0.5, bce_weight: float = 0.5,
                   smooth: float = 1e-5, eps: float = 1e-7) -> float:
    """Float64 numpy reference of the loss made by :func:`make_loss` (used by tests and notebooks).

    Parameters
    ----------
    y_true, y_pred : array-like
        Truth and predicted probabilities of the same shape (the whole array is one batch).
    dice_weight, bce_weight, smooth : float
        As :func:`make_loss`.
    eps : float, default=1e-7
        Predictions are clipped to ``[eps, 1 - eps]``.

    Returns
    -------
    float
        ``dice_weight * (1 - soft Dice) + bce_weight * BCE``.
    """
    import numpy as np

    t = np.asarray(y_true, dtype=np.float64)
    p = np.clip(np.asarray(y_pred, dtype=np.float64), eps, 1 - eps)
    dice = (2 * (t * p).sum() + smooth) / (t.sum() + p.sum() + smooth)
    bce = -np.mean(t * np.log(p) + (1 - t) * np.log(1 - p))
    return float(dice_weight * (1 - dice) + bce_weight * bce)


# ----------------------------------------------------------------------------- loading


def load_trained(model_dir: PathLike, which: str = "best") -> tuple[Any, dict[str, Any]]:
    """Load a trained model and its ``train_config.json`` from a ``train()`` output folder.

    Parameters
    ----------
    model_dir : str or PathLike
        Folder written by :func:`bmstudy.training.loop.train`.
    which : {"best", "last"}, default="best"
        ``model_best.keras`` or the last checkpoint ``checkpoint/last.keras``.

    Returns
    -------
    model : keras.Model
        Loaded without compiling (inference only).
    config : dict
        The parsed ``train_config.json``.

    Raises
    ------
    ValueError
        If ``which`` is not ``"best"`` or ``"last"``, or ``train_config.json`` is not valid JSON.
    FileNotFoundError
        If ``train_config.json`` or the model file is missing.
    """
    model_dir = Path(model_dir)
    cfg_path = model_dir / CONFIG_FILE
    model_path = model_dir / (BEST_MODEL if which == "best" else f"{CHECKPOINT_DIR}/{LAST_MODEL}")
    if which not in ("best", "last"):
        raise ValueError(f"which must be 'best' or 'last'; got {which!r}")
    for p in (cfg_path, model_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p} not found: {model_dir} is not a finished bmstudy training folder")
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{cfg_path}: invalid JSON ({exc})") from exc
    import keras

    model = keras.models.load_model(model_path, custom_objects=custom_objects(), compile=False)
    return model, config
