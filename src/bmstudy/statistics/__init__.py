"""Statistics of the study: rank tests, DeLong, bootstrap and the Table 1 tests.

* :mod:`~bmstudy.statistics.rank` -- Mann-Whitney / Wilcoxon rank-sum with the Hodges-Lehmann shift
  and its CI (as R's ``wilcox.test``).
* :mod:`~bmstudy.statistics.delong` -- DeLong's AUC tests (as pROC): paired, unpaired, from score
  histograms (the paper's voxel-level comparison, anti-conservative: see that module).
* :mod:`~bmstudy.statistics.bootstrap` -- patient-level alternatives: cluster bootstrap of the pooled
  AUC difference, per-patient AUCs compared with Mann-Whitney.
* :mod:`~bmstudy.statistics.table1` -- continuous (t / Mann-Whitney) and categorical (chi-square)
  comparisons of two patient groups.
"""
from __future__ import annotations

from . import bootstrap, delong, rank, table1
from .bootstrap import cluster_bootstrap_auc_diff, patient_level_auc_test
from .delong import (
    DeLongResult,
    auc_from_hist,
    delong_paired,
    delong_placements,
    delong_unpaired,
    delong_unpaired_hist,
)
from .rank import MannWhitneyResult, mann_whitney
from .table1 import compare_categorical, compare_continuous

from . import permutation
from .permutation import PermutationResult, permutation_test, pooled_auc_permutation_test

__all__ = [
    "rank",
    "delong",
    "bootstrap",
    "table1",
    "MannWhitneyResult",
    "DeLongResult",
    "mann_whitney",
    "delong_paired",
    "delong_unpaired",
    "delong_unpaired_hist",
    "delong_placements",
    "auc_from_hist",
    "compare_continuous",
    "compare_categorical",
    "cluster_bootstrap_auc_diff",
    "patient_level_auc_test",
    "permutation", "PermutationResult", "permutation_test", "pooled_auc_permutation_test",
]
