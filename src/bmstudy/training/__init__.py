"""Training stage: the 3D U-Net, training patches (sampling + augmentation) and the resumable loop.

Modules, in the order data flows through them:

- :mod:`~bmstudy.training.case_data`: preprocessed cases read for sampling (:func:`load_cases`).
- :mod:`~bmstudy.training.sampling`: lesion-centred / uniform / hard-negative patch sampling,
  :class:`PatchSampler` and the ``tf.data`` stream (:func:`make_dataset`).
- :mod:`~bmstudy.training.augmentation`: :func:`augment` (flip, elastic, gamma; seeded per sample).
- :mod:`~bmstudy.training.model`: :func:`build_model` (ResNet-34 encoder, dropout in every decoder
  block), the Dice+BCE loss, :func:`load_trained`.
- :mod:`~bmstudy.training.loop`: :func:`train` (checkpoint after every epoch, resume).
- :mod:`~bmstudy.training.ema`: the weight EMA that validation and the exported model see (:func:`averaged_weights`).
- :mod:`~bmstudy.training.train_cli`: the ``bmstudy train`` command (:func:`config_from_args`).

Settings (:class:`TrainConfig`, :class:`AugmentParams`, :func:`check_patch_size`, :data:`DIVISOR`)
live in :mod:`bmstudy.plan` and are re-exported here. Reads the folders written by
:mod:`bmstudy.preprocessing`; TensorFlow is imported only inside functions.
"""
from __future__ import annotations

from ..plan import DIVISOR, AugmentParams, TrainConfig, check_patch_size
from . import augmentation, loop, model, sampling
from .augmentation import augment
from .loop import LOG_FILE, STATE_FILE, lesion_volumes, select_training_cases, split_validation, train
from .model import (BEST_MODEL, CHECKPOINT_DIR, CONFIG_FILE, DECODER_FILTERS, ENCODER_NAME, LAST_MODEL,
                    build_model, custom_objects, decoder_dropout_layers, dice_bce_numpy, dice_score,
                    load_trained, make_loss)
from .sampling import (Case, PatchSampler, extract_patch, lesion_components, load_cases, load_preprocessed_case,
                       make_dataset, sample_patch_start)

from . import distribute, norm, validation
from .norm import NORMS, recalibrate_batchnorm
from .sampling import head_box, sample_head_start
from .train_cli import config_from_args
from .validation import CASES_FILE

__all__ = [
    # modules
    "sampling", "augmentation", "model", "loop", "norm", "validation", "distribute",
    "NORMS", "recalibrate_batchnorm", "head_box", "sample_head_start", "CASES_FILE",
    # settings (bmstudy.plan)
    "TrainConfig", "AugmentParams", "check_patch_size", "DIVISOR",
    # sampling
    "load_preprocessed_case", "lesion_components", "Case", "load_cases", "extract_patch",
    "sample_patch_start", "PatchSampler", "make_dataset",
    # augmentation
    "augment",
    # model
    "DECODER_FILTERS", "ENCODER_NAME", "build_model", "decoder_dropout_layers", "make_loss", "dice_score",
    "custom_objects", "dice_bce_numpy", "load_trained",
    # loop
    "select_training_cases", "split_validation", "lesion_volumes", "train", "config_from_args",
    # trained-model folder
    "CHECKPOINT_DIR", "LAST_MODEL", "STATE_FILE", "BEST_MODEL", "CONFIG_FILE", "LOG_FILE",
]
