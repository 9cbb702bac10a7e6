"""Case plans of the synthetic cohort: demographics, lesion counts/sizes/patterns, manual time.

A plan is cheap (no image is rendered) and fully determined by ``(seed, site, index)``: each case
draws from ``SeedSequence([seed, site code, index, stream])`` (stream 0: the plan, stream 1: the
rendering, see :meth:`CasePlan.render_rng`), so a case does not depend on the cohort's size or on the
order in which processes render it. Parameters come from :class:`bmstudy.plan.SynthParams`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..plan import SynthParams, synth_params

__all__ = ["PATTERNS", "SITES", "LesionPlan", "CasePlan", "case_rng", "plan_case", "plan_cohort"]

#: Enhancement patterns of the paper (nodular, ring with necrotic centre, lobulated).
PATTERNS: tuple[str, ...] = ("uniform", "ring", "irregular")
#: The two sites, in cohort order.
SITES: tuple[str, ...] = ("internal", "external")
_SITE_CODE = {"internal": 1, "external": 2}
_PID_PREFIX = {"internal": "INT", "external": "EXT"}
_CLINICAL_DMIN, _CLINICAL_DMAX = 2.0, 30.0


@dataclass(frozen=True)
class LesionPlan:
    """One planned metastasis."""

    diameter_mm: float  # rendered maximal diameter (clinical mm, clipped to the profile's range)
    clinical_diameter_mm: float  # the clinical size drawn (2-30 mm)
    pattern: str
    variant: str = ""  # "", "cystic" or "haemorrhagic"
    touching: bool = False  # placed touching an earlier lesion


@dataclass(frozen=True)
class CasePlan:
    """Everything drawn for one case before rendering (the manifest row is computed from it)."""

    patient_id: str
    site: str
    index: int
    seed: int
    age: int
    sex: str
    cancer_type: str
    lesions: tuple[LesionPlan, ...]
    manual_seconds: float

    @property
    def n_lesions(self) -> int:
        """Number of planned lesions."""
        return len(self.lesions)

    def render_rng(self) -> np.random.Generator:
        """The random generator the renderer draws this case from (stream 1)."""
        return case_rng(self.seed, self.site, self.index, 1)


def case_rng(seed: int, site: str, index: int, stream: int) -> np.random.Generator:
    """Random generator of one case and stream, independent of every other case.

    Parameters
    ----------
    seed : int
        Cohort seed (>= 0).
    site : {'internal', 'external'}
        The case's site.
    index : int
        1-based case index within the site.
    stream : int
        0 for the plan, 1 for the rendering, 2 for the venous-mimic factor.

    Returns
    -------
    numpy.random.Generator

    Raises
    ------
    ValueError
        If ``seed`` is negative.
    """
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return np.random.default_rng(np.random.SeedSequence([int(seed), _SITE_CODE[site], int(index), stream]))


def _pattern_probs(d_clin: float) -> tuple[float, float, float]:
    if d_clin < 6:
        return (0.85, 0.0, 0.15)
    if d_clin < 15:
        return (0.45, 0.35, 0.20)
    return (0.15, 0.55, 0.30)


def plan_case(profile: SynthParams, site: str, index: int, seed: int = 0) -> CasePlan:
    """Demographics, lesion plan and manual annotation time of case ``index`` of ``site``.

    Parameters
    ----------
    profile : SynthParams
        Cohort parameters (lesion sizes, site demographics).
    site : {'internal', 'external'}
        The case's site.
    index : int
        1-based case index within the site (1..999; patient id ``INT001`` ...).
    seed : int, default=0
        Cohort seed (>= 0).

    Returns
    -------
    CasePlan

    Raises
    ------
    ValueError
        For an unknown site, an index outside [1, 999] or a negative seed.
    """
    if site not in _SITE_CODE:
        raise ValueError(f"unknown site {site!r}; choose from {SITES}")
    if not 1 <= int(index) <= 999:
        raise ValueError(f"case index must be in [1, 999] (patient ids {_PID_PREFIX[site]}001..), got {index}")
    sp = profile.sites[site]
    rng = case_rng(seed, site, index, 0)
    age = int(np.clip(round(rng.normal(sp.age_mean, sp.age_sd)), 18, 90))
    sex = "M" if rng.random() < sp.p_male else "F"
    lung = rng.random() < sp.p_lung
    # lesion count: 1 + negative binomial (over-dispersed); lung primaries seed more lesions
    extra_mean, r = (3.0, 1.2) if lung else (1.0, 1.2)
    n = int(min(1 + rng.negative_binomial(r, r / (r + extra_mean)), profile.max_lesions))
    median_d = 7.0 if lung else 11.0
    d_clin = np.clip(np.exp(rng.normal(math.log(median_d), 0.55, size=n)), _CLINICAL_DMIN, _CLINICAL_DMAX)
    d_clin = np.sort(d_clin)[::-1]
    lo, hi = profile.min_diameter_mm, profile.max_diameter_mm
    lesions = []
    for k, dc in enumerate(d_clin):
        d = float(np.clip(dc, lo, hi))  # clinical size (no shrinking); the tiny preset clips the largest
        pattern = PATTERNS[int(rng.choice(3, p=_pattern_probs(float(dc))))]
        if pattern == "ring" and d < profile.ring_min_diameter_mm:
            pattern = "uniform"
        u = rng.random()
        variant = ""
        if d >= 10.0 and pattern != "irregular":
            variant = "cystic" if u < 0.12 else ("haemorrhagic" if u < 0.2 else "")
        touching = bool(k > 0 and rng.random() < profile.touching_rate)
        lesions.append(LesionPlan(round(d, 2), round(float(dc), 2), pattern, variant, touching))
    vol_ml = float(np.sum(np.pi / 6 * d_clin ** 3) / 1000.0)
    # manual delineation time: opening/scrolling + per-lesion search/outline + volume-dependent contouring
    # (sites differ in readers/software: ``reader_factor``)
    seconds = (45.0 + 16.0 * n + 16.0 * math.sqrt(vol_ml)) * sp.reader_factor * math.exp(rng.normal(0.0, 0.22))
    return CasePlan(f"{_PID_PREFIX[site]}{index:03d}", site, int(index), int(seed), age, sex,
                    "lung" if lung else "other", tuple(lesions), round(seconds, 1))


def plan_cohort(profile: str | SynthParams = "default", seed: int = 0, **overrides: Any) -> list[CasePlan]:
    """Plans of all cases of a cohort, internal first.

    Parameters
    ----------
    profile : str or SynthParams, default='default'
        A preset name of :data:`bmstudy.plan.SYNTH_PRESETS` or the parameters themselves.
    seed : int, default=0
        Cohort seed.
    **overrides
        :class:`~bmstudy.plan.SynthParams` fields (e.g. ``n_internal=4``).

    Returns
    -------
    list of CasePlan
    """
    prof = synth_params(profile, **overrides)
    return ([plan_case(prof, "internal", i, seed) for i in range(1, prof.n_internal + 1)]
            + [plan_case(prof, "external", i, seed) for i in range(1, prof.n_external + 1)])
