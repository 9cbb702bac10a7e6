"""bmstudy.preprocessing."""
from __future__ import annotations

from . import cohort
from .cohort import (RECORD_VERSION, REPORT_NAME, HIST_Z_EDGES, INTERPOLATION_ORDER, NORMALISATIONS, REPORT_COLUMNS, AlignmentError, MaskValueError, PreprocessParams, check_alignment, binarize_mask, resampled_shape, resample_to_shape, resample_mask, resample_sparse, resampled_affine, brain_bbox, zscore, preprocess_image, restore_to_input, save_like_input, is_cached, preprocess_case, preprocess_cohort, load_case, load_report, plot_case_histograms, plot_site_histograms, qc_table, write_qc)
from . import skullstrip
from .skullstrip import (BACKENDS, SYNTHSTRIP_ENV, SYNTHSTRIP_HELP, SkullStripError, deepbet_available, resolve_backend, brain_mask, deepbet_mask, synthstrip_command, synthstrip_mask)

__all__ = ['cohort', 'skullstrip', 'RECORD_VERSION', 'REPORT_NAME', 'HIST_Z_EDGES', 'INTERPOLATION_ORDER', 'NORMALISATIONS', 'REPORT_COLUMNS', 'AlignmentError', 'MaskValueError', 'PreprocessParams', 'check_alignment', 'binarize_mask', 'resampled_shape', 'resample_to_shape', 'resample_mask', 'resample_sparse', 'resampled_affine', 'brain_bbox', 'zscore', 'preprocess_image', 'restore_to_input', 'save_like_input', 'is_cached', 'preprocess_case', 'preprocess_cohort', 'load_case', 'load_report', 'plot_case_histograms', 'plot_site_histograms', 'qc_table', 'write_qc', 'BACKENDS', 'SYNTHSTRIP_ENV', 'SYNTHSTRIP_HELP', 'SkullStripError', 'deepbet_available', 'resolve_backend', 'brain_mask', 'deepbet_mask', 'synthstrip_command', 'synthstrip_mask']
