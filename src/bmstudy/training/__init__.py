"""bmstudy.training."""
from __future__ import annotations

from . import model
from .model import (DECODER_FILTERS, DIVISOR, ENCODER_NAME, check_patch_size, build_model, decoder_dropout_layers, make_loss, dice_score, custom_objects, dice_bce_numpy, load_trained)
from . import data
from .data import (load_preprocessed_case, lesion_components, Case, load_cases, extract_patch, sample_patch_start, AugmentParams, augment, PatchSampler, make_dataset)
from . import loop
from .loop import (CHECKPOINT_DIR, LAST_MODEL, STATE_FILE, BEST_MODEL, CONFIG_FILE, LOG_FILE, TrainConfig, select_training_cases, split_validation, train, config_from_args)

__all__ = ['model', 'data', 'loop', 'DECODER_FILTERS', 'DIVISOR', 'ENCODER_NAME', 'check_patch_size', 'build_model', 'decoder_dropout_layers', 'make_loss', 'dice_score', 'custom_objects', 'dice_bce_numpy', 'load_trained', 'load_preprocessed_case', 'lesion_components', 'Case', 'load_cases', 'extract_patch', 'sample_patch_start', 'AugmentParams', 'augment', 'PatchSampler', 'make_dataset', 'CHECKPOINT_DIR', 'LAST_MODEL', 'STATE_FILE', 'BEST_MODEL', 'CONFIG_FILE', 'LOG_FILE', 'TrainConfig', 'select_training_cases', 'split_validation', 'train', 'config_from_args']
