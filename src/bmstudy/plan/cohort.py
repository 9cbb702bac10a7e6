"""Parameters of the synthetic cohort: sites (:class:`SiteParams`), size and realism (:class:`SynthParams`), presets."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Sequence

from .checks import GENERATOR_VERSION

@dataclass(frozen=True)
class SiteParams:
    """Acquisition/appearance of one site (intensities relative to white matter = 1).

    ``tissue`` holds the site's mean CE-T1 intensity per tissue; each case draws its own from a
    log-normal around them (``contrast_jitter``: log-sd, SynthSeg-like). ``enhancement`` is the peak
    lesion/WM range, ``mimic`` the enhancing structures' (dura, sinuses, pituitary, plexus) scale.
    ``slice_thickness_mm`` > spacing blurs along the slice axis (thick-slice 2D acquisitions);
    ``ghosting`` is the probability of a motion ghost. ``venous_jitter``: log-sd of one per-case factor on
    the venous mimics (sinuses, cavernous sinus, veins: bolus timing), drawn from the case's own stream 2
    (the render stream, hence anatomy and lesions, is the same as without it).
    Venous blood is the brightest thing of a CE-T1 (sinuses ~2-3x white matter, above most enhancing
    lesions): the six real BraTS T1c scans put the model's false positives on skull-base vessels with a
    mean z-score of 4.5-7.8, 1.6-2.3x their enhancing tumour's, brighter than anything in the brain of
    generator version 1 (hence version 2).
    """

    name: str
    scanner: str
    spacing: tuple[float, float, float]
    age_mean: float
    age_sd: float
    p_male: float
    p_lung: float
    tissue: dict[str, float]
    enhancement: tuple[float, float]  # enhancing tumour / WM
    noise_sigma: float  # Rician sigma relative to WM
    bias_amplitude: float  # std of log bias field
    gamma: float  # intensity response exponent
    scale: float  # stored value of WM
    psf_sigma_vox: float = 0.5
    reader_factor: float = 1.0  # manual annotation speed of the site's readers (time multiplier)
    contrast_jitter: float = 0.08  # log-sd of the per-case tissue intensities
    slice_thickness_mm: float | None = None  # None: the voxel size
    ghosting: float = 0.0  # probability of a motion ghost per case
    venous_jitter: float = 0.12  # log-sd of the per-case venous-mimic factor


def default_sites(spacing_internal: Sequence[float], spacing_external: Sequence[float]) -> dict[str, SiteParams]:
    """The two sites of the synthetic cohort (internal 3T 1 mm, external 1.5T anisotropic, no brain masks)."""
    common = dict(dura=1.25, sinus=2.4, pituitary=1.6, cavernous=2.3, fat=1.35, marrow=1.05, skin=0.7,
                  vessel=2.2, plexus=1.55, vitreous=0.12)
    return {
        "internal": SiteParams(
            name="internal", scanner="INT 3T 3D-FFE CE-T1", spacing=tuple(map(float, spacing_internal)),
            age_mean=59.4, age_sd=10.2, p_male=0.59, p_lung=0.81,
            tissue=dict(common, scalp=0.95, muscle=0.45, skull=0.07, diploe=1.05, csf=0.20, gm=0.62, deep_gm=0.74,
                        wm=1.0, necrosis=0.28),
            enhancement=(1.35, 1.85), noise_sigma=0.03, bias_amplitude=0.08, gamma=1.0, scale=600.0, ghosting=0.1),
        "external": SiteParams(
            name="external", scanner="EXT 1.5T 3D-SPGR CE-T1", spacing=tuple(map(float, spacing_external)),
            age_mean=57.4, age_sd=12.6, p_male=0.49, p_lung=0.54,
            tissue=dict(common, scalp=0.85, muscle=0.50, skull=0.12, diploe=0.95, csf=0.30, gm=0.72, deep_gm=0.82,
                        wm=1.0, necrosis=0.38, sinus=2.2, fat=1.25),
            enhancement=(1.3, 1.75), noise_sigma=0.05, bias_amplitude=0.12, gamma=0.85, scale=1500.0,
            reader_factor=0.85, contrast_jitter=0.10, slice_thickness_mm=3.0, ghosting=0.2),
    }


@dataclass(frozen=True)
class SynthParams:
    """Size knob of the cohort. ``fov_mm`` is the physical field of view shared by both sites.

    ``anatomy_scale`` is the head's linear size relative to the adult MNI152 head (1 = real scale; the
    ``tiny`` test preset renders half-size heads). Lesion diameters are clinical mm, clipped to
    [``min_diameter_mm``, ``max_diameter_mm``]. ``touching_rate``: probability that a lesion (after the
    first) is placed touching an earlier one; ``vessel_touch_rate``: probability per lesion of a cortical
    vein running along it; ``annotator_jitter_mm``: smooth boundary jitter of the "manual" masks (0: the
    masks are exactly the rendered lesions). ``external_brain_masks``: whether the external site's
    manifest rows name a brain mask (default False: the study strips them, as real data; the true
    brain mask is always written and named in the ``brain_truth`` column).
    """

    name: str
    n_internal: int
    n_external: int
    fov_mm: tuple[float, float, float]
    spacing_internal: tuple[float, float, float] = (1.0, 1.0, 1.0)
    spacing_external: tuple[float, float, float] = (0.9, 0.9, 1.5)
    max_lesions: int = 15
    min_diameter_mm: float = 2.0
    max_diameter_mm: float = 30.0
    ring_min_diameter_mm: float = 6.0
    test_fraction: float = 0.2
    anatomy_scale: float = 1.0
    touching_rate: float = 0.15
    vessel_touch_rate: float = 0.3
    annotator_jitter_mm: float = 0.0
    external_brain_masks: bool = False
    sites: dict[str, SiteParams] = field(default=None, compare=False, repr=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.n_internal < 2 or self.n_external < 0:
            raise ValueError(f"profile {self.name!r}: need n_internal >= 2 and n_external >= 0, "
                             f"got {self.n_internal}, {self.n_external}")
        if len(self.fov_mm) != 3 or min(self.fov_mm) < 40:
            raise ValueError(f"profile {self.name!r}: fov_mm must be 3 sizes >= 40 mm, got {self.fov_mm}")
        for sp in (self.spacing_internal, self.spacing_external):
            if len(sp) != 3 or min(sp) <= 0 or max(sp) > 4:
                raise ValueError(f"profile {self.name!r}: spacing must be 3 values in (0, 4] mm, got {sp}")
        if not 1 <= self.max_lesions <= 40:
            raise ValueError(f"profile {self.name!r}: max_lesions must be in [1, 40], got {self.max_lesions}")
        if not 1.0 <= self.min_diameter_mm < self.max_diameter_mm <= 0.3 * min(self.fov_mm):
            raise ValueError(f"profile {self.name!r}: need 1 <= min_diameter_mm < max_diameter_mm <= 0.3*fov, "
                             f"got {self.min_diameter_mm}, {self.max_diameter_mm}")
        if not 0.3 <= self.anatomy_scale <= 1.3:
            raise ValueError(f"profile {self.name!r}: anatomy_scale must be in [0.3, 1.3], got {self.anatomy_scale}")
        for k in ("touching_rate", "vessel_touch_rate"):
            if not 0.0 <= getattr(self, k) <= 1.0:
                raise ValueError(f"profile {self.name!r}: {k} must be in [0, 1], got {getattr(self, k)}")
        if not 0.0 <= self.annotator_jitter_mm <= 3.0:
            raise ValueError(f"profile {self.name!r}: annotator_jitter_mm must be in [0, 3], got {self.annotator_jitter_mm}")
        if self.sites is None:
            object.__setattr__(self, "sites", default_sites(self.spacing_internal, self.spacing_external))

    @property
    def head_scale(self) -> float:
        """Linear size of this head relative to a real adult head (``anatomy_scale``; 1 = real scale)."""
        return float(self.anatomy_scale)

    def shape(self, site: str) -> tuple[int, int, int]:
        sp = self.sites[site].spacing
        return tuple(int(round(f / s)) for f, s in zip(self.fov_mm, sp))  # type: ignore[return-value]

    def render_params(self) -> dict[str, Any]:
        """Everything that affects rendered voxels (for the rerun-skip hash)."""
        d = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("sites", "n_internal", "n_external",
                                                                              "test_fraction", "name")}
        d["sites"] = {k: dataclasses.asdict(v) for k, v in self.sites.items()}
        d["version"] = GENERATOR_VERSION
        return d


#: Synthetic cohort presets (the study profiles pick one: tiny -> tiny, cpu -> default, paper -> paper).
SYNTH_PRESETS: dict[str, SynthParams] = {
    # tiny: unit-test/CI preset only (half-size heads, small lesions); default/paper: real adult scale
    "tiny": SynthParams("tiny", 8, 4, (80.0, 96.0, 88.0), max_lesions=6, max_diameter_mm=10.0, anatomy_scale=0.4,
                        external_brain_masks=True),
    "default": SynthParams("default", 40, 8, (184.0, 224.0, 184.0), max_lesions=15, max_diameter_mm=30.0),
    "paper": SynthParams("paper", 470, 172, (184.0, 224.0, 184.0), max_lesions=15, max_diameter_mm=30.0),
}


def synth_params(profile: str | SynthParams = "default", **overrides: Any) -> SynthParams:
    """Return a named profile (``tiny``, ``default``, ``paper``) with field overrides applied."""
    if isinstance(profile, SynthParams):
        base = profile
    else:
        if profile not in SYNTH_PRESETS:
            raise ValueError(f"unknown synthetic profile {profile!r}; choose from {sorted(SYNTH_PRESETS)}")
        base = SYNTH_PRESETS[profile]
    valid = {f.name for f in dataclasses.fields(SynthParams)} - {"name", "sites"}
    bad = sorted(set(overrides) - valid)
    if bad:
        raise ValueError(f"unknown synthetic profile override(s) {bad}; valid: {sorted(valid)}")
    overrides = {k: (tuple(float(x) for x in v) if isinstance(v, (list, tuple)) else v) for k, v in overrides.items()
                 if v is not None}
    if not overrides:
        return base
    sp_changed = {"spacing_internal", "spacing_external"} & set(overrides)
    new = dataclasses.replace(base, **overrides, sites=None if sp_changed else base.sites)
    return new
