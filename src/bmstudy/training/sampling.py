"""Training data: patch sampling (lesion-centred, uniform in the head or volume, hard negatives) and ``tf.data``.

This module owns choosing and cropping patches of the cases that :mod:`bmstudy.training.case_data`
reads (its names are re-exported here), :class:`PatchSampler` (patches +
:func:`~bmstudy.training.augmentation.augment`) and :func:`make_dataset` (the infinite batched
``tf.data.Dataset`` that ``train`` fits on).

Sampling follows nnU-Net: a share ``lesion_fraction`` of patches is centred on a lesion (foreground
oversampling, 1/3 in nnU-Net and the ``cpu`` profile); the rest are centred on a voxel drawn
uniformly inside the head (``background="head"``: ``brain.npy``, else the nonzero image), so they
overhang the volume border wherever the head reaches it and are zero-padded like the sliding window
pads at inference. ``background="volume"`` keeps the older draw (uniform origin over the volume,
widened by ``border_overhang``) that the ``paper`` profile uses. Hard negatives (head sampling only):
a share ``hard_negative_fraction`` of the non-lesion patches is centred on a bright voxel outside the
lesions (:func:`~bmstudy.training.case_data.bright_voxels`: the brightest ``1 - quantile`` of the head,
lesions dilated by a margin left out), where enhancing vessels, sinuses and plexus are, so the network
sees what it should not mark.

Determinism: sample ``i`` of a :class:`PatchSampler` depends only on ``(seed, i)`` (its own
``numpy.random.Generator``), never on thread scheduling or on how many samples were drawn before, so a
parallel ``tf.data`` map with ``deterministic=True`` yields the same batches on every run, and a resumed
training run continues the exact sample sequence from ``start_index``.

This module imports TensorFlow only inside :func:`make_dataset`.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..plan import AugmentParams
from .augmentation import augment
from .case_data import Case, bright_voxels, head_box, lesion_components, load_cases, load_preprocessed_case

__all__ = ["load_preprocessed_case", "lesion_components", "bright_voxels", "Case", "load_cases", "extract_patch",
           "sample_patch_start", "sample_head_start", "head_box", "PatchSampler", "make_dataset"]

#: Draws tried inside a case's head bounding box before falling back to the box centre.
_HEAD_TRIES = 64

# ----------------------------------------------------------------------------- patches


def extract_patch(volume: np.ndarray, start: Sequence[int], size: Sequence[int]) -> np.ndarray:
    """Crop ``volume[start:start+size]`` with zero padding wherever the window leaves the volume.

    Parameters
    ----------
    volume : ndarray of shape (D, H, W)
    start : sequence of 3 int
        Window origin (may be negative or beyond the volume).
    size : sequence of 3 int
        Window shape.

    Returns
    -------
    ndarray of shape ``size``, dtype of ``volume``
    """
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
    """Choose a patch origin, lesion-centred with probability ``lesion_fraction``.

    With probability ``lesion_fraction`` (and if the case has lesions) the patch is centred on a random
    voxel of a lesion component chosen uniformly (so small lesions are drawn as often as large ones),
    shifted by up to ``center_jitter * patch`` so lesions are not always in the middle. Otherwise the
    origin is uniform over positions keeping the patch inside the volume (centred with random padding
    when the volume is smaller than the patch), widened by ``border_overhang * patch`` on both sides so
    the model also sees zero-padded borders and empty background, as sliding-window inference does.
    Windows may leave the volume; callers zero-pad (:func:`extract_patch`).

    Parameters
    ----------
    shape : sequence of 3 int
        Volume shape.
    patch_size : sequence of 3 int
        Patch shape.
    rng : numpy.random.Generator
        Source of every draw.
    lesions : sequence of ndarray, default=()
        :func:`lesion_components` of the case.
    lesion_fraction : float, default=0.5
        Probability of a lesion-centred patch.
    center_jitter : float, default=0.25
        Maximum shift of a lesion-centred patch, as a fraction of the patch size.
    border_overhang : float, default=0.0
        How far a uniform patch may overhang the volume on each side, as a fraction of the patch size.

    Returns
    -------
    start : tuple of 3 int
        The patch origin.
    lesion_centred : bool
        Whether the patch was centred on a lesion.
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


def sample_head_start(case: Case, patch_size: Sequence[int], rng: np.random.Generator) -> tuple[int, int, int]:
    """Origin of a patch centred on a voxel drawn uniformly inside the case's head.

    Rejection sampling inside the head's bounding box (:attr:`Case.box`; uniform over the head's
    voxels); after :data:`_HEAD_TRIES` misses the box centre is used. The window may leave the volume
    (callers zero-pad with :func:`extract_patch`).

    Parameters
    ----------
    case : Case
        The case (``box`` computed by :func:`load_cases`, else the whole volume).
    patch_size : sequence of 3 int
        Patch shape.
    rng : numpy.random.Generator
        Source of every draw.

    Returns
    -------
    tuple of 3 int
        The patch origin (centre voxel minus half the patch).
    """
    lo, hi = case.box if case.box is not None else ((0, 0, 0), tuple(case.image.shape))
    centre = tuple((a + b) // 2 for a, b in zip(lo, hi))
    for _ in range(_HEAD_TRIES):
        voxel = tuple(int(rng.integers(a, b)) for a, b in zip(lo, hi))
        if case.in_head(voxel):
            centre = voxel
            break
    return tuple(int(c) - int(p) // 2 for c, p in zip(centre, patch_size))  # type: ignore[return-value]


# ----------------------------------------------------------------------------- sampler + tf.data


class PatchSampler:
    """Random (optionally lesion-centred, augmented) patches from a list of :class:`Case`.

    :meth:`sample` is a pure function of ``(seed, index)``: each sample draws the case, the patch
    origin (:func:`sample_patch_start`) and the augmentation from ``default_rng([seed, index])``.

    Parameters
    ----------
    cases : sequence of Case
        The cases to sample from (uniformly).
    patch_size : sequence of 3 int
        Patch shape.
    lesion_fraction : float, default=0.5
        Share of lesion-centred patches, in [0, 1].
    augment_params : AugmentParams or None, default=AugmentParams()
        Augmentation settings; ``None`` disables augmentation (validation patches).
    seed : int, default=0
        Seed of the sample stream.
    center_jitter : float, default=0.25
        See :func:`sample_patch_start`.
    border_overhang : float, default=0.0
        See :func:`sample_patch_start` (``background="volume"`` only).
    background : {"volume", "head"}, default="volume"
        Where non-lesion patches come from: uniform over the volume (:func:`sample_patch_start`) or
        centred on a uniform head voxel (:func:`sample_head_start`, nnU-Net style).
    hard_negative_fraction : float, default=0.0
        Share of the non-lesion patches centred (with ``center_jitter``) on a voxel of the case's
        :attr:`Case.bright` (``background="head"`` only; cases without bright voxels give a head patch).
        ``0`` draws nothing extra, so the sample stream is the one without hard negatives.

    Raises
    ------
    ValueError
        If ``cases`` is empty, a fraction is outside [0, 1], ``background`` is unknown, or hard
        negatives are asked for with ``background="volume"`` or cases whose ``bright`` is not computed.
    """

    def __init__(self, cases: Sequence[Case], patch_size: Sequence[int], lesion_fraction: float = 0.5,
                 augment_params: AugmentParams | None = AugmentParams(), seed: int = 0,
                 center_jitter: float = 0.25, border_overhang: float = 0.0, background: str = "volume",
                 hard_negative_fraction: float = 0.0) -> None:
        if not cases:
            raise ValueError("PatchSampler needs at least one case")
        for name, value in (("lesion_fraction", lesion_fraction), ("hard_negative_fraction", hard_negative_fraction)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]; got {value}")
        if background not in ("volume", "head"):
            raise ValueError(f"background must be 'volume' or 'head'; got {background!r}")
        if hard_negative_fraction > 0 and background != "head":
            raise ValueError("hard negatives need background='head'")
        if hard_negative_fraction > 0 and any(c.bright is None for c in cases):
            raise ValueError("hard negatives need each case's bright voxels: load_cases(..., hard_negative_quantile=q)")
        self.hard_negative_fraction = float(hard_negative_fraction)
        self.background = background
        self.cases = list(cases)
        self.patch_size = tuple(int(p) for p in patch_size)
        self.lesion_fraction = float(lesion_fraction)
        self.augment_params = augment_params
        self.seed = int(seed)
        self.center_jitter = float(center_jitter)
        self.border_overhang = float(border_overhang)

    def sample(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Sample number ``index`` of the stream.

        Parameters
        ----------
        index : int
            Position in the stream (any order of calls gives the same sample).

        Returns
        -------
        image : ndarray of float32, shape (*patch_size, 1)
        mask : ndarray of float32 (0/1), shape (*patch_size, 1)
        """
        rng = np.random.default_rng([self.seed, int(index)])
        case = self.cases[int(rng.integers(len(self.cases)))]
        start, _ = self.patch_start(case, rng)
        img = extract_patch(case.image, start, self.patch_size).astype(np.float32)
        msk = (extract_patch(case.mask, start, self.patch_size) > 0).astype(np.uint8)
        if self.augment_params is not None:
            img, msk = augment(img, msk, rng, self.augment_params)
        return img[..., None], msk[..., None].astype(np.float32)

    def patch_start(self, case: Case, rng: np.random.Generator) -> tuple[tuple[int, int, int], bool]:
        """``(origin, lesion_centred)`` of the next patch of ``case`` (draws from ``rng``)."""
        if self.background == "volume":
            return sample_patch_start(case.image.shape, self.patch_size, rng, case.lesions,
                                      self.lesion_fraction, self.center_jitter, self.border_overhang)
        # one draw decides lesion vs background (as sample_patch_start does); a case without lesions
        # always gives a background patch
        if rng.random() < self.lesion_fraction and case.lesions:
            return sample_patch_start(case.image.shape, self.patch_size, rng, case.lesions, 1.0,
                                      self.center_jitter)
        if self.hard_negative_fraction > 0 and rng.random() < self.hard_negative_fraction and len(case.bright):
            # a bright non-lesion voxel, as one "component" of sample_patch_start's lesion-centred draw
            return sample_patch_start(case.image.shape, self.patch_size, rng, [case.bright], 1.0,
                                      self.center_jitter)[0], False
        return sample_head_start(case, self.patch_size, rng), False

    def arrays(self, n: int, start_index: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """``n`` consecutive samples stacked (validation sets, tests).

        Parameters
        ----------
        n : int
            Number of samples.
        start_index : int, default=0
            Index of the first sample.

        Returns
        -------
        images, masks : ndarray of float32, shape (n, *patch_size, 1)
        """
        pairs = [self.sample(start_index + i) for i in range(n)]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def make_dataset(sampler: PatchSampler, batch_size: int, start_index: int = 0,
                 num_parallel_calls: int | None = None, prefetch: int | None = None) -> Any:
    """Infinite ``tf.data.Dataset`` of ``(image, mask)`` batches of samples ``start_index, start_index+1, ...``.

    Parallel map (``deterministic=True``, so batches do not depend on thread scheduling) + prefetch.
    To resume after ``k`` optimiser steps pass ``start_index = k * batch_size``.

    Parameters
    ----------
    sampler : PatchSampler
        The sample stream.
    batch_size : int
        Samples per batch (the last incomplete batch is never reached: the stream is infinite).
    start_index : int, default=0
        Index of the first sample.
    num_parallel_calls : int or None, default=None
        Parallel ``map`` calls; ``None`` means ``tf.data.AUTOTUNE``.
    prefetch : int or None, default=None
        Batches to prefetch; ``None`` means ``tf.data.AUTOTUNE``.

    Returns
    -------
    tf.data.Dataset
        Elements ``(image, mask)`` of shape ``(batch_size, *patch_size, 1)``, float32.

    Raises
    ------
    ValueError
        If ``batch_size < 1``.
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
