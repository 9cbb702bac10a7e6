"""Evaluation of predictions against reference masks: voxel metrics, lesion detection, histograms.

* :mod:`~bmstudy.evaluation.voxel` -- the paper's eight voxel-wise metrics of one patient
  (confusion counts, exact rank AUC).
* :mod:`~bmstudy.evaluation.lesions` -- connected components, BraTS-METS lesion matching, size bins.
* :mod:`~bmstudy.evaluation.histograms` -- per-patient score histograms (``score_hists.npz``).
* :mod:`~bmstudy.evaluation.case` -- one patient: read reference and prediction (any format of
  :func:`bmstudy.io.read_volume`), check the grid, every metric.
* :mod:`~bmstudy.evaluation.evaluate` -- the cohort: ``metrics.csv``, ``lesions.csv``,
  ``score_hists.npz`` from a manifest and a prediction folder (``bmstudy evaluate``).
"""
from __future__ import annotations

from . import case, evaluate, histograms, lesions, voxel
from .case import LESION_SUMMARY_KEYS, evaluate_case, prediction_paths
from .evaluate import METRICS, OUTPUT_FILES, age_group, evaluate_cohort, load_results
from .histograms import DEFAULT_N_BINS, load_score_hists, save_score_hists, score_histogram
from .lesions import (
    DEFAULT_MIN_VOLUME_MM3,
    LESION_COLUMNS,
    SIZE_BINS,
    connected_components,
    equivalent_diameter_mm,
    lesion_metrics,
    lesion_metrics_from_table,
    lesion_summary_by_size,
    lesion_table,
    size_bin,
)
from .voxel import METRIC_KEYS, auc_score, case_metrics, confusion_counts, metrics_from_counts

from . import auc, brats, froc, surface
from .auc import auc_score_fast
from .brats import BRATS_KEYS, brats_lesion_metrics, match_lesions
from .froc import FROC_FP_POINTS, LesionScores, froc_curve, froc_score, lesion_scores
from .surface import BRATS_MAX_DISTANCE_MM, hd95, surface_dice, surface_metrics

__all__ = [
    "voxel",
    "lesions",
    "histograms",
    "case",
    "evaluate",
    "METRIC_KEYS",
    "METRICS",
    "LESION_SUMMARY_KEYS",
    "OUTPUT_FILES",
    "SIZE_BINS",
    "DEFAULT_MIN_VOLUME_MM3",
    "DEFAULT_N_BINS",
    "LESION_COLUMNS",
    "confusion_counts",
    "case_metrics",
    "metrics_from_counts",
    "auc_score",
    "equivalent_diameter_mm",
    "size_bin",
    "connected_components",
    "lesion_table",
    "lesion_metrics",
    "lesion_metrics_from_table",
    "lesion_summary_by_size",
    "score_histogram",
    "save_score_hists",
    "load_score_hists",
    "age_group",
    "evaluate_case",
    "evaluate_cohort",
    "load_results",
    "prediction_paths",
    "auc", "brats", "froc", "surface", "auc_score_fast", "BRATS_KEYS", "brats_lesion_metrics", "match_lesions",
    "FROC_FP_POINTS", "LesionScores", "froc_curve", "froc_score", "lesion_scores", "BRATS_MAX_DISTANCE_MM",
    "hd95", "surface_dice", "surface_metrics",
]
