"""Training parameters: augmentation (:class:`AugmentParams`) and every training knob (:class:`TrainConfig`)."""
from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from typing import Any

from .checks import check_patch_size
from ..precision import PRECISIONS

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
    when >= 2 cases) is held out, by ``val_split``: ``stratified`` (systematic sample over the cases
    ranked by lesion volume, every seed validating on the whole range) or ``random``; ``val_patches_per_case`` fixed, un-augmented patches per held-out case
    (half lesion-centred) form the validation set. ``inference_patch``/``inference_stride`` are recorded
    for ``bmstudy.inference.predictor`` (the model is fully convolutional, so they may differ from ``patch_size``).

    Patch sampling (nnU-Net style, issue 11): ``lesion_fraction`` is the foreground-oversampling share;
    ``background_sampling="head"`` centres the other patches on a uniformly drawn voxel of the head
    (``brain.npy``, else the nonzero image), so patches overhang the volume border where the head
    touches it (zero padding); ``"volume"`` keeps the original uniform-over-the-volume draw.
    ``hard_negative_fraction`` of those head patches are centred on a bright voxel outside the lesions
    instead (the top ``1 - hard_negative_quantile`` of the brain's intensities: enhancing vessels,
    sinuses, plexus; :func:`bmstudy.training.case_data.bright_voxels`).
    Whole-volume validation: every ``val_every`` epochs (0: never) the held-out cases are predicted
    with the inference sliding window (``val_window``/``val_stride``; ``None``: the inference
    settings) inside their brain mask; ``val_case_dice`` (mean per-case Dice) can be the ``monitor``.
    ``norm``: ``batch`` (the paper), ``group`` or ``instance`` (every BatchNorm of encoder and decoder
    replaced); ``precise_bn_patches > 0`` re-estimates BatchNorm statistics on that many random head
    patches before each whole-volume validation and model export. ``lr_schedule``: ``constant``
    (the paper), ``poly`` (nnU-Net: ``lr * (1 - step/total)^0.9``) or ``cosine``. ``deterministic``:
    op determinism and one inter-op thread (:mod:`bmstudy.training.determinism`), so a run repeats exactly.
    ``precision``: the Keras policy of training (:mod:`bmstudy.precision`; ``auto``: ``mixed_bfloat16`` on
    a CPU with native bfloat16, else ``float32``); ``output_prior``: the untrained network's foreground
    probability (the last bias starts at its logit; ``None``: zero bias, p = 0.5);
    ``mixed_precision=True`` is the older spelling of ``mixed_float16`` on a GPU. The exported model is
    float32 either way (inference picks its own). ``ema_momentum``: keep an exponential moving average
    of the weights (Adam's ``use_ema``) and validate and export it (:mod:`bmstudy.training.ema`;
    ``None``: off, as in the paper); with BatchNorm it needs ``precise_bn_patches > 0``, which re-estimates
    the statistics for the averaged weights.
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
    val_split: str = "stratified"
    precision: str = "float32"
    output_prior: float | None = None
    hard_negative_fraction: float = 0.0
    hard_negative_quantile: float = 0.995
    ema_momentum: float | None = None

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
        if self.ema_momentum is not None and not 0.0 < float(self.ema_momentum) < 1.0:
            raise ValueError(f"ema_momentum must be in (0, 1) or None; got {self.ema_momentum!r}")
        if self.output_prior is not None and not 0.0 < float(self.output_prior) < 1.0:
            raise ValueError(f"output_prior must be in (0, 1) or None; got {self.output_prior!r}")
        self._check_issue11_fields()

    def _check_issue11_fields(self) -> None:
        """Validate the sampling, validation, normalisation and schedule choices."""
        choices = {"background_sampling": ("volume", "head"), "norm": ("batch", "group", "instance"),
                   "lr_schedule": ("constant", "poly", "cosine"), "val_split": ("stratified", "random")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}; got {getattr(self, name)!r}")
        for name in ("lesion_fraction", "hard_negative_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]; got {getattr(self, name)}")
        if not 0.0 < self.hard_negative_quantile < 1.0:
            raise ValueError(f"hard_negative_quantile must be in (0, 1); got {self.hard_negative_quantile}")
        if self.hard_negative_fraction > 0 and self.background_sampling != "head":
            raise ValueError("hard_negative_fraction > 0 needs background_sampling='head'")
        if self.val_every < 0 or self.precise_bn_patches < 0:
            raise ValueError("val_every and precise_bn_patches must be >= 0")
        if self.val_window is not None:
            check_patch_size(self.val_window)
        if self.ema_momentum is not None and self.norm == "batch" and self.precise_bn_patches == 0:
            raise ValueError("ema_momentum with norm='batch' needs precise_bn_patches > 0: BatchNorm's running "
                             "statistics are learned with the raw weights, so the averaged weights would be "
                             "validated and exported with statistics that are not theirs")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}; got {self.precision!r}")

    @classmethod
    def from_profile(cls, name: str, **overrides: Any) -> "TrainConfig":
        """``paper``: the study's recipe (128^3, batch 4, Adam 1e-4, dropout 0.5).
        ``cpu``: the default 2-core study run (64^3 patches, batch 4, 800 steps, 2/3 lesion-centred patches).
        ``tiny``: CI smoke test (32^3, batch 1, 2 steps x 1 epoch).

        ``cpu`` samples 2/3 lesion-centred patches and the rest in the head, selects the model by
        whole-volume validation Dice (every 3 epochs and the last), uses GroupNorm (``norm="group"``),
        a poly learning-rate decay from 3e-4 and ``precision="auto"`` (bfloat16 on a CPU with native
        bfloat16: 88-96 s instead of 117-138 s per 50-step epoch on the 2-core study machine) and
        ``output_prior=0.01`` (the last bias starts at logit(0.01): seed 0 on the default cohort reached
        whole-volume validation Dice 0.31 at epoch 6 instead of 0.02); ``paper`` keeps BatchNorm,
        constant Adam 1e-4, a zero output bias and ``val_loss`` selection. BatchNorm at the ``cpu``
        profile (batches of 2 patches) failed on seed 1 under every eval-mode statistic (running,
        precise BN on head or training-like patches); see the deviations page and ``benchmarks/norm_eval.py``. GroupNorm, seed 0: median test Dice 0.797,
        external 0.382, epoch 18 kept (56 min of training on 2 cores). Measured with BatchNorm + precise BN on the
        real-scale default cohort (2-core CPU, seed 0, 27 train / 5 val cases,
        ``benchmarks/train_seeds.py``): nnU-Net's 1/3 foreground with 12 x 25 steps learned almost
        nothing (whole-volume validation Dice <= 0.15, median test Dice 0.03); 2/3 foreground with
        12 x 50 steps gave median test Dice 0.751, external 0.470, and validation Dice still rising at
        the last epoch (0.62), hence 18 x 50 steps (1.5-5 s per step on 2 cores, by CPU). With 18 x 50 steps
        seeds 0-2 gave median test Dice 0.783, 0.826, 0.842 (spread 0.059, seed 0 still rising); 24 x 50 steps
        with a weight EMA (``ema_momentum=0.99``: validation and the exported model use the averaged
        weights) gave 0.836, 0.837, 0.870 but whole-volume validation Dice 0.19-0.25 at epoch 6. The
        same 2400 patches at the paper's batch 4 (12 x 50 steps) with half the background patches on
        bright non-lesion voxels (``hard_negative_fraction=0.5``) keep every seed above 0.3 from epoch 6
        on (~2 s per step on the bfloat16 study machine), but gave 0.810-0.829 and more false positives on
        real scans; 16 x 50 steps of batch 4 (the profile now, ~26 min of training) give median test Dice
        0.837, 0.823, 0.832 (spread 0.014), external 0.812, 0.718, 0.764, validation Dice >= 0.40 from epoch 6.
        See the book's deviations page for the seed tables."""
        base: dict[str, Any]
        if name == "paper":
            base = {}
        elif name == "cpu":
            base = dict(patch_size=(64, 64, 64), batch_size=4, steps_per_epoch=50, epochs=16, ema_momentum=0.99,
                        learning_rate=3e-4, lesion_fraction=2 / 3, background_sampling="head",
                        decoder_dropout=0.1, val_fraction=0.15, val_patches_per_case=2,
                        val_every=3, val_stride=128, monitor="val_case_dice", lr_schedule="poly",
                        norm="group", precise_bn_patches=0, precision="auto", output_prior=0.01,
                        hard_negative_fraction=0.5,
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
