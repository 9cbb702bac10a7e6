"""Evaluation of predictions against reference masks: voxel metrics, lesion detection, histograms.

* :mod:`~bmstudy.evaluation.voxel` -- the paper's eight voxel-wise metrics of one patient
  (confusion counts, exact rank AUC).
* :mod:`~bmstudy.evaluation.lesions` -- connected components, any-overlap lesion matching, size bins.
* :mod:`~bmstudy.evaluation.brats` -- BraTS-METS 2023 lesion-wise Dice / HD95.
* :mod:`~bmstudy.evaluation.surface` -- HD95 and normalised surface Dice.
* :mod:`~bmstudy.evaluation.froc` -- per-lesion candidate scores, FROC curve and score.
* :mod:`~bmstudy.evaluation.diameters` -- the longest axial (RANO-BM) lesion diameter.
* :mod:`~bmstudy.evaluation.provenance` -- code and input hashes of an evaluation.
* :mod:`~bmstudy.evaluation.histograms` -- per-patient score histograms (``score_hists.npz``).
* :mod:`~bmstudy.evaluation.case` -- one patient: read reference and prediction (any format of
  :func:`bmstudy.io.read_volume`), check the grid, every metric.
* :mod:`~bmstudy.evaluation.evaluate` -- the cohort: ``metrics.csv``, ``lesions.csv``,
  ``score_hists.npz`` from a manifest and a prediction folder (``bmstudy evaluate``).

Names load their submodule on first access (:mod:`bmstudy._lazy`).
"""
from __future__ import annotations

from .._lazy import exports_of, lazy_exports

_SPEC: dict[str, tuple[str, ...]] = {
    'case': ('LESION_SUMMARY_KEYS', 'evaluate_case', 'prediction_paths', 'BRATS_COLUMNS', 'FROC_COLUMNS', 'SURFACE_COLUMNS',),
    'evaluate': ('METRICS', 'OUTPUT_FILES', 'age_group', 'evaluate_cohort', 'load_results', 'load_froc',),
    'histograms': ('DEFAULT_N_BINS', 'load_score_hists', 'save_score_hists', 'score_histogram',),
    'lesions': ('DEFAULT_MIN_VOLUME_MM3', 'LESION_COLUMNS', 'SIZE_BINS', 'connected_components', 'equivalent_diameter_mm', 'lesion_metrics', 'lesion_metrics_from_table', 'lesion_summary_by_size', 'lesion_table', 'size_bin',),
    'voxel': ('METRIC_KEYS', 'auc_score', 'case_metrics', 'confusion_counts', 'metrics_from_counts', 'EMPTY_OPTIONS',),
    'auc': ('auc_score_fast',),
    'diameters': ('axial_axis', 'axial_diameters_mm',),
    'brats': ('BRATS_KEYS', 'brats_lesion_metrics', 'match_lesions',),
    'froc': ('FROC_FP_POINTS', 'LesionScores', 'froc_curve', 'froc_score', 'lesion_scores', 'scores_from_rows',),
    'surface': ('BRATS_MAX_DISTANCE_MM', 'hd95', 'surface_dice', 'surface_metrics',),
}
_SUBMODULES: tuple[str, ...] = ('auc', 'brats', 'case', 'diameters', 'evaluate', 'froc', 'histograms', 'lesions', 'provenance', 'surface', 'voxel',)

__all__ = ['voxel', 'lesions', 'histograms', 'case', 'evaluate', 'METRIC_KEYS', 'METRICS', 'LESION_SUMMARY_KEYS', 'OUTPUT_FILES', 'SIZE_BINS', 'DEFAULT_MIN_VOLUME_MM3', 'DEFAULT_N_BINS', 'LESION_COLUMNS', 'confusion_counts', 'case_metrics', 'metrics_from_counts', 'auc_score', 'equivalent_diameter_mm', 'size_bin', 'connected_components', 'lesion_table', 'lesion_metrics', 'lesion_metrics_from_table', 'lesion_summary_by_size', 'score_histogram', 'save_score_hists', 'load_score_hists', 'age_group', 'evaluate_case', 'evaluate_cohort', 'load_results', 'prediction_paths', 'auc', 'brats', 'froc', 'surface', 'auc_score_fast', 'BRATS_KEYS', 'brats_lesion_metrics', 'match_lesions', 'FROC_FP_POINTS', 'LesionScores', 'froc_curve', 'froc_score', 'lesion_scores', 'BRATS_MAX_DISTANCE_MM', 'hd95', 'surface_dice', 'surface_metrics', 'diameters', 'provenance', 'BRATS_COLUMNS', 'FROC_COLUMNS', 'SURFACE_COLUMNS', 'axial_axis', 'axial_diameters_mm', 'load_froc', 'EMPTY_OPTIONS', 'scores_from_rows']
__getattr__, __dir__ = lazy_exports(__name__, exports_of(_SPEC), _SUBMODULES)
