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

This module imports TensorFlow/Keras only inside functions.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from ..utils import PathLike

DECODER_FILTERS: tuple[int, ...] = (256, 128, 64, 32, 16)
DIVISOR = 32  # five stride-2 stages in the encoder
ENCODER_NAME = "encoder"

_LOSS_CLASS: Any = None


from ..plan import check_patch_size  # noqa: E402


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
) -> Any:
    """Build the 3D U-Net (sm ResNet encoder, custom decoder with dropout in every block).

    Args:
        patch_size: spatial input size (int or 3 ints, multiples of 32), or ``None`` for a
            fully-convolutional model accepting any multiple-of-32 size.
        encoder_weights: optional path to a local 3-channel encoder weights file (``.h5``, e.g.
            classification-models-3D's ``resnet34_inp_channel_3_tch_0_top_False.h5``). Never downloaded.
        decoder_dropout: dropout rate closing each of the 5 decoder blocks (0 disables it).
        backbone: sm backbone name (the study used ``resnet34``).
        decoder_filters: filters of the 5 decoder blocks.
        dropout_type: ``"spatial"`` (SpatialDropout3D) or ``"standard"`` (Dropout).
    Returns:
        An uncompiled ``keras.Model`` mapping (B, D, H, W, 1) -> (B, D, H, W, 1) probabilities.
    """
    if not 0.0 <= float(decoder_dropout) < 1.0:
        raise ValueError(f"decoder_dropout must be in [0, 1); got {decoder_dropout!r}")
    if dropout_type not in ("spatial", "standard"):
        raise ValueError(f"dropout_type must be 'spatial' or 'standard'; got {dropout_type!r}")
    if len(decoder_filters) != 5:
        raise ValueError(f"decoder_filters needs 5 entries (one per decoder block); got {decoder_filters!r}")
    spatial = (None, None, None) if patch_size is None else check_patch_size(patch_size)
    weights_path: Path | None = None
    if encoder_weights is not None:
        weights_path = Path(encoder_weights)
        if str(encoder_weights).lower() == "imagenet":
            raise ValueError(
                "encoder_weights='imagenet' would download from GitHub; pass the local path of "
                f"{backbone}_inp_channel_3_tch_0_top_False.h5 instead (bmstudy never downloads weights)"
            )
        if not weights_path.is_file():
            raise FileNotFoundError(f"encoder weights file not found: {weights_path} (bmstudy never downloads weights)")

    import keras
    import segmentation_models_3D as sm
    from keras import layers

    encoder = sm.Backbones.get_backbone(backbone, input_shape=(*spatial, 3), weights=None, include_top=False)
    if weights_path is not None:
        try:
            encoder.load_weights(str(weights_path))
        except Exception as exc:  # noqa: BLE001 - re-raised with the file name
            raise ValueError(f"cannot load encoder weights from {weights_path} into {backbone}: {exc}") from exc
    skip_names = sm.Backbones.get_feature_layers(backbone, n=4)
    feature_model = keras.Model(
        encoder.input,
        [encoder.output] + [encoder.get_layer(n).output for n in skip_names],
        name=ENCODER_NAME,
    )

    inputs = keras.Input(shape=(*spatial, 1), name="image")
    x3 = layers.Concatenate(axis=-1, name="repeat_to_rgb")([inputs, inputs, inputs])
    x, *skips = feature_model(x3)
    for stage, filters in enumerate(decoder_filters):
        x = layers.UpSampling3D(size=2, name=f"decoder_stage{stage}_upsampling")(x)
        if stage < len(skips):
            x = layers.Concatenate(axis=-1, name=f"decoder_stage{stage}_concat")([x, skips[stage]])
        for suffix in ("a", "b"):
            x = layers.Conv3D(filters, 3, padding="same", use_bias=not decoder_use_batchnorm,
                              kernel_initializer="he_uniform", name=f"decoder_stage{stage}{suffix}_conv")(x)
            if decoder_use_batchnorm:
                x = layers.BatchNormalization(axis=-1, name=f"decoder_stage{stage}{suffix}_bn")(x)
            x = layers.Activation("relu", name=f"decoder_stage{stage}{suffix}_relu")(x)
        if decoder_dropout > 0:
            drop = layers.SpatialDropout3D if dropout_type == "spatial" else layers.Dropout
            x = drop(float(decoder_dropout), name=f"decoder_stage{stage}_dropout")(x)
    x = layers.Conv3D(1, 3, padding="same", kernel_initializer="glorot_uniform", name="final_conv")(x)
    outputs = layers.Activation("sigmoid", dtype="float32", name="sigmoid")(x)
    return keras.Model(inputs, outputs, name=name)


def decoder_dropout_layers(model: Any) -> dict[int, Any]:
    """Map decoder stage -> its dropout layer (for inspection and tests)."""
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
    """The study's hybrid loss (0.5 Dice + 0.5 BCE by default) as a serialisable Keras loss."""
    return _get_loss_class()(dice_weight=dice_weight, bce_weight=bce_weight, smooth=smooth)


def dice_score(y_true: Any, y_pred: Any) -> Any:
    """Hard Dice (threshold 0.5) over the whole batch, a Keras metric; 1.0 when both are empty."""
    from keras import ops

    t = ops.cast(y_true > 0.5, "float32")
    p = ops.cast(y_pred > 0.5, "float32")
    denom = ops.sum(t) + ops.sum(p)
    return ops.where(denom > 0, 2.0 * ops.sum(t * p) / ops.maximum(denom, 1.0), 1.0)


def custom_objects() -> dict[str, Any]:
    """Objects needed to deserialise a compiled bmstudy model."""
    cls = _get_loss_class()
    return {"DiceBCELoss": cls, "bmstudy>DiceBCELoss": cls, "dice_score": dice_score}


def dice_bce_numpy(y_true: Any, y_pred: Any, dice_weight: float = 0.5, bce_weight: float = 0.5,
                   smooth: float = 1e-5, eps: float = 1e-7) -> float:
    """Float64 numpy reference of :class:`DiceBCELoss` (used by tests and notebooks)."""
    import numpy as np

    t = np.asarray(y_true, dtype=np.float64)
    p = np.clip(np.asarray(y_pred, dtype=np.float64), eps, 1 - eps)
    dice = (2 * (t * p).sum() + smooth) / (t.sum() + p.sum() + smooth)
    bce = -np.mean(t * np.log(p) + (1 - t) * np.log(1 - p))
    return float(dice_weight * (1 - dice) + bce_weight * bce)


# ----------------------------------------------------------------------------- loading


def load_trained(model_dir: PathLike, which: str = "best") -> tuple[Any, dict[str, Any]]:
    """Load a trained model and its ``train_config.json`` from a ``train()`` output folder.

    Args:
        model_dir: folder written by :func:`bmstudy.training.loop.train`.
        which: ``"best"`` (``model_best.keras``) or ``"last"`` (``checkpoint/last.keras``).
    Returns:
        ``(model, config)``; the model is loaded without compiling (inference only).
    """
    model_dir = Path(model_dir)
    cfg_path = model_dir / "train_config.json"
    model_path = model_dir / ("model_best.keras" if which == "best" else "checkpoint/last.keras")
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
