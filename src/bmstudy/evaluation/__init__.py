"""bmstudy.evaluation."""
from __future__ import annotations

from . import voxel
from .voxel import (METRIC_KEYS, SIZE_BINS, DEFAULT_MIN_VOLUME_MM3, confusion_counts, case_metrics, metrics_from_counts, auc_score, equivalent_diameter_mm, size_bin, lesion_table, lesion_metrics, lesion_metrics_from_table, lesion_summary_by_size, score_histogram)
from . import evaluate
from .evaluate import (METRICS, LESION_SUMMARY_KEYS, age_group, evaluate_case, evaluate_cohort, load_score_hists, load_results, prediction_paths)

__all__ = ['voxel', 'evaluate', 'METRIC_KEYS', 'SIZE_BINS', 'DEFAULT_MIN_VOLUME_MM3', 'confusion_counts', 'case_metrics', 'metrics_from_counts', 'auc_score', 'equivalent_diameter_mm', 'size_bin', 'lesion_table', 'lesion_metrics', 'lesion_metrics_from_table', 'lesion_summary_by_size', 'score_histogram', 'METRICS', 'LESION_SUMMARY_KEYS', 'age_group', 'evaluate_case', 'evaluate_cohort', 'load_score_hists', 'load_results', 'prediction_paths']
