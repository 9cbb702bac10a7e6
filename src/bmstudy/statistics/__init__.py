"""bmstudy.statistics."""
from __future__ import annotations

from . import rank
from .rank import (MannWhitneyResult, DeLongResult, mann_whitney, delong_paired, delong_unpaired, delong_unpaired_hist, delong_placements, auc_from_hist, compare_continuous, compare_categorical, cluster_bootstrap_auc_diff, patient_level_auc_test)

__all__ = ['rank', 'MannWhitneyResult', 'DeLongResult', 'mann_whitney', 'delong_paired', 'delong_unpaired', 'delong_unpaired_hist', 'delong_placements', 'auc_from_hist', 'compare_continuous', 'compare_categorical', 'cluster_bootstrap_auc_diff', 'patient_level_auc_test']
