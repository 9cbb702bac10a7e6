"""The study plan: every parameter of every stage, resolved from a profile name and overrides.

This module is the only place where profiles live. A :class:`StudyPlan` bundles one frozen parameter
set per stage (:class:`SynthParams`, :class:`PreprocessParams`, :class:`TrainConfig`,
:class:`InferenceParams`, :class:`EvalParams`) plus the study-level settings (seed, GPU use, split
fraction). :func:`resolve_plan` builds it from a profile (``tiny``, ``cpu``, ``paper``) and overrides
given as a nested mapping or as dotted ``section.field`` keys; :meth:`StudyPlan.to_dict`,
:meth:`StudyPlan.from_dict` and :meth:`StudyPlan.hash` round-trip it, and the study runner writes it
to ``runs/<name>/plan.json``.

The module imports nothing from the stage packages (they import their parameters from here).
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .utils import PathLike, atomic_write_json, params_hash

__all__ = [
    "GENERATOR_VERSION", "DIVISOR", "INTERPOLATION_ORDER", "NORMALISATIONS", "SKULL_STRIP_BACKENDS", "BLENDS",
    "PROFILES", "SYNTH_PRESETS", "check_patch_size", "SiteParams", "SynthParams", "default_sites", "synth_params",
    "PreprocessParams", "AugmentParams", "TrainConfig", "InferenceParams", "EvalParams", "StudyPlan",
    "resolve_plan", "load_plan", "write_plan", "parse_override",
]

#: Version of the synthetic renderer (enters the synthetic cases' re-run hash).
GENERATOR_VERSION = "1"
DIVISOR = 32  # five stride-2 stages in the ResNet-34 encoder
INTERPOLATION_ORDER = {"linear": 1, "bspline": 3}
NORMALISATIONS = ("zscore_brain", "zscore_volume", "none")
SKULL_STRIP_BACKENDS: tuple[str, ...] = ("auto", "mask", "none", "deepbet", "synthstrip")
BLENDS: tuple[str, ...] = ("mean", "gaussian")
_PAPER_FOV_X = 200.0  # mm; head_scale = fov_x / this


# ----------------------------------------------------------------------------- shared validation
def check_patch_size(patch_size: int | Sequence[int]) -> tuple[int, int, int]:
    """Return ``patch_size`` as a 3-tuple of ints; each must be a positive multiple of 32."""
    if isinstance(patch_size, (int,)) and not isinstance(patch_size, bool):
        size = (int(patch_size),) * 3
    else:
        size = tuple(int(s) for s in patch_size)  # type: ignore[union-attr]
    if len(size) != 3 or any(s <= 0 or s % DIVISOR for s in size):
        raise ValueError(f"patch_size must be 3 positive multiples of {DIVISOR} (the encoder downsamples 32x); got {patch_size!r}")
    return size  # type: ignore[return-value]


# ----------------------------------------------------------------------------- synthetic cohort
@dataclass(frozen=True)
class SiteParams:
    """Acquisition/appearance of one site (intensities relative to white matter = 1).

    ``tissue`` holds the site's mean CE-T1 intensity per tissue; each case draws its own from a
    log-normal around them (``contrast_jitter``: log-sd, SynthSeg-like). ``enhancement`` is the peak
    lesion/WM range, ``mimic`` the enhancing structures' (dura, sinuses, pituitary, plexus) scale.
    ``slice_thickness_mm`` > spacing blurs along the slice axis (thick-slice 2D acquisitions);
    ``ghosting`` is the probability of a motion ghost.
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


def default_sites(spacing_internal: Sequence[float], spacing_external: Sequence[float]) -> dict[str, SiteParams]:
    """The two sites of the synthetic cohort (internal 3T 1 mm, external 1.5T anisotropic, no brain masks)."""
    common = dict(dura=1.25, sinus=1.9, pituitary=1.6, cavernous=1.8, fat=1.35, marrow=1.05, skin=0.7,
                  vessel=1.9, plexus=1.45, vitreous=0.12)
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
                        wm=1.0, necrosis=0.38, sinus=1.7, fat=1.25),
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


# ----------------------------------------------------------------------------- preprocessing
@dataclass(frozen=True)
class PreprocessParams:
    """Preprocessing parameters (everything except ``synthstrip_model`` and ``threads`` enters :meth:`hash`).

    target_spacing: output voxel size in mm (x, y, z); ``None`` keeps the input spacing.
    interpolation: image interpolation, ``'linear'`` or ``'bspline'`` (cubic).
    mask_interpolation: lesion mask resampling, ``'linear'`` (linear then > 0.5, as nnU-Net; preserves
        volume better: measured -1 %..+0 % vs -3 %..-12 % for nearest on small synthetic lesions) or ``'nearest'``.
    skull_strip: ``'auto' | 'mask' | 'none' | 'deepbet' | 'synthstrip'`` (see :mod:`bmstudy.preprocessing.skullstrip`).
    normalisation: ``'zscore_brain'`` (default), ``'zscore_volume'`` or ``'none'``.
    mask_labels: label values that form the lesion (e.g. ``(4,)`` for BraTS enhancing tumour).
    label_threshold: binarise a non-binary mask with ``mask > label_threshold`` (ignored with mask_labels).
    crop_to_brain / crop_margin_mm: crop to the brain bounding box plus margin (before resampling).
    spacing_tol_mm, origin_tol_mm, direction_tol: alignment tolerances (absolute).
    """

    target_spacing: tuple[float, float, float] | None = (0.833, 0.833, 0.833)
    interpolation: str = "linear"
    mask_interpolation: str = "linear"
    skull_strip: str = "auto"
    normalisation: str = "zscore_brain"
    mask_labels: tuple[int, ...] | None = None
    label_threshold: float | None = None
    crop_to_brain: bool = False
    crop_margin_mm: float = 10.0
    spacing_tol_mm: float = 1e-3
    origin_tol_mm: float = 1e-2
    direction_tol: float = 1e-3
    synthstrip_model: str | None = field(default=None, compare=False)
    threads: int | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.target_spacing is not None:
            ts = tuple(float(v) for v in (self.target_spacing if np.ndim(self.target_spacing) else (self.target_spacing,) * 3))
            if len(ts) != 3 or not all(v > 0 and math.isfinite(v) for v in ts):
                raise ValueError(f"target_spacing must be 3 positive numbers, got {self.target_spacing!r}")
            object.__setattr__(self, "target_spacing", ts)
        if self.interpolation not in INTERPOLATION_ORDER:
            raise ValueError(f"interpolation must be one of {tuple(INTERPOLATION_ORDER)}, got {self.interpolation!r}")
        if self.mask_interpolation not in ("linear", "nearest"):
            raise ValueError(f"mask_interpolation must be 'linear' or 'nearest', got {self.mask_interpolation!r}")
        if self.skull_strip not in SKULL_STRIP_BACKENDS:
            raise ValueError(f"unknown skull-strip backend {self.skull_strip!r}; choose one of {SKULL_STRIP_BACKENDS}")
        if self.normalisation not in NORMALISATIONS:
            raise ValueError(f"normalisation must be one of {NORMALISATIONS}, got {self.normalisation!r}")
        if self.mask_labels is not None:
            object.__setattr__(self, "mask_labels", tuple(int(v) for v in self.mask_labels))
            if not self.mask_labels:
                raise ValueError("mask_labels must be None or a non-empty sequence of labels")
        if self.crop_margin_mm < 0:
            raise ValueError(f"crop_margin_mm must be >= 0, got {self.crop_margin_mm}")
        for name in ("spacing_tol_mm", "origin_tol_mm", "direction_tol"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k in ("target_spacing", "mask_labels"):
            if d[k] is not None:
                d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PreprocessParams":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown PreprocessParams keys: {sorted(unknown)}")
        kw = dict(d)
        for k in ("target_spacing", "mask_labels"):
            if kw.get(k) is not None:
                kw[k] = tuple(kw[k])
        return cls(**kw)

    def hash(self) -> str:
        """Short stable hash of the parameters that change outputs."""
        d = self.to_dict()
        d.pop("synthstrip_model")
        d.pop("threads")
        return params_hash(d)


# ----------------------------------------------------------------------------- training
@dataclass(frozen=True)
class AugmentParams:
    """Augmentation probabilities and ranges (volumentations-3D defaults where they exist)."""

    flip_p: float = 0.5                                   # left-right flip (axis 0)
    elastic_p: float = 0.3
    elastic_deformation: tuple[float, float] = (0.0, 0.25)  # sigma = deformation * patch size
    gamma_p: float = 0.5
    gamma_limit: tuple[int, int] = (80, 120)              # gamma = randint(lo, hi) / 100

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "AugmentParams":
        d = dict(d or {})
        for k in ("elastic_deformation", "gamma_limit"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)


@dataclass
class TrainConfig:
    """All training knobs. Use :meth:`from_profile`; every field can be overridden.

    ``steps_per_epoch * epochs`` optimiser steps of ``batch_size`` patches. ``lesion_fraction`` is the
    share of patches centred on a lesion voxel; other patches are uniform over the volume, overhanging
    its border by up to ``border_overhang * patch`` (zero padding, as at inference). ``val_fraction`` of the training cases (at least one
    when >= 2 cases) is held out; ``val_patches_per_case`` fixed, un-augmented patches per held-out case
    (half lesion-centred) form the validation set. ``inference_patch``/``inference_stride`` are recorded
    for ``bmstudy.inference.predictor`` (the model is fully convolutional, so they may differ from ``patch_size``).

    Patch sampling (nnU-Net style, issue 11): ``lesion_fraction`` is the foreground-oversampling share;
    ``background_sampling="head"`` centres the other patches on a uniformly drawn voxel of the head
    (``brain.npy``, else the nonzero image), so patches overhang the volume border where the head
    touches it (zero padding); ``"volume"`` keeps the original uniform-over-the-volume draw.
    Whole-volume validation: every ``val_every`` epochs (0: never) the held-out cases are predicted
    with the inference sliding window (``val_window``/``val_stride``; ``None``: the inference
    settings) inside their brain mask; ``val_case_dice`` (mean per-case Dice) can be the ``monitor``.
    ``norm``: ``batch`` (the paper), ``group`` or ``instance`` (every BatchNorm of encoder and decoder
    replaced); ``precise_bn_patches > 0`` re-estimates BatchNorm statistics on that many random head
    patches before each whole-volume validation and model export. ``lr_schedule``: ``constant``
    (the paper), ``poly`` (nnU-Net: ``lr * (1 - step/total)^0.9``) or ``cosine``. ``deterministic``:
    op determinism and one inter-op thread (:mod:`bmstudy.training.determinism`), so a run repeats exactly.
    """

    profile: str = "paper"
    patch_size: tuple[int, int, int] = (128, 128, 128)
    batch_size: int = 4
    steps_per_epoch: int = 200
    epochs: int = 100
    learning_rate: float = 1e-4
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-7
    dice_weight: float = 0.5
    bce_weight: float = 0.5
    decoder_dropout: float = 0.5
    dropout_type: str = "spatial"
    backbone: str = "resnet34"
    encoder_weights: str | None = None
    lesion_fraction: float = 0.5
    center_jitter: float = 0.25
    border_overhang: float = 0.0
    augment: dict[str, Any] = field(default_factory=lambda: AugmentParams().to_dict())
    val_fraction: float = 0.1
    val_patches_per_case: int = 4
    monitor: str = "val_loss"
    early_stopping_patience: int | None = None
    mixed_precision: bool = False
    strategy: str = "auto"  # auto | default | mirrored | multi_worker (bmstudy.training.distribute)
    num_parallel_calls: int | None = None
    seed: int = 0
    inference_patch: int = 128
    inference_stride: int = 64
    background_sampling: str = "volume"
    val_every: int = 0
    val_window: int | None = None
    val_stride: int | None = None
    norm: str = "batch"
    precise_bn_patches: int = 0
    lr_schedule: str = "constant"
    deterministic: bool = True

    PROFILES = ("tiny", "cpu", "paper")

    def __post_init__(self) -> None:
        self.patch_size = check_patch_size(self.patch_size)
        check_patch_size(self.inference_patch)
        self.augment = AugmentParams.from_dict(self.augment).to_dict()  # validates keys, tuples
        if self.batch_size < 1 or self.steps_per_epoch < 1 or self.epochs < 1:
            raise ValueError("batch_size, steps_per_epoch and epochs must be >= 1")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1); got {self.val_fraction}")
        if not 0 < self.inference_stride <= self.inference_patch:
            raise ValueError(f"inference_stride must be in (0, inference_patch]; got {self.inference_stride}")
        if self.strategy not in ("auto", "default", "mirrored", "multi_worker"):
            raise ValueError(f"strategy must be auto, default, mirrored or multi_worker; got {self.strategy!r}")
        if self.encoder_weights is not None:
            self.encoder_weights = str(self.encoder_weights)
        self._check_issue11_fields()

    def _check_issue11_fields(self) -> None:
        """Validate the sampling, validation, normalisation and schedule choices."""
        choices = {"background_sampling": ("volume", "head"), "norm": ("batch", "group", "instance"),
                   "lr_schedule": ("constant", "poly", "cosine")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}; got {getattr(self, name)!r}")
        if not 0.0 <= self.lesion_fraction <= 1.0:
            raise ValueError(f"lesion_fraction must be in [0, 1]; got {self.lesion_fraction}")
        if self.val_every < 0 or self.precise_bn_patches < 0:
            raise ValueError("val_every and precise_bn_patches must be >= 0")
        if self.val_window is not None:
            check_patch_size(self.val_window)

    @classmethod
    def from_profile(cls, name: str, **overrides: Any) -> "TrainConfig":
        """``paper``: the study's recipe (128^3, batch 4, Adam 1e-4, dropout 0.5).
        ``cpu``: the default 2-core study run (64^3 patches, batch 2, 900 steps, 2/3 lesion-centred patches).
        ``tiny``: CI smoke test (32^3, batch 1, 2 steps x 1 epoch).

        ``cpu`` samples 2/3 lesion-centred patches and the rest in the head, selects the model by
        whole-volume validation Dice (every 3 epochs and the last), uses GroupNorm (``norm="group"``)
        and a poly learning-rate decay from 3e-4; ``paper`` keeps BatchNorm, constant Adam 1e-4 and
        ``val_loss`` selection. BatchNorm at the ``cpu`` profile (batches of 2 patches) failed on seed 1
        under every eval-mode statistic (running, precise BN on head or training-like patches); see the
        deviations page and ``benchmarks/norm_eval.py``. Measured with BatchNorm + precise BN on the
        real-scale default cohort (2-core CPU, seed 0, 27 train / 5 val cases,
        ``benchmarks/train_seeds.py``): nnU-Net's 1/3 foreground with 12 x 25 steps learned almost
        nothing (whole-volume validation Dice <= 0.15, median test Dice 0.03); 2/3 foreground with
        12 x 50 steps gave median test Dice 0.751, external 0.470, and validation Dice still rising at
        the last epoch (0.62), hence 18 x 50 steps (1.5-5 s per step on 2 cores, by CPU). See the
        book's deviations page for the seed table."""
        base: dict[str, Any]
        if name == "paper":
            base = {}
        elif name == "cpu":
            base = dict(patch_size=(64, 64, 64), batch_size=2, steps_per_epoch=50, epochs=18,
                        learning_rate=3e-4, lesion_fraction=2 / 3, background_sampling="head",
                        decoder_dropout=0.1, val_fraction=0.15, val_patches_per_case=2,
                        val_every=3, val_stride=128, monitor="val_case_dice", lr_schedule="poly",
                        norm="group", precise_bn_patches=0,
                        augment=AugmentParams(elastic_p=0.15, elastic_deformation=(0.0, 0.15)).to_dict())
        elif name == "tiny":
            base = dict(patch_size=(32, 32, 32), batch_size=1, steps_per_epoch=2, epochs=1,
                        lesion_fraction=0.8, background_sampling="head", val_fraction=0.34,
                        val_patches_per_case=1, inference_patch=64, inference_stride=32,
                        val_every=1, monitor="val_case_dice", lr_schedule="poly", precise_bn_patches=2,
                        augment=AugmentParams(elastic_p=0.2, elastic_deformation=(0.0, 0.1)).to_dict())
        else:
            raise ValueError(f"unknown training profile {name!r}; choose from {cls.PROFILES}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s) {sorted(unknown)}; known: {sorted(known)}")
        base.update(overrides)
        return cls(profile=name, **base)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["patch_size"] = list(self.patch_size)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


# ----------------------------------------------------------------------------- inference and evaluation
@dataclass(frozen=True)
class InferenceParams:
    """Sliding-window inference settings.

    Parameters
    ----------
    patch, stride : window size and step in voxels; ``None`` takes the trained model's
        ``inference_patch`` / ``inference_stride`` (paper: 128 and 64).
    batch_size : windows per network call; ``None`` chooses it from free device memory on a GPU
        (at most 8) and 1 on CPU (:func:`bmstudy.inference.network.auto_batch_size`).
    precision : ``'float32'``, ``'mixed_float16'`` or ``'mixed_bfloat16'`` (Keras mixed precision).
    jit_compile : XLA-compile the network's ``tf.function``.
    blend : overlap blending, ``'mean'`` (the paper: overlaps averaged) or ``'gaussian'``.
    tta : left-right flip test-time augmentation.
    threshold : probability threshold of the written mask (paper: 0.5).
    restrict_to_brain : zero the probabilities outside the preprocessing brain mask.
    splits : manifest splits predicted by the study.
    """

    patch: int | None = None
    stride: int | None = None
    batch_size: int | None = None
    precision: str = "float32"
    jit_compile: bool = False
    blend: str = "mean"
    tta: bool = False
    threshold: float = 0.5
    restrict_to_brain: bool = True
    splits: tuple[str, ...] = ("test", "external")

    def __post_init__(self) -> None:
        if self.patch is not None:
            check_patch_size(self.patch)
        if self.stride is not None and not 0 < int(self.stride) <= int(self.patch or 10**9):
            raise ValueError(f"stride must be in (0, patch]; got {self.stride}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 or None (automatic); got {self.batch_size}")
        if self.precision not in ("float32", "mixed_float16", "mixed_bfloat16"):
            raise ValueError(f"precision must be 'float32', 'mixed_float16' or 'mixed_bfloat16'; got {self.precision!r}")
        if self.blend not in BLENDS:
            raise ValueError(f"blend must be one of {BLENDS}; got {self.blend!r}")
        if not 0.0 <= float(self.threshold) <= 1.0:
            raise ValueError(f"threshold must be in [0, 1]; got {self.threshold}")
        object.__setattr__(self, "splits", tuple(str(s) for s in self.splits))


@dataclass(frozen=True)
class EvalParams:
    """Evaluation and statistics settings.

    Parameters
    ----------
    threshold : probability threshold of the evaluated mask (paper: 0.5).
    brain_mask : restrict voxel metrics to the brain mask (the paper used whole volumes).
    min_lesion_mm3 : smallest connected component counted as a lesion (``None``: the library default).
    n_bins : score-histogram resolution for the voxel-level DeLong test (``None``: the library default).
    splits : manifest splits evaluated.
    n_boot : patient-cluster bootstrap resamples.
    n_overlay : cases shown in Figure 3.
    mask_labels, label_threshold : how a label-map reference becomes a 0/1 lesion mask (as preprocessing).
    nsd_tolerance_mm : tolerance of the normalised surface Dice (mm; 1 mm = one voxel at the 1 mm grid
        the study resamples to, the usual choice for small lesions).
    froc_candidate_threshold : FROC candidates are the components of ``prob >=`` this (low, so that the
        curve reaches 8 FP per patient); each is scored by its maximum probability.
    brats_dilation, brats_min_volume_mm3 : BraTS-METS lesion-wise rules (dilation factor 1, lesions
        <= 2 mm^3 ignored), used by the lesion-wise Dice/HD95 and the FROC matching.
    empty : value of Dice/IoU/precision/recall/specificity when the denominator is zero: ``'agree'``
        (1 when prediction and truth agree perfectly, else 0: the BraTS rule, both empty -> Dice 1),
        ``'nan'``, ``'0'`` or ``'1'``.
    """

    threshold: float = 0.5
    brain_mask: bool = False
    min_lesion_mm3: float | None = None
    n_bins: int | None = None
    splits: tuple[str, ...] = ("test", "external")
    n_boot: int = 2000
    n_overlay: int = 4
    mask_labels: tuple[int, ...] | None = None
    label_threshold: float | None = None
    nsd_tolerance_mm: float = 1.0
    froc_candidate_threshold: float = 0.1
    brats_dilation: int = 1
    brats_min_volume_mm3: float = 2.0
    empty: str = "agree"

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.threshold) <= 1.0:
            raise ValueError(f"threshold must be in [0, 1]; got {self.threshold}")
        if not 0.0 < float(self.froc_candidate_threshold) <= 1.0:
            raise ValueError(f"froc_candidate_threshold must be in (0, 1]; got {self.froc_candidate_threshold}")
        if float(self.nsd_tolerance_mm) < 0 or int(self.brats_dilation) < 0 or float(self.brats_min_volume_mm3) < 0:
            raise ValueError("nsd_tolerance_mm, brats_dilation and brats_min_volume_mm3 must be >= 0")
        empty = str(self.empty).strip().lower()
        empty = {"0.0": "0", "1.0": "1"}.get(empty, empty)
        if empty not in ("agree", "nan", "0", "1"):
            raise ValueError(f"empty must be 'agree', 'nan', '0' or '1'; got {self.empty!r}")
        object.__setattr__(self, "empty", empty)
        if self.n_boot < 1:
            raise ValueError(f"n_boot must be >= 1; got {self.n_boot}")
        object.__setattr__(self, "splits", tuple(str(s) for s in self.splits))
        if self.mask_labels is not None:
            object.__setattr__(self, "mask_labels", tuple(int(v) for v in self.mask_labels))


# ----------------------------------------------------------------------------- the study plan
#: The study profiles: for each, the preset or the field overrides of every section.
PROFILES: dict[str, dict[str, Any]] = {
    "tiny": {"gpu": False, "synth": "tiny", "preprocess": {"target_spacing": (1.0, 1.0, 1.0)}, "train": "tiny"},
    "cpu": {"gpu": False, "synth": "default", "preprocess": {"target_spacing": (1.0, 1.0, 1.0), "crop_to_brain": True},
            "train": "cpu"},
    "paper": {"gpu": True, "synth": "paper", "preprocess": {}, "train": "paper"},
}
_SECTIONS = ("synth", "preprocess", "train", "inference", "evaluation")
_TOP_LEVEL = ("profile", "seed", "gpu", "test_fraction", "n_jobs", "dask_scheduler")


def _section_dict(obj: Any) -> dict[str, Any]:
    d = obj.to_dict() if hasattr(obj, "to_dict") else asdict(obj)
    if isinstance(obj, SynthParams):
        d = {k: v for k, v in asdict(obj).items() if k != "sites"}
    return json.loads(json.dumps(d, default=list))  # tuples -> lists, JSON-clean


@dataclass(frozen=True)
class StudyPlan:
    """Every parameter of every stage of one study run (written as ``runs/<name>/plan.json``).

    Attributes
    ----------
    profile : the profile it was resolved from.
    seed : seeds the synthetic cohort, the split and training.
    gpu : let TensorFlow see GPUs.
    test_fraction : share of internal cases in the test set (systematic split).
    n_jobs : parallel cases in the per-case stages.
    dask_scheduler : run the per-case stages on Dask (``tcp://HOST:PORT`` or ``'local'``); None: local processes.
    synth, preprocess, train, inference, evaluation : the stages' parameter sets.
    """

    profile: str
    seed: int
    gpu: bool
    test_fraction: float
    n_jobs: int
    synth: SynthParams
    preprocess: PreprocessParams
    train: TrainConfig
    inference: InferenceParams
    evaluation: EvalParams
    dask_scheduler: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready nested dict (sections as dicts)."""
        d: dict[str, Any] = {k: getattr(self, k) for k in _TOP_LEVEL}
        for s in _SECTIONS:
            d[s] = _section_dict(getattr(self, s))
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "StudyPlan":
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        unknown = set(d) - set(_TOP_LEVEL) - set(_SECTIONS)
        if unknown:
            raise ValueError(f"unknown plan keys {sorted(unknown)}; known: {sorted(_TOP_LEVEL + _SECTIONS)}")
        synth_d = dict(d.get("synth") or {})
        name = synth_d.pop("name", "custom")
        synth = synth_params(SYNTH_PRESETS.get(name, SYNTH_PRESETS["default"]), **synth_d)
        synth = dataclasses.replace(synth, name=name, sites=None) if synth.name != name else synth
        return cls(
            profile=str(d.get("profile", "custom")), seed=int(d.get("seed", 0)), gpu=bool(d.get("gpu", False)),
            test_fraction=float(d.get("test_fraction", 0.2)), n_jobs=int(d.get("n_jobs", 2)),
            synth=synth,
            preprocess=PreprocessParams.from_dict(dict(d.get("preprocess") or {})),
            train=TrainConfig.from_dict(dict(d.get("train") or {})),
            inference=_build(InferenceParams, d.get("inference")),
            evaluation=_build(EvalParams, d.get("evaluation")),
            dask_scheduler=d.get("dask_scheduler") or None,
        )

    def hash(self) -> str:
        """Short stable hash of the whole plan."""
        return params_hash(self.to_dict())

    def section(self, name: str) -> dict[str, Any]:
        """One section as a JSON-ready dict (what a stage's fingerprint covers)."""
        if name not in _SECTIONS:
            raise ValueError(f"unknown plan section {name!r}; choose from {_SECTIONS}")
        return _section_dict(getattr(self, name))


def _build(cls: type, d: Mapping[str, Any] | None) -> Any:
    d = dict(d or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - known
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s) {sorted(unknown)}; known: {sorted(known)}")
    for k in ("splits", "mask_labels"):
        if isinstance(d.get(k), list):
            d[k] = tuple(d[k])
    return cls(**d)


def parse_override(text: str, usage: str = "override must look like KEY=VALUE (e.g. train.epochs=3)") -> tuple[str, Any]:
    """``'train.epochs=3'`` -> ``('train.epochs', 3)``; the value is JSON when it parses, else a string.

    ``usage`` opens the error message for text without ``=`` or without a key.
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ValueError(f"{usage}, got {text!r}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key, value


def _nest(overrides: Mapping[str, Any] | None) -> dict[str, dict[str, Any] | Any]:
    """Dotted keys (``train.epochs``) and nested mappings (``{"train": {...}}``) as one nested dict."""
    out: dict[str, Any] = {}
    for key, value in (overrides or {}).items():
        head, dot, tail = str(key).partition(".")
        if head in _SECTIONS:
            sec = out.setdefault(head, {})
            if dot:
                sec[tail] = value
            elif isinstance(value, Mapping):
                sec.update(value)
            else:
                raise ValueError(f"plan section {head!r} needs a mapping of fields, got {value!r}")
        elif head in _TOP_LEVEL and not dot:
            out[head] = value
        else:
            raise ValueError(f"unknown plan key {key!r}; use one of {list(_TOP_LEVEL)} or SECTION.FIELD with "
                             f"SECTION in {list(_SECTIONS)}")
    return out


def resolve_plan(profile: str = "cpu", overrides: Mapping[str, Any] | None = None) -> StudyPlan:
    """The plan of ``profile`` (``tiny`` | ``cpu`` | ``paper``) with ``overrides`` applied.

    Parameters
    ----------
    profile : study profile name (:data:`PROFILES`).
    overrides : ``{"seed": 1, "train.epochs": 3, "preprocess": {"crop_to_brain": True}}``; a study-level
        ``seed`` also seeds training unless ``train.seed`` is given.

    Returns
    -------
    StudyPlan
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown study profile {profile!r}; choose from {sorted(PROFILES)}")
    prof = PROFILES[profile]
    ov = _nest(overrides)
    seed = int(ov.get("seed", 0))
    train_ov = dict(ov.get("train", {}))
    train_ov.setdefault("seed", seed)
    synth_ov = {k: v for k, v in ov.get("synth", {}).items()}
    synth = synth_params(prof["synth"], **synth_ov)
    pre = PreprocessParams.from_dict({**PreprocessParams().to_dict(), **prof["preprocess"], **ov.get("preprocess", {})})
    return StudyPlan(
        profile=profile, seed=seed, gpu=bool(ov.get("gpu", prof["gpu"])),
        test_fraction=float(ov.get("test_fraction", 0.2)), n_jobs=int(ov.get("n_jobs", 2)),
        synth=synth, preprocess=pre, train=TrainConfig.from_profile(prof["train"], **train_ov),
        inference=_build(InferenceParams, ov.get("inference")),
        evaluation=_build(EvalParams, ov.get("evaluation")),
        dask_scheduler=ov.get("dask_scheduler") or None,
    )


def write_plan(plan: StudyPlan, path: PathLike) -> Path:
    """Write ``plan.to_dict()`` as JSON (atomically)."""
    return atomic_write_json(path, plan.to_dict())


def load_plan(path: PathLike) -> StudyPlan:
    """Read a plan written by :func:`write_plan`; the error names the file."""
    path = Path(path)
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read the study plan {path}: {exc}") from exc
    try:
        return StudyPlan.from_dict(d)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: invalid study plan: {exc}") from exc
