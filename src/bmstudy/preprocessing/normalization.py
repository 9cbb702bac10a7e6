"""Intensity normalisation: Z-score with statistics over the brain (or the whole volume).

Why Z-score inside the brain rather than over the whole volume: the background (air, skull, neck)
fraction varies with field of view and scanner, so whole-volume statistics shift with acquisition
rather than with tissue contrast. Brain-only statistics make intensities comparable across sites
(nnU-Net does the same for MRI with non-zero masks). ``'zscore_volume'`` is available for
comparison, ``'none'`` keeps the intensities.
"""
from __future__ import annotations

import numpy as np

__all__ = ["zscore"]


def zscore(image: np.ndarray, brain: np.ndarray, method: str = "zscore_brain") -> tuple[np.ndarray, float, float]:
    """Z-score ``image`` with mean/std over brain voxels (or the whole volume); background set to 0.

    Parameters
    ----------
    image : ndarray
        3-D intensities.
    brain : ndarray
        Brain mask on the same grid (non-zero = brain).
    method : {'zscore_brain', 'zscore_volume', 'none'}, default='zscore_brain'
        Where the statistics come from; ``'none'`` only zeroes the background (mean 0, std 1 recorded).

    Returns
    -------
    image : ndarray of float32
        Normalised intensities, 0 outside the brain.
    mean, std : float
        The statistics used (float64 accumulations).

    Raises
    ------
    ValueError
        For an empty brain mask, or zero intensity spread (constant intensities inside the brain).
    """
    sel = brain > 0
    if not sel.any():
        raise ValueError("empty brain mask: cannot normalise")
    if method == "none":
        out = image.astype(np.float32, copy=True)
        out[~sel] = 0
        return out, 0.0, 1.0
    values = image[sel] if method == "zscore_brain" else image
    mean = float(np.mean(values, dtype=np.float64))
    std = float(np.std(values, dtype=np.float64))
    if not std > 0:
        raise ValueError(f"constant intensities inside the brain (value {mean:g}); cannot Z-score")
    out = image.astype(np.float32, copy=True)  # in place below: no full-size temporaries
    out -= np.float32(mean)
    out /= np.float32(std)
    out[~sel] = 0
    return out, mean, std
