"""bmstudy.synthetic."""
from __future__ import annotations

from . import cohort
from .cohort import (GENERATOR_VERSION, PATTERNS, SITES, PROFILES, SynthProfile, SiteParams, LesionPlan, CasePlan, get_profile, plan_case, plan_cohort, cohort_table, render_case, generate_cohort, write_preview, reference_manifest)

__all__ = ['cohort', 'GENERATOR_VERSION', 'PATTERNS', 'SITES', 'PROFILES', 'SynthProfile', 'SiteParams', 'LesionPlan', 'CasePlan', 'get_profile', 'plan_case', 'plan_cohort', 'cohort_table', 'render_case', 'generate_cohort', 'write_preview', 'reference_manifest']
