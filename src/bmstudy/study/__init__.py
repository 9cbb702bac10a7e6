"""bmstudy.study."""
from __future__ import annotations

from . import runner
from .runner import (PROVENANCE_FILE, KERNEL_NAME, PROVENANCE_PACKAGES, Stage, STAGES, PROFILES, StageError, StageResult, RunResult, default_notebooks_dir, notebook_source_hash, notebook_parameters, parse_param, git_commit, package_versions, run_study)

__all__ = ['runner', 'PROVENANCE_FILE', 'KERNEL_NAME', 'PROVENANCE_PACKAGES', 'Stage', 'STAGES', 'PROFILES', 'StageError', 'StageResult', 'RunResult', 'default_notebooks_dir', 'notebook_source_hash', 'notebook_parameters', 'parse_param', 'git_commit', 'package_versions', 'run_study']
