"""Training data: patch sampling from preprocessed cases, augmentation (volumentations-3D), tf.data.

Determinism: sample ``i`` of a :class:`PatchSampler` depends only on ``(seed, i)`` (its own
``numpy.random.Generator``), never on thread scheduling or on how many samples were drawn before, so a
parallel ``tf.data`` map with ``deterministic=True`` yields the same batches on every run, and a resumed
training run continues the exact sample sequence from ``start_index``.

Augmentation uses volumentations-3D's transforms (``Flip``, ``ElasticTransform``, ``RandomGamma``) but
draws their random parameters from our Generator and calls their ``apply``/``apply_to_mask`` methods,
because the library's own sampling uses Python's global ``random`` module (neither seedable per sample
nor thread-safe). NaN trap (STACK_NOTES): gamma is applied to the image rescaled to [0, 1] and the
result mapped back to the original range; elastic output is clipped to the input's range.

This module imports TensorFlow only inside :func:`make_dataset`.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..utils import PathLike, get_logger

log = get_logger("bmstudy.training.data")


# ----------------------------------------------------------------------------- case loading


def load_preprocessed_case(preprocessed_dir: PathLike, patient_id: str, mmap: bool = True) -> dict[str, Any]:
    """Read one preprocessed case (``<dir>/<pid>/image.npy, mask.npy, brain.npy, meta.json``).

    Uses memory-mapping by default so a cohort does not have to fit in RAM. Validates dtype and shape
    agreement; errors name the case and the file.
    """
    case_dir = Path(preprocessed_dir) / str(patient_id)
    out: dict[str, Any] = {}
    for key in ("image", "mask", "brain"):
        path = case_dir / f"{key}.npy"
        if not path.is_file():
            if key == "brain":
                continue
            raise FileNotFoundError(f"case {patient_id!r}: missing {path}")
        try:
            out[key] = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except ValueError as exc:
            raise ValueError(f"case {patient_id!r}: cannot read {path}: {exc}") from exc
        if out[key].ndim != 3:
            raise ValueError(f"case {patient_id!r}: {path} must be 3-D, got shape {out[key].shape}")
    if out["image"].shape != out["mask"].shape:
        raise ValueError(f"case {patient_id!r}: image {out['image'].shape} and mask {out['mask'].shape} shapes differ in {case_dir}")
    if not np.issubdtype(out["image"].dtype, np.floating):
        raise ValueError(f"case {patient_id!r}: {case_dir / 'image.npy'} must be float, got {out['image'].dtype}")
    meta_path = case_dir / "meta.json"
    out["meta"] = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
    return out


def lesion_components(mask: np.ndarray) -> list[np.ndarray]:
    """Voxel coordinates (n_i, 3) int32 of each 26-connected lesion component of ``mask``."""
    from scipy import ndimage

    labels, n = ndimage.label(np.asarray(mask) > 0, structure=np.ones((3, 3, 3), dtype=bool))
    if n == 0:
        return []
    coords = np.argwhere(labels > 0).astype(np.int32)
    lab = labels[tuple(coords.T)]
    order = np.argsort(lab, kind="stable")
    coords, lab = coords[order], lab[order]
    splits = np.flatnonzero(np.diff(lab)) + 1
    return list(np.split(coords, splits))


@dataclass
class Case:
    """One training case: (memory-mapped) image and mask plus its lesion components."""

    patient_id: str
    image: np.ndarray
    mask: np.ndarray
    lesions: list[np.ndarray]


def load_cases(preprocessed_dir: PathLike, patient_ids: Sequence[str]) -> list[Case]:
    """Load cases for sampling (images memory-mapped, lesion components precomputed)."""
    cases = []
    for pid in patient_ids:
        c = load_preprocessed_case(preprocessed_dir, pid)
        cases.append(Case(str(pid), c["image"], c["mask"], lesion_components(c["mask"])))
    return cases


# ----------------------------------------------------------------------------- patches


def extract_patch(volume: np.ndarray, start: Sequence[int], size: Sequence[int]) -> np.ndarray:
    """Crop ``volume[start:start+size]`` with zero padding wherever the window leaves the volume."""
    out = np.zeros(tuple(size), dtype=volume.dtype)
    src, dst = [], []
    for s, n, dim in zip(start, size, volume.shape):
        lo, hi = max(s, 0), min(s + n, dim)
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - s, hi - s))
    out[tuple(dst)] = volume[tuple(src)]
    return out


def sample_patch_start(
    shape: Sequence[int],
    patch_size: Sequence[int],
    rng: np.random.Generator,
    lesions: Sequence[np.ndarray] = (),
    lesion_fraction: float = 0.5,
    center_jitter: float = 0.25,
    border_overhang: float = 0.0,
) -> tuple[tuple[int, int, int], bool]:
    """Choose a patch origin; returns ``(start, lesion_centred)``.

    With probability ``lesion_fraction`` (and if the case has lesions) the patch is centred on a random
    voxel of a lesion component chosen uniformly (so small lesions are drawn as often as large ones),
    shifted by up to ``center_jitter * patch`` so lesions are not always in the middle. Otherwise the
    origin is uniform over positions keeping the patch inside the volume (centred with random padding
    when the volume is smaller than the patch), widened by ``border_overhang * patch`` on both sides so
    the model also sees zero-padded borders and empty background, as sliding-window inference does.
    Windows may leave the volume; callers zero-pad.
    """
    if rng.random() < lesion_fraction and len(lesions) > 0:
        comp = lesions[int(rng.integers(len(lesions)))]
        centre = comp[int(rng.integers(len(comp)))]
        start = []
        for c, p in zip(centre, patch_size):
            j = int(center_jitter * p)
            start.append(int(c) - p // 2 + (int(rng.integers(-j, j + 1)) if j > 0 else 0))
        return tuple(start), True  # type: ignore[return-value]
    start = []
    for dim, p in zip(shape, patch_size):
        lo, hi = (0, dim - p) if dim >= p else (dim - p, 0)
        o = int(border_overhang * p)
        lo, hi = lo - o, hi + o
        start.append(int(rng.integers(lo, hi + 1)))
    return tuple(start), False  # type: ignore[return-value]


# ----------------------------------------------------------------------------- augmentation


from ..plan import AugmentParams  # noqa: E402


def _gamma_rescaled(image: np.ndarray, gamma: float) -> np.ndarray:
    """Gamma on ``image`` rescaled to [0, 1] then mapped back; exact-zero background stays 0."""
    from volumentations import RandomGamma

    lo, hi = float(image.min()), float(image.max())
    if not np.isfinite(lo) or not np.isfinite(hi) or hi - lo < 1e-6:
        return image
    unit = np.clip((image - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
    out = RandomGamma(gamma_limit=(100, 100)).apply(unit, gamma=gamma)
    out = (np.clip(out, 0.0, 1.0) * (hi - lo) + lo).astype(np.float32)
    out[image == 0] = 0.0
    return out


def augment(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
            params: AugmentParams = AugmentParams()) -> tuple[np.ndarray, np.ndarray]:
    """Left-right flip, elastic deformation and gamma (volumentations-3D), parameters drawn from ``rng``.

    ``image`` float (D, H, W), ``mask`` uint8 (D, H, W); returns new arrays of the same dtypes. The output
    is finite whenever the input is, and the mask is moved with the image (nearest neighbour).
    """
    from volumentations import ElasticTransform, Flip

    if image.shape != mask.shape or image.ndim != 3:
        raise ValueError(f"augment: image {image.shape} and mask {mask.shape} must be equal 3-D shapes")
    image = np.asarray(image, dtype=np.float32)
    mask = np.asarray(mask, dtype=np.uint8)
    lo, hi = float(image.min()), float(image.max())
    if rng.random() < params.flip_p:
        flip = Flip(axis=0)
        image, mask = np.ascontiguousarray(flip.apply(image)), np.ascontiguousarray(flip.apply_to_mask(mask))
    if rng.random() < params.elastic_p:
        deformation = float(rng.uniform(*params.elastic_deformation))
        if deformation > 0:
            sigmas = [deformation * s for s in image.shape]
            alphas = [float(rng.uniform(s / 8, s / 2)) for s in sigmas]
            state = int(rng.integers(0, 2**31 - 1))
            el = ElasticTransform(deformation_limits=params.elastic_deformation, interpolation=1,
                                  border_mode="constant", value=0, mask_value=0)
            image = np.clip(el.apply(image, sigmas, alphas, random_state=state), min(lo, 0.0), max(hi, 0.0))
            image = image.astype(np.float32)
            mask = el.apply_to_mask(mask, sigmas, alphas, random_state=state).astype(np.uint8)
    if rng.random() < params.gamma_p:
        g0, g1 = params.gamma_limit
        image = _gamma_rescaled(image, int(rng.integers(g0, g1 + 1)) / 100.0)
    if not np.all(np.isfinite(image)):  # defensive: never feed NaN/inf to the optimiser
        image = np.nan_to_num(image, nan=0.0, posinf=hi, neginf=lo).astype(np.float32)
    return image, mask


# ----------------------------------------------------------------------------- sampler + tf.data


class PatchSampler:
    """Random (optionally lesion-centred, augmented) patches from a list of :class:`Case`.

    ``sample(i)`` returns ``(image, mask)`` float32 arrays of shape ``(*patch_size, 1)``; it is a pure
    function of ``(seed, i)``.
    """

    def __init__(self, cases: Sequence[Case], patch_size: Sequence[int], lesion_fraction: float = 0.5,
                 augment_params: AugmentParams | None = AugmentParams(), seed: int = 0,
                 center_jitter: float = 0.25, border_overhang: float = 0.0) -> None:
        if not cases:
            raise ValueError("PatchSampler needs at least one case")
        if not 0.0 <= lesion_fraction <= 1.0:
            raise ValueError(f"lesion_fraction must be in [0, 1]; got {lesion_fraction}")
        self.cases = list(cases)
        self.patch_size = tuple(int(p) for p in patch_size)
        self.lesion_fraction = float(lesion_fraction)
        self.augment_params = augment_params
        self.seed = int(seed)
        self.center_jitter = float(center_jitter)
        self.border_overhang = float(border_overhang)

    def sample(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, int(index)])
        case = self.cases[int(rng.integers(len(self.cases)))]
        start, _ = sample_patch_start(case.image.shape, self.patch_size, rng, case.lesions,
                                      self.lesion_fraction, self.center_jitter, self.border_overhang)
        img = extract_patch(case.image, start, self.patch_size).astype(np.float32)
        msk = (extract_patch(case.mask, start, self.patch_size) > 0).astype(np.uint8)
        if self.augment_params is not None:
            img, msk = augment(img, msk, rng, self.augment_params)
        return img[..., None], msk[..., None].astype(np.float32)

    def arrays(self, n: int, start_index: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """``n`` consecutive samples stacked into (n, *patch, 1) arrays (validation sets, tests)."""
        pairs = [self.sample(start_index + i) for i in range(n)]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def make_dataset(sampler: PatchSampler, batch_size: int, start_index: int = 0,
                 num_parallel_calls: int | None = None, prefetch: int | None = None) -> Any:
    """Infinite ``tf.data.Dataset`` of ``(image, mask)`` batches, samples ``start_index, start_index+1, ...``.

    Parallel map (``deterministic=True``) + prefetch. ``num_parallel_calls=None`` means AUTOTUNE.
    To resume after ``k`` optimiser steps pass ``start_index = k * batch_size``.
    """
    import tensorflow as tf

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    shape = (*sampler.patch_size, 1)

    def _np_sample(i: np.int64) -> tuple[np.ndarray, np.ndarray]:
        return sampler.sample(int(i))

    def _map(i: Any) -> tuple[Any, Any]:
        img, msk = tf.numpy_function(_np_sample, [i], (tf.float32, tf.float32), stateful=False)
        img.set_shape(shape)
        msk.set_shape(shape)
        return img, msk

    ds = tf.data.Dataset.range(int(start_index), 2**62)
    ds = ds.map(_map, num_parallel_calls=num_parallel_calls or tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=True)
    return ds.prefetch(prefetch or tf.data.AUTOTUNE)
