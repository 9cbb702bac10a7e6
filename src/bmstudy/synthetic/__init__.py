"""Synthetic CE-T1 brain-metastasis cohorts (stage 01's default data).

Modules, in rendering order: :mod:`.plans` (case plans: demographics, lesions, manual time),
:mod:`.template` (the MNI152 2009 template nilearn ships, and its derived maps), :mod:`.anatomy`
(per-patient deformed template brain in a procedural skull/scalp), :mod:`.lesions` (metastases, enhancement
patterns, oedema), :mod:`.vessels` (vessel mimics), :mod:`.acquisition` (intensities, blur, bias,
noise, site contrast), :mod:`.cohort` (render a case, write a cohort + manifest, ``bmstudy synth``),
:mod:`.preview` (PNG montage incl. a real scan), :mod:`.stripping` (skull-stripping Dice vs the
truth); :mod:`.fields` holds the shared grids and random fields.
Parameters live in :mod:`bmstudy.plan` (:class:`~bmstudy.plan.SynthParams`,
:data:`~bmstudy.plan.SYNTH_PRESETS`, :func:`~bmstudy.plan.synth_params`).
"""
from __future__ import annotations

from . import acquisition, anatomy, cohort, fields, lesions, plans, preview, stripping, template, vessels
from .anatomy import TISSUE_LABELS, head_anatomy
from .cohort import STATUS_COLUMNS, case_files, cohort_table, generate_cohort, reference_manifest, render_case
from .plans import PATTERNS, SITES, CasePlan, LesionPlan, plan_case, plan_cohort
from .preview import default_real_dir, write_preview

__all__ = [
    # modules
    "acquisition", "anatomy", "cohort", "fields", "lesions", "plans", "preview", "stripping", "template", "vessels",
    # case plans
    "PATTERNS", "SITES", "LesionPlan", "CasePlan", "plan_case", "plan_cohort",
    # rendering and cohorts
    "TISSUE_LABELS", "head_anatomy", "render_case", "case_files", "cohort_table", "generate_cohort",
    "reference_manifest", "STATUS_COLUMNS", "write_preview", "default_real_dir",
]
