"""Synthetic brain-metastasis cohort: procedural CE-T1 heads with lesions, two sites, a manifest.

No real BM cohort can be downloaded here, so the study's default data are generated. Each case is a
procedural head (scalp, dark skull with diploe, CSF, folded grey matter over white matter, deep grey
nuclei, ventricles, cerebellum) rendered in physical millimetres on the site's voxel grid, with

* 1..``max_lesions`` metastases of 2..``max_diameter_mm`` mm, mostly at the grey-white junction, in the
  paper's three enhancement patterns (``uniform`` nodular, ``ring`` with necrotic centre,
  ``irregular``/lobulated), each with peritumoral oedema (darker, *not* in the mask);
* bright tubular vessel mimics (superior sagittal sinus, cortical/parenchymal vessels, choroid
  plexus) that are *not* in the mask;
* partial-volume blur, a smooth multiplicative bias field and Rician noise.

Two sites: ``internal`` (1 mm isotropic) and ``external`` (anisotropic, e.g. 0.9x0.9x1.5 mm, covering the
same physical field of view, with different contrast, enhancement, bias, noise and intensity scale).
Demographics follow the paper (age, sex, lung vs other primary with the sites' selection bias); lung
primaries get more and smaller lesions; a manual-annotation time grows with lesion count and volume.

Everything is deterministic per ``seed``: each case draws from ``SeedSequence([seed, site, index,
stream])`` so the result does not depend on process order. The case *plan* (demographics, lesion
count/diameters/patterns, manual time) is cheap and computed by :func:`cohort_table` without
rendering; :func:`generate_cohort` renders exactly those plans, so the manifest cannot diverge.

The repository's top-level ``data_manifest.csv`` (profile ``default``, seed 0, files under
``data/synthetic/``) is written by :func:`reference_manifest`::

    python -c "from bmstudy.synthetic.cohort import reference_manifest; reference_manifest('data_manifest.csv')"
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import ndimage

from ..io.split import systematic_split
from ..io.manifest import write_manifest
from ..utils import PathLike, atomic_path, atomic_write_json, get_logger, params_hash

__all__ = [
    "GENERATOR_VERSION", "PATTERNS", "SITES", "PROFILES", "SynthProfile", "SiteParams", "LesionPlan",
    "CasePlan", "get_profile", "plan_case", "plan_cohort", "cohort_table", "render_case",
    "generate_cohort", "write_preview", "reference_manifest", "add_cli_arguments", "cli_main",
]

GENERATOR_VERSION = "1"
PATTERNS: tuple[str, ...] = ("uniform", "ring", "irregular")
SITES: tuple[str, ...] = ("internal", "external")
_SITE_CODE = {"internal": 1, "external": 2}
_PID_PREFIX = {"internal": "INT", "external": "EXT"}
_PAPER_FOV_X = 200.0  # mm; head_scale = fov_x / this
_CLINICAL_DMIN, _CLINICAL_DMAX = 2.0, 30.0
log = get_logger("bmstudy.synthetic.cohort")


# ----------------------------------------------------------------------------- configuration
from ..plan import SiteParams, SynthParams, SYNTH_PRESETS, default_sites as _default_sites, synth_params

#: Backwards-compatible names (profiles live in :mod:`bmstudy.plan`).
SynthProfile = SynthParams
PROFILES = SYNTH_PRESETS
get_profile = synth_params


# ----------------------------------------------------------------------------- case plans
@dataclass(frozen=True)
class LesionPlan:
    diameter_mm: float  # rendered (profile-scaled) maximal diameter
    clinical_diameter_mm: float  # the paper-scale size it stands for (2-30 mm)
    pattern: str


@dataclass(frozen=True)
class CasePlan:
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
        return len(self.lesions)

    def render_rng(self) -> np.random.Generator:
        return _rng(self.seed, self.site, self.index, 1)


def _rng(seed: int, site: str, index: int, stream: int) -> np.random.Generator:
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return np.random.default_rng(np.random.SeedSequence([int(seed), _SITE_CODE[site], int(index), stream]))


def _pattern_probs(d_clin: float) -> tuple[float, float, float]:
    if d_clin < 6:
        return (0.85, 0.0, 0.15)
    if d_clin < 15:
        return (0.45, 0.35, 0.20)
    return (0.15, 0.55, 0.30)


def plan_case(profile: SynthProfile, site: str, index: int, seed: int = 0) -> CasePlan:
    """Demographics, lesion plan and manual annotation time of case ``index`` (1-based) of ``site``."""
    if site not in _SITE_CODE:
        raise ValueError(f"unknown site {site!r}; choose from {SITES}")
    if not 1 <= int(index) <= 999:
        raise ValueError(f"case index must be in [1, 999] (patient ids {_PID_PREFIX[site]}001..), got {index}")
    sp = profile.sites[site]
    rng = _rng(seed, site, index, 0)
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
    for dc in d_clin:
        d = lo + (dc - _CLINICAL_DMIN) * (hi - lo) / (_CLINICAL_DMAX - _CLINICAL_DMIN)
        pattern = PATTERNS[int(rng.choice(3, p=_pattern_probs(float(dc))))]
        if pattern == "ring" and d < profile.ring_min_diameter_mm:
            pattern = "uniform"
        lesions.append(LesionPlan(round(float(d), 2), round(float(dc), 2), pattern))
    vol_ml = float(np.sum(np.pi / 6 * d_clin ** 3) / 1000.0)
    # manual delineation time: opening/scrolling + per-lesion search/outline + volume-dependent contouring
    # (sites differ in readers/software: ``reader_factor``)
    seconds = (45.0 + 16.0 * n + 16.0 * math.sqrt(vol_ml)) * sp.reader_factor * math.exp(rng.normal(0.0, 0.22))
    return CasePlan(f"{_PID_PREFIX[site]}{index:03d}", site, int(index), int(seed), age, sex,
                    "lung" if lung else "other", tuple(lesions), round(seconds, 1))


def plan_cohort(profile: str | SynthProfile = "default", seed: int = 0, **overrides: Any) -> list[CasePlan]:
    """Plans of all cases, internal first."""
    prof = get_profile(profile, **overrides)
    return ([plan_case(prof, "internal", i, seed) for i in range(1, prof.n_internal + 1)]
            + [plan_case(prof, "external", i, seed) for i in range(1, prof.n_external + 1)])


def _case_files(pid: str) -> dict[str, str]:
    return {"image": f"images/{pid}_t1c.nii.gz", "mask": f"masks/{pid}_mask.nii.gz",
            "brain_mask": f"brain/{pid}_brain.nii.gz"}


def cohort_table(profile: str | SynthProfile = "default", seed: int = 0, *, path_prefix: str = "",
                 **overrides: Any) -> pd.DataFrame:
    """The manifest rows the generator writes, computed WITHOUT rendering any image.

    Paths are relative to the cohort folder, prefixed with ``path_prefix`` (e.g. ``data/synthetic``
    for a manifest at the repository root). The split comes from
    :func:`bmstudy.io.split.systematic_split` with the profile's ``test_fraction`` and ``seed``.
    """
    prof = get_profile(profile, **overrides)
    rows = []
    for plan in plan_cohort(prof, seed):
        files = {k: (f"{path_prefix.rstrip('/')}/{v}" if path_prefix else v) for k, v in _case_files(plan.patient_id).items()}
        d = np.array([les.diameter_mm for les in plan.lesions])
        sp = prof.sites[plan.site].spacing
        rows.append({
            "patient_id": plan.patient_id, "site": plan.site,
            "split": "external" if plan.site == "external" else "",
            "age": plan.age, "sex": plan.sex, "cancer_type": plan.cancer_type,
            "image": files["image"], "mask": files["mask"], "manual_seconds": plan.manual_seconds,
            "brain_mask": files["brain_mask"], "scanner": prof.sites[plan.site].scanner,
            "voxel_size": "x".join(f"{s:g}" for s in sp), "n_lesions": plan.n_lesions,
            "max_lesion_diameter_mm": float(d.max()),
            "nominal_lesion_volume_mm3": round(float(np.sum(np.pi / 6 * d ** 3)), 1),
            "patterns": ";".join(les.pattern for les in plan.lesions),
        })
    df = pd.DataFrame(rows)
    return systematic_split(df, test_fraction=prof.test_fraction, seed=seed)


def reference_manifest(path: PathLike, profile: str = "default", seed: int = 0,
                       path_prefix: str = "data/synthetic") -> Path:
    """Write the repository's top-level ``data_manifest.csv`` (no rendering)."""
    return write_manifest(cohort_table(profile, seed, path_prefix=path_prefix), path)


# ----------------------------------------------------------------------------- field helpers
def _grid_mm(shape: Sequence[int], spacing: Sequence[float]) -> list[np.ndarray]:
    """Open (broadcastable) voxel-centre coordinates in mm, origin at the volume centre."""
    out = []
    for ax, (n, s) in enumerate(zip(shape, spacing)):
        c = (np.arange(n, dtype=np.float32) - (n - 1) / 2.0) * np.float32(s)
        sh = [1, 1, 1]
        sh[ax] = n
        out.append(c.reshape(sh))
    return out


def _affine(shape: Sequence[int], spacing: Sequence[float]) -> np.ndarray:
    aff = np.diag([*map(float, spacing), 1.0])
    aff[:3, 3] = [-(n - 1) / 2.0 * s for n, s in zip(shape, spacing)]
    return aff


def _smooth_noise(rng: np.random.Generator, shape: Sequence[int], spacing: Sequence[float],
                  corr_mm: float) -> np.ndarray:
    """Zero-mean, unit-std smooth random field with correlation length ~``corr_mm`` (float32)."""
    ext = np.asarray(shape) * np.asarray(spacing)
    step = max(corr_mm / 2.0, float(min(spacing)))
    coarse = np.maximum(np.ceil(ext / step).astype(int) + 4, 4)
    f = ndimage.gaussian_filter(rng.standard_normal(coarse).astype(np.float32), 1.0, mode="wrap")
    zoom = [n / c for n, c in zip(shape, coarse)]
    f = ndimage.zoom(f, zoom, order=1, mode="nearest", grid_mode=True)
    f = f[: shape[0], : shape[1], : shape[2]]
    if f.shape != tuple(shape):  # zoom can be one short; pad by edge values
        f = np.pad(f, [(0, n - m) for n, m in zip(shape, f.shape)], mode="edge")
    f -= f.mean()
    f /= f.std() + 1e-8
    return f.astype(np.float32)


def _local_box(center_vox: np.ndarray, radius_mm: float, spacing: np.ndarray, shape: Sequence[int]):
    half = np.ceil(radius_mm / spacing).astype(int) + 1
    lo = np.maximum(np.floor(center_vox).astype(int) - half, 0)
    hi = np.minimum(np.ceil(center_vox).astype(int) + half + 1, shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi)), lo


def _box_coords_mm(sl: tuple[slice, ...], center_vox: np.ndarray, spacing: np.ndarray) -> list[np.ndarray]:
    out = []
    for ax, s in enumerate(sl):
        c = ((np.arange(s.start, s.stop, dtype=np.float32) - center_vox[ax]) * spacing[ax]).astype(np.float32)
        sh = [1, 1, 1]
        sh[ax] = len(c)
        out.append(c.reshape(sh))
    return out


# ----------------------------------------------------------------------------- anatomy
def _anatomy(rng: np.random.Generator, prof: SynthProfile, shape: tuple[int, int, int],
             spacing: np.ndarray) -> dict[str, Any]:
    """Tissue label volume and helpers. Labels: 0 bg, 1 scalp, 2 muscle, 3 skull, 4 diploe, 5 CSF,
    6 GM, 7 WM, 8 deep GM, 9 ventricle CSF, 10 vitreous, 11 orbital fat; plus ``brain`` (bool) etc."""
    s = prof.head_scale
    x, y, z = _grid_mm(shape, spacing)
    fov = np.asarray(prof.fov_mm, dtype=np.float32)
    axes = fov * np.array([0.44, 0.445, 0.43]) * rng.uniform(0.95, 1.02, 3)
    shift = rng.normal(0, 0.01, 3) * fov
    xs, ys, zs = x - shift[0], y - shift[1], z - shift[2]
    deform = _smooth_noise(rng, shape, spacing, 18.0 * s + 8.0)
    # flatten the skull base a little, widen the back of the head
    r = np.sqrt((xs / (axes[0] * (1.0 - 0.04 * ys / axes[1]))) ** 2 + (ys / axes[1]) ** 2
                + (zs / (axes[2] * np.where(zs < 0, 0.9, 1.0))) ** 2)
    rho = r * (1.0 + 0.025 * deform)
    R = float(np.mean(axes))
    t_scalp, t_muscle = max(2.0, 5.0 * s), max(1.0, 1.5 * s)
    t_skull, t_csf = max(3.0, 7.0 * s), max(1.2, 2.5 * s)
    lv = np.cumsum([t_scalp, t_muscle, t_skull, t_csf]) / R
    rho_brain = 1.0 - lv[3]
    lab = np.zeros(shape, np.uint8)
    lab[rho < 1.0] = 1
    lab[rho < 1.0 - lv[0]] = 2
    lab[rho < 1.0 - lv[1]] = 3
    dip = (rho < 1.0 - lv[1] - 0.3 * t_skull / R) & (rho > 1.0 - lv[2] + 0.3 * t_skull / R)
    lab[dip] = 4
    lab[rho < 1.0 - lv[2]] = 5
    brain = rho < rho_brain
    # cortex: sulci are thin CSF sheets along the zero set of a band-pass field, reaching t_sulc deep;
    # the grey-white boundary dips under each sulcus (gyri with white-matter cores)
    g1 = _smooth_noise(rng, shape, spacing, max(4.0, 9.0 * s))
    g2 = _smooth_noise(rng, shape, spacing, max(2.5, 4.0 * s))
    gyri = g1 + 0.35 * g2
    gyri /= gyri.std() + 1e-6
    t_gm, t_sulc = max(2.2, 3.0 * s), max(3.5, 10.0 * s)
    depth = (rho_brain - rho) * R  # approximate depth below the brain surface, mm
    near = np.exp(-(gyri / 0.6) ** 2)
    lab[brain] = 6
    wm = brain & (depth > t_gm + (t_sulc - 0.5) * near)
    sulcus = brain & (np.abs(gyri) < 0.09) & (depth < t_sulc)
    b_axes = axes * (1 - lv[3])
    # interhemispheric fissure above the corpus callosum (and fore/aft of it), with medial cortex
    above_cc = (zs > 0.22 * b_axes[2]) | ((np.abs(ys) > 0.42 * b_axes[1]) & (zs > -0.2 * b_axes[2]))
    fiss = (np.abs(xs) < max(0.6, 0.8 * spacing[0])) & above_cc
    wm &= ~((np.abs(xs) < t_gm + max(0.6, spacing[0])) & above_cc)
    lab[wm] = 7
    lab[sulcus] = 5
    lab[brain & fiss] = 5
    # cerebellum: posterior-inferior ellipsoid, foliated GM/WM, tentorium (CSF) on top
    ce = np.sqrt((xs / (0.62 * b_axes[0])) ** 2 + ((ys + 0.62 * b_axes[1]) / (0.32 * b_axes[1])) ** 2
                 + ((zs + 0.6 * b_axes[2]) / (0.34 * b_axes[2])) ** 2) * (1 + 0.03 * deform)
    cer = brain & (ce < 1.0)
    fol = np.sin(2 * np.pi * ce * 0.32 * b_axes[1] / max(2.5, 3.5 * s) + 2.0 * g2)
    lab[cer & (depth > t_gm) & (fol > 0.2)] = 7
    lab[cer & (depth > t_gm) & (fol <= 0.2)] = 6
    lab[cer & (fol < -0.85) & (depth < 0.5 * t_sulc)] = 5
    lab[brain & (ce >= 1.0) & (ce < 1.0 + max(0.8, spacing[2]) / (0.34 * b_axes[2]))] = 5
    # deep grey nuclei (thalamus / basal ganglia)
    for sx in (-1, 1):
        c = np.array([sx * 0.2, -0.02, -0.05]) * b_axes
        e = np.sqrt(((xs - c[0]) / (0.11 * b_axes[0])) ** 2 + ((ys - c[1]) / (0.17 * b_axes[1])) ** 2
                    + ((zs - c[2]) / (0.12 * b_axes[2])) ** 2) * (1 + 0.08 * deform)
        lab[e < 1] = 8
    # lateral ventricles: curved (banana) ellipsoids either side of the midline, + third ventricle
    vent = np.zeros(shape, bool)
    vs = rng.uniform(0.85, 1.25)  # ventricle size varies with age
    for sx in (-1, 1):
        yy = ys / b_axes[1]
        zc = (0.12 - 0.35 * yy ** 2) * b_axes[2]
        e = np.sqrt(((xs - sx * 0.1 * b_axes[0]) / (0.075 * vs * b_axes[0])) ** 2
                    + ((ys - 0.02 * b_axes[1]) / (0.38 * b_axes[1])) ** 2
                    + ((zs - zc) / (0.09 * vs * b_axes[2])) ** 2) * (1 + 0.1 * deform)
        vent |= e < 1
    e3 = np.sqrt((xs / max(0.8, 0.012 * b_axes[0])) ** 2 + ((ys + 0.02 * b_axes[1]) / (0.12 * b_axes[1])) ** 2
                 + ((zs + 0.02 * b_axes[2]) / (0.1 * b_axes[2])) ** 2)
    vent |= e3 < 1
    vent &= brain
    lab[vent] = 9
    # orbits (outside the brain): vitreous (dark on T1) in bright orbital fat, below the frontal lobe
    r_eye = max(4.0, 12.0 * s)
    for sx in (-1, 1):
        c = np.array([sx * 0.3 * axes[0], 0.8 * axes[1], -0.38 * axes[2]])
        d = np.sqrt((xs - c[0]) ** 2 + (ys - c[1]) ** 2 + (zs - c[2]) ** 2)
        free = ~brain & (rho < 1.0)
        lab[free & (d < r_eye + max(2.0, 4.0 * s))] = 11
        lab[free & (d < r_eye)] = 10
    return dict(lab=lab, brain=brain, rho=rho, rho_brain=rho_brain, R=R, axes=axes, shift=shift,
                b_axes=b_axes, gyri=gyri, vent=vent)


def _tissue_image(rng: np.random.Generator, lab: np.ndarray, site: SiteParams, spacing: np.ndarray) -> np.ndarray:
    t = site.tissue
    lut = np.array([0.0, t["scalp"], t["muscle"], t["skull"], t["diploe"], t["csf"], t["gm"], t["wm"],
                    t["deep_gm"], t["csf"], t["vitreous"], t["scalp"]], np.float32)
    lut[1:] *= rng.uniform(0.97, 1.03, len(lut) - 1).astype(np.float32)  # subject-level variation
    img = lut[lab]
    tex = _smooth_noise(rng, lab.shape, spacing, 2.0)
    img *= 1.0 + 0.035 * tex * ((lab >= 6) & (lab <= 8))
    return img


# ----------------------------------------------------------------------------- lesions
def _place_lesions(rng: np.random.Generator, plan: CasePlan, anat: dict[str, Any], spacing: np.ndarray
                   ) -> list[np.ndarray]:
    """Centres (voxel coordinates) for the planned lesions: ~80% at the grey-white junction."""
    lab, brain = anat["lab"], anat["brain"]
    edt = ndimage.distance_transform_edt(brain, sampling=spacing).astype(np.float32)
    gm = (lab == 6) | (lab == 8)
    wm = lab == 7
    # distance (mm) of each voxel to grey matter: a lesion "at the junction" has its centre in white
    # matter within ~0.8 radius of grey matter (so it straddles the grey-white boundary)
    to_gm = ndimage.distance_transform_edt(~gm, sampling=spacing).astype(np.float32)
    parenchyma = (gm | wm) & ~ndimage.binary_dilation(lab == 9, iterations=1)
    centres: list[np.ndarray] = []
    radii: list[float] = []
    gap = 3.0  # mm between lesion boundaries (separate connected components)
    for les in plan.lesions:
        r = les.diameter_mm / 2.0
        need = r + 1.5 + 0.5 * float(np.max(spacing))
        placed = False
        pools = ["junction", "parenchyma", "brain"] if rng.random() < 0.8 else ["parenchyma", "brain"]
        for pool_name in pools:
            if pool_name == "junction":
                pool = wm & (to_gm <= max(2.0, 0.8 * r)) & (edt > need)
            else:
                pool = (parenchyma if pool_name == "parenchyma" else brain) & (edt > need)
            cand = np.argwhere(pool)
            if len(cand) == 0:
                continue
            for _ in range(200):
                c = cand[rng.integers(len(cand))].astype(np.float64) + rng.uniform(-0.5, 0.5, 3)
                if all(np.linalg.norm((c - c2) * spacing) > r + r2 + gap for c2, r2 in zip(centres, radii)):
                    centres.append(c)
                    radii.append(r)
                    placed = True
                    break
            if placed:
                break
        if not placed:
            raise RuntimeError(f"{plan.patient_id}: cannot place lesion of {les.diameter_mm} mm "
                               f"({len(centres)} of {plan.n_lesions} placed); reduce max_diameter_mm/max_lesions")
    return centres


def _lesion_shape(rng: np.random.Generator, les: LesionPlan, coords: list[np.ndarray], spacing: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Boolean lesion mask and relative enhancement (1 = full, necrosis ~0) in a local box."""
    x, y, z = coords
    R = les.diameter_mm / 2.0
    box_shape = np.broadcast_shapes(x.shape, y.shape, z.shape)
    noise = rng.standard_normal(box_shape).astype(np.float32)
    noise = ndimage.gaussian_filter(noise, max(0.8, 0.15 * R / float(np.min(spacing))))
    noise /= noise.std() + 1e-6
    dist = np.sqrt(x * x + y * y + z * z)
    if les.pattern == "irregular":
        a = R * rng.uniform(0.6, 0.72)
        body = (np.sqrt((x / (a * rng.uniform(0.85, 1.0))) ** 2 + (y / a) ** 2 + (z / (a * rng.uniform(0.85, 1.0))) ** 2)
                * (1 + 0.12 * noise)) <= 1.0
        inside = body.copy()
        for _ in range(int(rng.integers(2, 5))):
            u = rng.normal(size=3)
            u /= np.linalg.norm(u)
            dc = a * rng.uniform(0.55, 0.9)
            rl = min(R - dc, a * rng.uniform(0.45, 0.75))
            if rl <= 0.3:
                continue
            d2 = np.sqrt((x - u[0] * dc) ** 2 + (y - u[1] * dc) ** 2 + (z - u[2] * dc) ** 2)
            inside |= d2 * (1 + 0.1 * noise) <= rl
        inside &= dist <= R  # never exceed the planned size
        enh = np.clip(0.78 + 0.22 * rng.uniform(0.5, 1.0) + 0.12 * noise, 0.55, 1.15)
        if R >= 4:  # patchy non-enhancing parts
            enh = np.where(noise > 1.1, 0.35, enh)
    else:
        ax = R * np.array([rng.uniform(0.85, 1.0), rng.uniform(0.85, 1.0), 1.0])
        e = np.sqrt((x / ax[0]) ** 2 + (y / ax[1]) ** 2 + (z / ax[2]) ** 2)
        inside = (e * (1 + 0.04 * noise) <= 1.0) & (dist <= R)
        enh = np.clip(1.0 + 0.05 * noise, 0.85, 1.15)
        if les.pattern == "ring":
            rim = max(1.5, rng.uniform(0.22, 0.35) * R) / R
            core = e * (1 + 0.05 * noise) < 1.0 - rim
            enh = np.where(core, 0.0, enh)
    # one lesion = one (6-connected) component containing the centre; always >= 1 voxel
    centre = tuple(int(np.argmin(np.abs(c.ravel()))) for c in (x, y, z))
    inside[centre] = True
    lab, _ = ndimage.label(inside)
    inside = lab == lab[centre]
    return inside, enh.astype(np.float32)


def _render_lesions(rng: np.random.Generator, plan: CasePlan, anat: dict[str, Any], img: np.ndarray,
                    site: SiteParams, spacing: np.ndarray) -> tuple[np.ndarray, list[dict[str, Any]]]:
    lab, brain = anat["lab"], anat["brain"]
    shape = lab.shape
    mask = np.zeros(shape, np.uint8)
    centres = _place_lesions(rng, plan, anat, spacing)
    info = []
    wm_level = site.tissue["wm"]
    parenchyma = (lab >= 6) & (lab != 9)
    # oedema first (all lesions), then the lesions on top
    for les, c in zip(plan.lesions, centres):
        R = les.diameter_mm / 2.0
        ext = R * rng.uniform(0.3, 1.0) + (0.8 if R > 2 else 0.0)
        sl, _ = _local_box(c, R + ext + 2, spacing, shape)
        coords = _box_coords_mm(sl, c, spacing)
        d = np.sqrt(sum(q * q for q in coords))
        wob = ndimage.gaussian_filter(rng.standard_normal(d.shape).astype(np.float32), 1.5)
        wob /= wob.std() + 1e-6
        oed = (d * (1 + 0.15 * wob) <= R + ext) & parenchyma[sl]
        # vasogenic oedema spreads along white matter; grey matter is spared more
        factor = np.where(lab[sl] == 7, 0.76, 0.9).astype(np.float32)
        img[sl] = np.where(oed, img[sl] * factor, img[sl])
    for k, (les, c) in enumerate(zip(plan.lesions, centres)):
        R = les.diameter_mm / 2.0
        sl, _ = _local_box(c, R + 1, spacing, shape)
        coords = _box_coords_mm(sl, c, spacing)
        inside, enh = _lesion_shape(rng, les, coords, spacing)
        peak = wm_level * rng.uniform(*site.enhancement)
        val = site.tissue["necrosis"] + enh * (peak - site.tissue["necrosis"])
        img[sl] = np.where(inside, val, img[sl])
        mask[sl][inside] = 1
        info.append({"label": k + 1, "center_vox": [float(v) for v in c], "diameter_mm": les.diameter_mm,
                     "pattern": les.pattern, "n_voxels": int(inside.sum())})
    if np.any(mask & ~brain):
        raise RuntimeError(f"{plan.patient_id}: a lesion leaves the brain mask (placement bug)")
    return mask, info


# ----------------------------------------------------------------------------- vessels
def _tube(img: np.ndarray, pts_mm_vox: np.ndarray, radius: float, value: float, spacing: np.ndarray,
          forbid: np.ndarray | None = None, record: np.ndarray | None = None) -> None:
    """Paint a bright tube of ``radius`` mm along voxel-coordinate points (partial-volume edges)."""
    from scipy.spatial import cKDTree

    if len(pts_mm_vox) < 2:
        return
    lo = np.maximum(np.floor(pts_mm_vox.min(0) - (radius + 2) / spacing).astype(int), 0)
    hi = np.minimum(np.ceil(pts_mm_vox.max(0) + (radius + 2) / spacing).astype(int) + 1, img.shape)
    sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    grid = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij"), -1).reshape(-1, 3)
    dist, _ = cKDTree(pts_mm_vox * spacing).query(grid * spacing, distance_upper_bound=radius + 2)
    frac = np.clip((radius + 0.5 * float(np.min(spacing)) - dist) / float(np.min(spacing)), 0, 1)
    frac = frac.reshape(img[sl].shape).astype(np.float32)
    if forbid is not None:
        frac[forbid[sl]] = 0
    img[sl] = img[sl] * (1 - frac) + value * frac
    if record is not None:
        record[sl] |= frac >= 0.5


def _curve(rng: np.random.Generator, start: np.ndarray, length_mm: float, spacing: np.ndarray,
           ok: np.ndarray, step_mm: float = 0.3) -> np.ndarray:
    """Smooth random walk (voxel coordinates) that stops when it leaves ``ok``."""
    d = rng.normal(size=3)
    d /= np.linalg.norm(d)
    p = start.astype(np.float64)
    pts = [p.copy()]
    for _ in range(int(length_mm / step_mm)):
        d = d + rng.normal(0, 0.08, 3)
        d /= np.linalg.norm(d)
        p = p + d * step_mm / spacing
        q = np.round(p).astype(int)
        if np.any(q < 0) or np.any(q >= ok.shape) or not ok[tuple(q)]:
            break
        pts.append(p.copy())
    return np.asarray(pts)


def _render_vessels(rng: np.random.Generator, anat: dict[str, Any], img: np.ndarray, mask: np.ndarray,
                    site: SiteParams, spacing: np.ndarray, s: float) -> tuple[int, np.ndarray]:
    """Paint vessel mimics; return their number and a boolean map of their cores."""
    lab, brain = anat["lab"], anat["brain"]
    rec = np.zeros(lab.shape, bool)
    shape = np.asarray(lab.shape)
    centre_vox = (shape - 1) / 2.0 + anat["shift"] / spacing
    near_lesion = ndimage.binary_dilation(mask.astype(bool), iterations=max(2, int(round(2.5 / float(np.min(spacing))))))
    n = 0
    # superior sagittal sinus: in the CSF layer along the midline, front to back over the top
    ax, R, rb = anat["axes"], anat["R"], anat["rho_brain"]
    rr = rb + 0.5 * (1 - rb) * 0.35
    th = np.linspace(np.deg2rad(25), np.deg2rad(165), 400)
    pts = np.stack([np.zeros_like(th), ax[1] * rr * np.cos(th), ax[2] * rr * np.sin(th)], 1) / spacing + centre_vox
    _tube(img, pts, max(1.0, 2.5 * s), site.tissue["vessel"] * 0.95, spacing, forbid=brain, record=rec)
    n += 1
    # cortical / parenchymal vessels: thin bright tubes inside the brain, away from lesions
    ok = brain & ~near_lesion & (lab != 9)
    cand = np.argwhere(ok & ((lab == 5) | (lab == 6)))
    target, made = int(rng.integers(4, 9)), 0
    for _ in range(6 * target):  # walks that leave the brain at once are retried
        if len(cand) == 0 or made == target:
            break
        start = cand[rng.integers(len(cand))]
        pts = _curve(rng, start, rng.uniform(12, 40) * max(s, 0.5), spacing, ok)
        if len(pts) * 0.3 >= 4.0:  # at least 4 mm long
            _tube(img, pts, rng.uniform(0.6, 1.2), site.tissue["vessel"] * rng.uniform(0.85, 1.05), spacing,
                  forbid=~ok, record=rec)
            made += 1
    n += made
    # choroid plexus inside the lateral ventricles
    vent = anat["vent"] & ~near_lesion
    vc = np.argwhere(vent)
    for _ in range(2):
        if len(vc) == 0:
            break
        pts = _curve(rng, vc[rng.integers(len(vc))], 10 * max(s, 0.5), spacing, vent)
        if len(pts) > 5:
            _tube(img, pts, max(0.8, 1.5 * s), site.tissue["plexus"], spacing, forbid=~vent, record=rec)
            n += 1
    return n, rec


# ----------------------------------------------------------------------------- render a case
def render_case(plan: CasePlan, profile: str | SynthProfile = "default", **overrides: Any) -> dict[str, Any]:
    """Render one planned case. Returns ``image`` (int16), ``mask`` (uint8 {0,1}: whole metastases incl.
    necrotic core, not oedema), ``brain`` (uint8), ``affine`` (RAS, mm), ``spacing``, ``labels``
    (tissue labels, uint8), ``lesions`` (list of dicts: centre, diameter, pattern, voxels),
    ``vessels`` (bool map of the vessel mimics' cores) and ``n_vessels``."""
    prof = get_profile(profile, **overrides)
    site = prof.sites[plan.site]
    shape = prof.shape(plan.site)
    spacing = np.asarray(site.spacing, dtype=np.float64)
    rng = plan.render_rng()
    anat = _anatomy(rng, prof, shape, spacing)
    img = _tissue_image(rng, anat["lab"], site, spacing)
    mask, lesions = _render_lesions(rng, plan, anat, img, site, spacing)
    n_vessels, vessels = _render_vessels(rng, anat, img, mask, site, spacing, prof.head_scale)
    # acquisition: PSF blur, gamma, bias field, Rician noise, scanner scale
    img = ndimage.gaussian_filter(img, site.psf_sigma_vox)
    if site.gamma != 1.0:
        img = np.power(np.clip(img, 0, None), site.gamma)
    bias = np.exp(site.bias_amplitude * _smooth_noise(rng, shape, spacing, 60.0 * max(prof.head_scale, 0.4)))
    img = img * bias
    sig = site.noise_sigma
    n1 = rng.standard_normal(shape, dtype=np.float32) * sig
    n2 = rng.standard_normal(shape, dtype=np.float32) * sig
    img = np.sqrt((img + n1) ** 2 + n2 ** 2) * site.scale * rng.uniform(0.9, 1.1)
    image = np.clip(np.round(img), 0, 32767).astype(np.int16)
    brain = anat["brain"].astype(np.uint8)
    return dict(image=image, mask=mask, brain=brain, labels=anat["lab"], affine=_affine(shape, spacing),
                spacing=tuple(float(v) for v in spacing), lesions=lesions, n_vessels=n_vessels,
                vessels=vessels)


# ----------------------------------------------------------------------------- write a cohort
def _save_nifti(arr: np.ndarray, affine: np.ndarray, path: Path) -> None:
    import nibabel as nib

    img = nib.Nifti1Image(arr, affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    with atomic_path(path) as tmp:
        nib.save(img, tmp)


def _case_hash(plan: CasePlan, prof: SynthProfile) -> str:
    return params_hash({"plan": dataclasses.asdict(plan), "render": prof.render_params()})


def _generate_one(plan: CasePlan, prof: SynthProfile, out_dir: str, force: bool) -> dict[str, Any]:
    """Render and write one case unless an identical one exists. Never raises."""
    import json

    out = Path(out_dir)
    files = {k: out / v for k, v in _case_files(plan.patient_id).items()}
    meta_path = out / "meta" / f"{plan.patient_id}.json"
    h = _case_hash(plan, prof)
    t0 = time.perf_counter()
    try:
        if not force and meta_path.is_file() and all(p.is_file() for p in files.values()):
            try:
                if json.loads(meta_path.read_text(encoding="utf-8")).get("hash") == h:
                    return {"patient_id": plan.patient_id, "status": "skipped", "seconds": 0.0, "error": ""}
            except (OSError, ValueError):
                pass
        case = render_case(plan, prof)
        _save_nifti(case["image"], case["affine"], files["image"])
        _save_nifti(case["mask"], case["affine"], files["mask"])
        _save_nifti(case["brain"], case["affine"], files["brain_mask"])
        atomic_write_json(meta_path, {"hash": h, "patient_id": plan.patient_id, "plan": dataclasses.asdict(plan),
                                      "lesions": case["lesions"], "n_vessels": case["n_vessels"],
                                      "generator_version": GENERATOR_VERSION})
        return {"patient_id": plan.patient_id, "status": "ok", "seconds": round(time.perf_counter() - t0, 2),
                "error": ""}
    except Exception as exc:  # one bad case must not lose the others
        return {"patient_id": plan.patient_id, "status": "failed", "seconds": round(time.perf_counter() - t0, 2),
                "error": f"{type(exc).__name__}: {exc}"}


def generate_cohort(out_dir: PathLike, profile: str | SynthProfile = "default", seed: int = 0, *,
                    n_jobs: int | None = None, force: bool = False, progress: bool = True,
                    **overrides: Any) -> Path:
    """Generate the synthetic cohort under ``out_dir``; return ``out_dir/data_manifest.csv``.

    Writes ``images/<pid>_t1c.nii.gz`` (int16), ``masks/<pid>_mask.nii.gz`` and ``brain/<pid>_brain.nii.gz``
    (uint8), ``meta/<pid>.json`` (plan, rendered lesions, parameter hash), ``synth_status.csv`` and the
    manifest. Cases already written with identical parameters are skipped unless ``force``.
    ``overrides`` are :class:`SynthProfile` fields (e.g. ``n_internal=4``). Raises RuntimeError naming
    the failed cases (after all others were written) if any case fails.
    """
    from joblib import Parallel, delayed
    from tqdm.auto import tqdm

    prof = get_profile(profile, **overrides)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plans = plan_cohort(prof, seed)
    table = cohort_table(prof, seed)
    n_jobs = int(n_jobs) if n_jobs else min(os.cpu_count() or 1, 4)
    n_jobs = max(1, min(n_jobs, len(plans)))
    log.info("synthetic cohort %r seed=%d: %d internal + %d external cases -> %s (%d jobs)",
             prof.name, seed, prof.n_internal, prof.n_external, out, n_jobs)
    t0 = time.perf_counter()
    jobs = (delayed(_generate_one)(p, prof, str(out), force) for p in plans)
    if n_jobs == 1:
        results = [_generate_one(p, prof, str(out), force) for p in tqdm(plans, desc="synth", disable=not progress)]
    else:
        results = []
        it = Parallel(n_jobs=n_jobs, return_as="generator")(jobs)
        for r in tqdm(it, total=len(plans), desc="synth", disable=not progress):
            results.append(r)
    status = pd.DataFrame(results)
    from ..utils import atomic_to_csv

    atomic_to_csv(status, out / "synth_status.csv")
    counts = status["status"].value_counts().to_dict()
    log.info("synthetic cohort done in %.1f s: %s", time.perf_counter() - t0, counts)
    failed = status[status["status"] == "failed"]
    if len(failed):
        msg = "; ".join(f"{r.patient_id}: {r.error}" for r in failed.itertuples())
        raise RuntimeError(f"synthetic generation failed for {len(failed)} case(s) in {out}: {msg}")
    return write_manifest(table, out / "data_manifest.csv")


# ----------------------------------------------------------------------------- preview
def write_preview(manifest_path: PathLike, png_path: PathLike | None = None, n_cases: int = 4) -> Path:
    """PNG montage: axial and coronal slices through the largest lesion of a few internal and external
    cases, lesion-mask contour in red, brain-mask contour in cyan."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import nibabel as nib

    from ..io.manifest import load_manifest

    df = load_manifest(manifest_path)
    png = Path(png_path) if png_path else Path(manifest_path).parent / "preview.png"
    n_ext = min(max(1, n_cases // 3), int((df["site"] == "external").sum()))
    pick = pd.concat([df[df["site"] == "internal"].head(n_cases - n_ext), df[df["site"] == "external"].head(n_ext)])
    fig, axs = plt.subplots(2, len(pick), figsize=(3.2 * len(pick), 6.4), squeeze=False)
    for j, row in enumerate(pick.itertuples()):
        im = nib.load(row.image)
        img = np.asarray(im.dataobj, dtype=np.float32)
        msk = np.asarray(nib.load(row.mask).dataobj) > 0
        brn = np.asarray(nib.load(row.brain_mask).dataobj) > 0 if getattr(row, "brain_mask", "") else None
        lab, n = ndimage.label(msk)
        if n:
            big = 1 + int(np.argmax(ndimage.sum(msk, lab, range(1, n + 1))))
            c = np.round(ndimage.center_of_mass(lab == big)).astype(int)
        else:
            c = np.array(img.shape) // 2
        sp = im.header.get_zooms()[:3]
        vmax = float(np.percentile(img[brn] if brn is not None and brn.any() else img, 99.7)) * 1.05
        views = [(img[:, :, c[2]], msk[:, :, c[2]], None if brn is None else brn[:, :, c[2]], sp[1] / sp[0], "axial"),
                 (img[:, c[1], :], msk[:, c[1], :], None if brn is None else brn[:, c[1], :], sp[2] / sp[0], "coronal")]
        for i, (sl, ms, bs, aspect, name) in enumerate(views):
            ax = axs[i, j]
            ax.imshow(sl.T, cmap="gray", origin="lower", vmin=0, vmax=vmax, aspect=aspect)
            if bs is not None and bs.any():
                ax.contour(bs.T, levels=[0.5], colors="c", linewidths=0.5)
            if ms.any():
                ax.contour(ms.T, levels=[0.5], colors="r", linewidths=0.8)
            ax.set_title(f"{row.patient_id} ({row.site}, {getattr(row, 'n_lesions', '?')} les.) {name}", fontsize=7)
            ax.axis("off")
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return png


# ----------------------------------------------------------------------------- CLI: bmstudy synth
def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output folder (e.g. data/synthetic)")
    parser.add_argument("--profile", default="default", choices=sorted(PROFILES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-internal", type=int, default=None, help="override the number of internal cases")
    parser.add_argument("--n-external", type=int, default=None, help="override the number of external cases")
    parser.add_argument("-j", "--jobs", type=int, default=None, help="parallel processes (default: cores, max 4)")
    parser.add_argument("--preview", nargs="?", const="", default=None, metavar="PNG",
                        help="write a PNG montage (default OUT/preview.png)")
    parser.add_argument("--force", action="store_true", help="re-render cases even if already written")


def cli_main(args: argparse.Namespace) -> int:
    manifest = generate_cohort(args.out, args.profile, args.seed, n_jobs=args.jobs, force=args.force,
                               n_internal=args.n_internal, n_external=args.n_external)
    print(manifest)
    if args.preview is not None:
        print(write_preview(manifest, args.preview or None))
    return 0
