"""Parameters of the preprocessing, inference and evaluation stages."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..precision import PRECISIONS
from ..utils import params_hash
from .checks import BLENDS, INTERPOLATION_ORDER, NORMALISATIONS, SKULL_STRIP_BACKENDS, check_patch_size

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
    precision : ``'float32'``, ``'mixed_float16'`` or ``'mixed_bfloat16'`` (Keras mixed precision), or
        ``'auto'`` (``mixed_bfloat16`` on a CPU with native bfloat16, else float32; :mod:`bmstudy.precision`).
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
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}; got {self.precision!r}")
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


#: The study profiles: for each, the preset or the field overrides of every section.
