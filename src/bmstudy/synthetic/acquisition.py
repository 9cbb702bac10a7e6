"""Acquisition model of the synthetic scans: tissue intensities, partial volume, bias, noise, site scale.

:func:`tissue_image` maps tissue labels to a site's CE-T1 intensities (relative to white matter = 1,
with subject-level variation and a fine parenchymal texture); :func:`acquire` turns the painted image
(anatomy + lesions + vessels) into the stored scan: point-spread blur (partial volume), the site's
intensity response (gamma), a smooth multiplicative bias field, Rician noise and the scanner's
intensity scale, rounded to int16. The site differences (contrast, noise, bias, scale) live in
:class:`bmstudy.plan.SiteParams`.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..plan import SiteParams
from .fields import smooth_noise

__all__ = ["tissue_image", "acquire"]


def tissue_image(rng: np.random.Generator, lab: np.ndarray, site: SiteParams, spacing: np.ndarray) -> np.ndarray:
    """Noise-free intensities of the tissue labels at ``site`` (white matter = 1).

    Parameters
    ----------
    rng : numpy.random.Generator
        The case's render generator (draws the subject-level variation and the texture).
    lab : ndarray of uint8
        Tissue labels (see :data:`bmstudy.synthetic.anatomy.TISSUE_LABELS`).
    site : SiteParams
        The site's tissue intensities.
    spacing : ndarray
        Voxel size in mm.

    Returns
    -------
    ndarray of float32
        Image of ``lab``'s shape.
    """
    t = site.tissue
    lut = np.array([0.0, t["scalp"], t["muscle"], t["skull"], t["diploe"], t["csf"], t["gm"], t["wm"],
                    t["deep_gm"], t["csf"], t["vitreous"], t["scalp"]], np.float32)
    lut[1:] *= rng.uniform(0.97, 1.03, len(lut) - 1).astype(np.float32)  # subject-level variation
    img = lut[lab]
    tex = smooth_noise(rng, lab.shape, spacing, 2.0)
    img *= 1.0 + 0.035 * tex * ((lab >= 6) & (lab <= 8))
    return img


def acquire(rng: np.random.Generator, img: np.ndarray, site: SiteParams, spacing: np.ndarray,
            head_scale: float) -> np.ndarray:
    """Stored scan of a painted image: PSF blur, gamma, bias field, Rician noise, scanner scale.

    Parameters
    ----------
    rng : numpy.random.Generator
        The case's render generator (draws the bias field, the noise and the scale jitter).
    img : ndarray of float32
        Painted, noise-free image (white matter = 1).
    site : SiteParams
        ``psf_sigma_vox``, ``gamma``, ``bias_amplitude``, ``noise_sigma`` and ``scale`` of the site.
    spacing : ndarray
        Voxel size in mm.
    head_scale : float
        Head size relative to an adult head (sets the bias field's smoothness).

    Returns
    -------
    ndarray of int16
        The scan, clipped to [0, 32767].
    """
    shape = img.shape
    img = ndimage.gaussian_filter(img, site.psf_sigma_vox)
    if site.gamma != 1.0:
        img = np.power(np.clip(img, 0, None), site.gamma)
    bias = np.exp(site.bias_amplitude * smooth_noise(rng, shape, spacing, 60.0 * max(head_scale, 0.4)))
    img = img * bias
    sig = site.noise_sigma
    n1 = rng.standard_normal(shape, dtype=np.float32) * sig
    n2 = rng.standard_normal(shape, dtype=np.float32) * sig
    img = np.sqrt((img + n1) ** 2 + n2 ** 2) * site.scale * rng.uniform(0.9, 1.1)
    return np.clip(np.round(img), 0, 32767).astype(np.int16)
