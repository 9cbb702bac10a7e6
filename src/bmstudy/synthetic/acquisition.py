"""Acquisition model of the synthetic scans: tissue intensities, partial volume, bias, noise, site scale.

:func:`case_intensities` draws the case's CE-T1 intensity of every tissue (relative to white matter =
1) from a log-normal around the site's means (SynthSeg-like contrast randomisation, ``contrast_jitter``),
with one extra factor shared by the venous mimics (``venous_jitter``: bolus timing);
:func:`tissue_image` renders the partial-volume brain (GM/WM/CSF/deep-grey probabilities of the deformed
template), the labelled layers outside it and the enhancing dural/skull-base mimics (sinuses, falx,
tentorium, pituitary, cavernous sinuses) with a fine parenchymal texture; :func:`acquire` turns the
painted image into the stored scan: point-spread blur, slice-thickness blur (thick-slice site), the
site's intensity response (gamma), a smooth multiplicative bias field, an optional motion ghost,
Rician noise and the scanner's intensity scale, rounded to int16.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from ..plan import SiteParams
from .fields import smooth_noise

__all__ = ["case_intensities", "tissue_image", "acquire"]

_VENOUS = ("sinus", "cavernous", "vessel")  # scaled together per case (SiteParams.venous_jitter)


def case_intensities(rng: np.random.Generator, site: SiteParams, venous: float = 1.0) -> dict[str, float]:
    """Per-case tissue intensities (WM = 1) drawn around the site's means.

    Parameters
    ----------
    rng : numpy.random.Generator
        The case's render generator.
    site : SiteParams
        ``tissue`` means and ``contrast_jitter`` (log-sd).
    venous : float, default=1.0
        Factor on the venous mimics' intensities (``sinus``, ``cavernous``, ``vessel``), drawn by the
        caller from its own stream (``exp(N(0, site.venous_jitter))``) so the render stream is unchanged.

    Returns
    -------
    dict
        One intensity per key of ``site.tissue`` (``wm`` stays 1).
    """
    keys = sorted(site.tissue)
    draws = np.exp(rng.normal(0.0, site.contrast_jitter, len(keys)))
    out = {k: float(site.tissue[k] * d) for k, d in zip(keys, draws)}
    out["wm"] = 1.0
    out["gm"] = min(out["gm"], 0.92)  # keep GM darker than WM on CE-T1
    for k in _VENOUS:  # bolus timing: all venous mimics together
        if k in out:
            out[k] *= venous
    return out


def tissue_image(rng: np.random.Generator, anat: dict[str, Any], site: SiteParams, spacing: np.ndarray,
                 venous: float = 1.0) -> tuple[np.ndarray, dict[str, float]]:
    """Noise-free intensities of a case (WM = 1), enhancing mimics included.

    Parameters
    ----------
    rng : numpy.random.Generator
        The case's render generator (intensities, texture).
    anat : dict
        :func:`bmstudy.synthetic.anatomy.head_anatomy` output (``lab``, ``prob``, ``brain``, ``mimics``).
    site : SiteParams
        The site's tissue intensities.
    spacing : ndarray
        Voxel size in mm.
    venous : float, default=1.0
        The case's venous-mimic factor (:func:`case_intensities`).

    Returns
    -------
    image : ndarray of float32
    intensities : dict
        The case's drawn tissue intensities.
    """
    t = case_intensities(rng, site, venous)
    lab, pr = anat["lab"], anat["prob"]
    lut = np.array([0.0, t["skin"], t["muscle"], t["skull"], t["diploe"], t["csf"], t["gm"], t["wm"],
                    t["deep_gm"], t["csf"], t["vitreous"], t["fat"]], np.float32)
    img = lut[lab]
    brain = anat["brain"]
    gm_val = t["gm"] + (t["deep_gm"] - t["gm"]) * pr["deep"]
    inner = pr["csf"] * t["csf"] + pr["gm"] * gm_val + pr["wm"] * t["wm"]
    img[brain] = inner[brain]
    tex = smooth_noise(rng, lab.shape, spacing, 2.0)
    img *= 1.0 + 0.03 * tex * brain
    mm = anat["mimics"]
    for key, level in (("dura", t["dura"]), ("venous", t["sinus"])):
        cov = np.clip(mm[key], 0, 1)
        img = img * (1 - cov) + level * cov
    return img.astype(np.float32), t


def _slice_blur(img: np.ndarray, site: SiteParams) -> np.ndarray:
    """Extra blur along the slice (last) axis when the slice is thicker than the voxel."""
    thick = site.slice_thickness_mm
    if not thick or thick <= site.spacing[2]:
        return img
    sigma = np.sqrt(max((thick / 2.355) ** 2 - (site.spacing[2] / 2.355) ** 2, 0.0)) / site.spacing[2]
    return ndimage.gaussian_filter1d(img, sigma, axis=2)


def acquire(rng: np.random.Generator, img: np.ndarray, site: SiteParams, spacing: np.ndarray,
            head_scale: float) -> tuple[np.ndarray, dict[str, Any]]:
    """Stored scan of a painted image: PSF and slice blur, gamma, bias, ghost, Rician noise, scale.

    Parameters
    ----------
    rng : numpy.random.Generator
        The case's render generator.
    img : ndarray of float32
        Painted, noise-free image (white matter = 1).
    site : SiteParams
        ``psf_sigma_vox``, ``slice_thickness_mm``, ``gamma``, ``bias_amplitude``, ``ghosting``,
        ``noise_sigma`` and ``scale`` of the site.
    spacing : ndarray
        Voxel size in mm.
    head_scale : float
        Head size relative to an adult head (sets the bias field's smoothness).

    Returns
    -------
    scan : ndarray of int16
        The scan, clipped to [0, 32767].
    info : dict
        ``noise_sigma``, ``bias_amplitude``, ``ghost`` (drawn acquisition parameters).
    """
    shape = img.shape
    img = ndimage.gaussian_filter(img, site.psf_sigma_vox)
    img = _slice_blur(img, site)
    if site.gamma != 1.0:
        img = np.power(np.clip(img, 0, None), site.gamma)
    bias_amp = site.bias_amplitude * rng.uniform(0.5, 1.5)
    img = img * np.exp(bias_amp * smooth_noise(rng, shape, spacing, 60.0 * max(head_scale, 0.4)))
    ghost = bool(rng.random() < site.ghosting)
    if ghost:  # motion ghost: shifted faint copy along the phase-encoding axis
        img = img + rng.uniform(0.03, 0.08) * np.roll(img, shape[1] // int(rng.integers(3, 6)), axis=1)
    sig = site.noise_sigma * rng.uniform(0.9, 1.1)
    n1 = rng.standard_normal(shape, dtype=np.float32) * sig
    n2 = rng.standard_normal(shape, dtype=np.float32) * sig
    img = np.sqrt((img + n1) ** 2 + n2 ** 2) * site.scale * rng.uniform(0.9, 1.1)
    info = {"noise_sigma": round(float(sig), 4), "bias_amplitude": round(float(bias_amp), 4), "ghost": ghost}
    return np.clip(np.round(img), 0, 32767).astype(np.int16), info
