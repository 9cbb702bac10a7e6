"""bmstudy.study: the study's stages and their execution.

- :mod:`~bmstudy.study.stages`: the :class:`Stage` list (:data:`STAGES`) with descriptions and the plan
  sections each stage reads.
- :mod:`~bmstudy.study.parameters`: ``--param`` parsing, plan overrides versus notebook parameters.
- :mod:`~bmstudy.study.fingerprint`: what decides that a stage re-runs.
- :mod:`~bmstudy.study.provenance`: ``runs/<name>/provenance.json``.
- :mod:`~bmstudy.study.runner`: :func:`run_study` (papermill: skip, resume, lock).
- :mod:`~bmstudy.study.run_cli`: ``bmstudy run`` (``--dry-run``, the case summary, exit codes).
- :mod:`~bmstudy.study.accounting`: per-stage ok / excluded / failed counts from the status tables.
- :mod:`~bmstudy.study.errors`: :class:`StageError`.
- :mod:`~bmstudy.study.plan_cli`: ``bmstudy plan``.
- :mod:`~bmstudy.study.notebook`: :func:`notebook_setup`, the first call of every study notebook.

Only :mod:`~bmstudy.study.notebook` and :mod:`~bmstudy.study.stages` load with the package (what a
stage notebook needs); the rest loads on first access. A stage's fingerprint covers the ``bmstudy``
modules its kernel loaded, so an edit to the runner does not re-run the study's stages.
"""
from __future__ import annotations

import importlib as _importlib
from typing import Any as _Any

from . import notebook, stages
from .notebook import NotebookContext, find_plan, notebook_setup
from .stages import PLAN_KEYS, PLAN_SECTIONS, PLAN_SETTINGS, STAGES, Stage, select_stages

#: Names loaded on first access: ``{name: module}`` (submodules map to themselves).
_LAZY: dict[str, str] = {
    **{m: m for m in ("accounting", "errors", "fingerprint", "parameters", "plan_cli", "provenance", "run_cli",
                      "runner")},
    **{n: "parameters" for n in ("LAYOUT_PARAMS", "is_plan_key", "notebook_parameters", "parse_param",
                                 "split_params")},
    **{n: "fingerprint" for n in ("changed_inputs", "notebook_source_hash", "stage_inputs")},
    **{n: "provenance" for n in ("PLAN_FILE", "PROVENANCE_FILE", "PROVENANCE_PACKAGES", "git_commit",
                                 "package_versions")},
    **{n: "runner" for n in ("KERNEL_NAME", "RunResult", "StageResult", "default_notebooks_dir", "run_study")},
    "StageError": "errors",
}

__all__ = [
    "notebook", "stages", "Stage", "STAGES", "PLAN_KEYS", "PLAN_SECTIONS", "PLAN_SETTINGS", "select_stages",
    "NotebookContext", "find_plan", "notebook_setup", *_LAZY,
]


def __getattr__(name: str) -> _Any:
    """Load the runner, fingerprints, provenance, ... on first access (a stage notebook never needs them)."""
    if name in _LAZY:
        module = _importlib.import_module(f"{__name__}.{_LAZY[name]}")
        return module if _LAZY[name] == name else getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
