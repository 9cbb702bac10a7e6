"""bmstudy.preprocessing: from input volumes to the arrays training and inference use.

Modules, in pipeline order: :mod:`.checks` (mask alignment and 0/1 values), :mod:`.skullstrip` (brain
mask backends), :mod:`.resampling` (grid-aligned resampling, cropping, restoring to the input grid),
:mod:`.normalization` (Z-score), :mod:`.qc` (intensity statistics and QC figures), :mod:`.store`
(the on-disk layout, reading it back, the cache check) and :mod:`.cohort` (one image, one case, a
cohort, and the ``bmstudy preprocess`` CLI). :class:`PreprocessParams` is defined in :mod:`bmstudy.plan`.
"""
from __future__ import annotations

from ..plan import INTERPOLATION_ORDER, NORMALISATIONS, PreprocessParams
from . import checks, cohort, normalization, qc, resampling, skullstrip, store
from .checks import AlignmentError, MaskValueError, binarize_mask, check_alignment
from .cohort import EXCLUDED_ERRORS, preprocess_case, preprocess_cohort, preprocess_image
from .normalization import zscore
from .qc import HIST_Z_EDGES, intensity_qc, plot_case_histograms, plot_site_histograms, qc_table, write_qc
from .resampling import (brain_bbox, crop_to_bbox, resample_mask, resample_sparse, resample_to_shape, resampled_affine,
                         resampled_shape, restore_to_input, save_like_input)
from .skullstrip import (BACKENDS, SYNTHSTRIP_ENV, SYNTHSTRIP_HELP, SkullStripError, brain_mask, deepbet_available,
                         deepbet_mask, resolve_backend, synthstrip_command, synthstrip_mask)
from .store import CASE_FILES, RECORD_VERSION, REPORT_COLUMNS, REPORT_NAME, cached_report_row, is_cached, load_case, load_report

__all__ = [
    # modules
    "checks", "cohort", "normalization", "qc", "resampling", "skullstrip", "store",
    # parameters and constants
    "PreprocessParams", "INTERPOLATION_ORDER", "NORMALISATIONS", "RECORD_VERSION", "REPORT_NAME", "REPORT_COLUMNS",
    "CASE_FILES", "HIST_Z_EDGES", "EXCLUDED_ERRORS",
    # checks
    "AlignmentError", "MaskValueError", "check_alignment", "binarize_mask",
    # skull stripping
    "BACKENDS", "SYNTHSTRIP_ENV", "SYNTHSTRIP_HELP", "SkullStripError", "deepbet_available", "resolve_backend",
    "brain_mask", "deepbet_mask", "synthstrip_command", "synthstrip_mask",
    # resampling
    "resampled_shape", "resample_to_shape", "resample_mask", "resample_sparse", "resampled_affine", "brain_bbox",
    "crop_to_bbox", "restore_to_input", "save_like_input",
    # normalisation and QC
    "zscore", "intensity_qc", "plot_case_histograms", "plot_site_histograms", "qc_table", "write_qc",
    # cases and cohorts
    "preprocess_image", "preprocess_case", "preprocess_cohort", "is_cached", "cached_report_row", "load_case",
    "load_report",
]
