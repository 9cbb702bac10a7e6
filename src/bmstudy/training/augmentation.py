"""Patch augmentation: left-right flip, elastic deformation and gamma (volumentations-3D), seeded per sample.

This module owns :func:`augment`, the augmentation applied to every training patch. Its settings
(:class:`~bmstudy.plan.AugmentParams`) live in :mod:`bmstudy.plan` and are re-exported here.

Augmentation uses volumentations-3D's transforms (``Flip``, ``ElasticTransform``, ``RandomGamma``) but
draws their random parameters from the caller's ``numpy.random.Generator`` and calls their
``apply``/``apply_to_mask`` methods, because the library's own sampling uses Python's global
``random`` module (neither seedable per sample nor thread-safe). So the output is a pure function of
the inputs and the generator's state.

NaN trap (STACK_NOTES): volumentations' gamma on z-scored (negative) intensities gives NaN, so gamma
is applied to the image rescaled to [0, 1] and the result mapped back to the original range; elastic
output is clipped to the input's range.

Imports no TensorFlow; volumentations is imported inside the functions.
"""
from __future__ import annotations

import numpy as np

from ..plan import AugmentParams

__all__ = ["AugmentParams", "augment"]


def _gamma_rescaled(image: np.ndarray, gamma: float) -> np.ndarray:
    """Gamma on ``image`` rescaled to [0, 1], then mapped back; exact-zero background stays 0.

    Parameters
    ----------
    image : ndarray of float
        The image (any range; constant or non-finite images are returned unchanged).
    gamma : float
        The gamma exponent (volumentations' ``RandomGamma.apply``).

    Returns
    -------
    ndarray of float32
        The gamma-corrected image in the input's range (``image`` itself when it was returned unchanged).
    """
    from volumentations import RandomGamma

    lo, hi = float(image.min()), float(image.max())
    if not np.isfinite(lo) or not np.isfinite(hi) or hi - lo < 1e-6:
        return image
    unit = np.clip((image - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
    out = RandomGamma(gamma_limit=(100, 100)).apply(unit, gamma=gamma)
    out = (np.clip(out, 0.0, 1.0) * (hi - lo) + lo).astype(np.float32)
    out[image == 0] = 0.0
    return out


def _elastic(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, params: AugmentParams,
             lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """Elastic deformation of image (linear, clipped to the input's range) and mask (nearest neighbour).

    Draws ``deformation ~ U(params.elastic_deformation)``; with ``deformation == 0`` both arrays are
    returned unchanged (the draws of sigma, alpha and state are then skipped).
    """
    from volumentations import ElasticTransform

    deformation = float(rng.uniform(*params.elastic_deformation))
    if deformation <= 0:
        return image, mask
    sigmas = [deformation * s for s in image.shape]
    alphas = [float(rng.uniform(s / 8, s / 2)) for s in sigmas]
    state = int(rng.integers(0, 2**31 - 1))
    el = ElasticTransform(deformation_limits=params.elastic_deformation, interpolation=1,
                          border_mode="constant", value=0, mask_value=0)
    image = np.clip(el.apply(image, sigmas, alphas, random_state=state), min(lo, 0.0), max(hi, 0.0))
    image = image.astype(np.float32)
    mask = el.apply_to_mask(mask, sigmas, alphas, random_state=state).astype(np.uint8)
    return image, mask


def augment(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
            params: AugmentParams = AugmentParams()) -> tuple[np.ndarray, np.ndarray]:
    """Left-right flip, elastic deformation and gamma, each with its probability, parameters from ``rng``.

    The steps run in that order; each first draws ``rng.random() < p`` (so a given generator state
    always gives the same output). The mask moves with the image (nearest neighbour).

    Parameters
    ----------
    image : ndarray of shape (D, H, W)
        Float image patch (cast to float32).
    mask : ndarray of shape (D, H, W)
        0/1 lesion mask of the patch (cast to uint8).
    rng : numpy.random.Generator
        Source of every random decision and parameter.
    params : AugmentParams, default=AugmentParams()
        Probabilities and ranges: ``flip_p`` (flip along axis 0), ``elastic_p`` and
        ``elastic_deformation`` (sigma = deformation * patch size), ``gamma_p`` and ``gamma_limit``
        (gamma = randint(lo, hi) / 100).

    Returns
    -------
    image : ndarray of float32, shape (D, H, W)
        The augmented image; finite whenever the input is, within ``[min(lo, 0), max(hi, 0)]`` of the
        input's range.
    mask : ndarray of uint8, shape (D, H, W)
        The mask moved with the image.

    Raises
    ------
    ValueError
        If ``image`` and ``mask`` are not 3-D arrays of the same shape.
    """
    from volumentations import Flip

    if image.shape != mask.shape or image.ndim != 3:
        raise ValueError(f"augment: image {image.shape} and mask {mask.shape} must be equal 3-D shapes")
    image = np.asarray(image, dtype=np.float32)
    mask = np.asarray(mask, dtype=np.uint8)
    lo, hi = float(image.min()), float(image.max())
    if rng.random() < params.flip_p:
        flip = Flip(axis=0)
        image, mask = np.ascontiguousarray(flip.apply(image)), np.ascontiguousarray(flip.apply_to_mask(mask))
    if rng.random() < params.elastic_p:
        image, mask = _elastic(image, mask, rng, params, lo, hi)
    if rng.random() < params.gamma_p:
        g0, g1 = params.gamma_limit
        image = _gamma_rescaled(image, int(rng.integers(g0, g1 + 1)) / 100.0)
    if not np.all(np.isfinite(image)):  # defensive: never feed NaN/inf to the optimiser
        image = np.nan_to_num(image, nan=0.0, posinf=hi, neginf=lo).astype(np.float32)
    return image, mask
