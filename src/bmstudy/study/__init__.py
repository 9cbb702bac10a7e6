"""bmstudy.study: the study's stages and their execution.

- :mod:`~bmstudy.study.stages`: the :class:`Stage` list (:data:`STAGES`) with descriptions and the plan
  sections each stage reads.
- :mod:`~bmstudy.study.parameters`: ``--param`` parsing, plan overrides versus notebook parameters.
- :mod:`~bmstudy.study.fingerprint`: what decides that a stage re-runs.
- :mod:`~bmstudy.study.provenance`: ``runs/<name>/provenance.json``.
- :mod:`~bmstudy.study.runner`: :func:`run_study` (papermill) and ``bmstudy run``.
- :mod:`~bmstudy.study.plan_cli`: ``bmstudy plan``.
- :mod:`~bmstudy.study.notebook`: :func:`notebook_setup`, the first call of every study notebook.
"""
from __future__ import annotations

from . import fingerprint, notebook, parameters, plan_cli, provenance, runner, stages
from .fingerprint import changed_inputs, notebook_source_hash, stage_inputs
from .notebook import NotebookContext, find_plan, notebook_setup
from .parameters import LAYOUT_PARAMS, is_plan_key, notebook_parameters, parse_param, split_params
from .provenance import PLAN_FILE, PROVENANCE_FILE, PROVENANCE_PACKAGES, git_commit, package_versions
from .runner import KERNEL_NAME, RunResult, StageError, StageResult, default_notebooks_dir, run_study
from .stages import PLAN_KEYS, PLAN_SECTIONS, PLAN_SETTINGS, STAGES, Stage, select_stages

__all__ = [
    "fingerprint", "notebook", "parameters", "plan_cli", "provenance", "runner", "stages",
    "Stage", "STAGES", "PLAN_KEYS", "PLAN_SECTIONS", "PLAN_SETTINGS", "select_stages",
    "LAYOUT_PARAMS", "is_plan_key", "notebook_parameters", "parse_param", "split_params",
    "changed_inputs", "notebook_source_hash", "stage_inputs",
    "PLAN_FILE", "PROVENANCE_FILE", "PROVENANCE_PACKAGES", "git_commit", "package_versions",
    "KERNEL_NAME", "RunResult", "StageError", "StageResult", "default_notebooks_dir", "run_study",
    "NotebookContext", "find_plan", "notebook_setup",
]
