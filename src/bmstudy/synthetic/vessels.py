"""Vessel mimics of the synthetic cases: bright tubular structures that are *not* metastases.

Contrast-enhanced T1 shows enhancing vessels a segmentation model must not call lesions. The dural
sinuses, falx/tentorium, pituitary and cavernous sinuses come from the template
(:mod:`~bmstudy.synthetic.template`, painted by :func:`~bmstudy.synthetic.acquisition.tissue_image`);
:func:`render_vessels` adds 5-10 cortical veins (random walks in the superficial sulci and cortex),
veins running along lesions (``vessel_touch_rate`` per lesion: the tube touches the lesion but never
enters its mask, the paper's false-positive source) and the choroid plexus in the lateral ventricles,
each with partial-volume edges, and returns a map of all mimics' cores (so tests can check the lesion
mask never contains them).
"""
from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from ..plan import SiteParams

__all__ = ["paint_tube", "random_curve", "render_vessels"]


def paint_tube(img: np.ndarray, pts_mm_vox: np.ndarray, radius: float, value: float, spacing: np.ndarray,
               forbid: np.ndarray | None = None, record: np.ndarray | None = None) -> None:
    """Paint a bright tube of ``radius`` mm along voxel-coordinate points (partial-volume edges).

    Parameters
    ----------
    img : ndarray of float32
        Image painted in place.
    pts_mm_vox : ndarray of shape (n, 3)
        Centre line in voxel coordinates (fewer than 2 points: nothing is painted).
    radius : float
        Tube radius in mm.
    value : float
        Intensity of the tube (white matter = 1).
    spacing : ndarray
        Voxel size in mm.
    forbid : ndarray of bool, optional
        Voxels the tube must not touch.
    record : ndarray of bool, optional
        Set to True where the tube covers >= half a voxel.
    """
    from scipy.spatial import cKDTree

    if len(pts_mm_vox) < 2:
        return
    lo = np.maximum(np.floor(pts_mm_vox.min(0) - (radius + 2) / spacing).astype(int), 0)
    hi = np.minimum(np.ceil(pts_mm_vox.max(0) + (radius + 2) / spacing).astype(int) + 1, img.shape)
    sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    grid = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij"), -1).reshape(-1, 3)
    dist, _ = cKDTree(pts_mm_vox * spacing).query(grid * spacing, distance_upper_bound=radius + 2)
    frac = np.clip((radius + 0.5 * float(np.min(spacing)) - dist) / float(np.min(spacing)), 0, 1)
    frac = frac.reshape(img[sl].shape).astype(np.float32)
    if forbid is not None:
        frac[forbid[sl]] = 0
    img[sl] = img[sl] * (1 - frac) + value * frac
    if record is not None:
        record[sl] |= frac >= 0.5


def random_curve(rng: np.random.Generator, start: np.ndarray, length_mm: float, spacing: np.ndarray,
                 ok: np.ndarray, step_mm: float = 0.3) -> np.ndarray:
    """Smooth random walk (voxel coordinates) that stops when it leaves ``ok``.

    Parameters
    ----------
    rng : numpy.random.Generator
        Draws the initial direction and the turns.
    start : ndarray
        Start voxel.
    length_mm : float
        Maximal length in mm.
    spacing : ndarray
        Voxel size in mm.
    ok : ndarray of bool
        Where the walk may go.
    step_mm : float, default=0.3
        Step length in mm.

    Returns
    -------
    ndarray of shape (n, 3)
        The points walked, ``start`` first.
    """
    d = rng.normal(size=3)
    d /= np.linalg.norm(d)
    p = start.astype(np.float64)
    pts = [p.copy()]
    for _ in range(int(length_mm / step_mm)):
        d = d + rng.normal(0, 0.08, 3)
        d /= np.linalg.norm(d)
        p = p + d * step_mm / spacing
        q = np.round(p).astype(int)
        if np.any(q < 0) or np.any(q >= ok.shape) or not ok[tuple(q)]:
            break
        pts.append(p.copy())
    return np.asarray(pts)


def _cortical_vessels(rng: np.random.Generator, anat: dict[str, Any], ok: np.ndarray, img: np.ndarray,
                      site: SiteParams, spacing: np.ndarray, s: float, rec: np.ndarray) -> int:
    """5-10 thin bright tubes starting in superficial sulci/cortex; return how many."""
    lab = anat["lab"]
    cand = np.argwhere(ok & ((lab == 5) | (lab == 6)) & (anat["depth"] < 8.0))
    target, made = int(rng.integers(5, 11)), 0
    for _ in range(6 * target):  # walks that leave the brain at once are retried
        if len(cand) == 0 or made == target:
            break
        start = cand[rng.integers(len(cand))]
        pts = random_curve(rng, start, rng.uniform(15, 45) * max(s, 0.5), spacing, ok)
        if len(pts) * 0.3 >= 4.0:  # at least 4 mm long
            paint_tube(img, pts, rng.uniform(0.6, 1.3), site.tissue["vessel"] * rng.uniform(0.8, 1.1), spacing,
                       forbid=~ok, record=rec)
            made += 1
    return made


def _touching_vessels(rng: np.random.Generator, anat: dict[str, Any], img: np.ndarray, lesion_labels: np.ndarray,
                      site: SiteParams, spacing: np.ndarray, s: float, rate: float, rec: np.ndarray) -> list[int]:
    """Veins that start on a lesion's surface and run away from it; return the touched lesion labels."""
    touched = []
    mask = lesion_labels > 0
    ok = anat["brain"] & ~mask & (anat["lab"] != 9)
    for k in range(1, int(lesion_labels.max()) + 1):
        if rng.random() >= rate:
            continue
        les = lesion_labels == k
        shell = np.argwhere(ndimage.binary_dilation(les, iterations=1) & ok)
        if len(shell) == 0:
            continue
        pts = random_curve(rng, shell[rng.integers(len(shell))], rng.uniform(12, 30) * max(s, 0.5), spacing, ok)
        if len(pts) >= 8:
            paint_tube(img, pts, rng.uniform(0.6, 1.1), site.tissue["vessel"] * rng.uniform(0.8, 1.05), spacing,
                       forbid=mask, record=rec)
            touched.append(k)
    return touched


def render_vessels(rng: np.random.Generator, anat: dict[str, Any], img: np.ndarray, lesion_labels: np.ndarray,
                   site: SiteParams, spacing: np.ndarray, s: float, touch_rate: float = 0.3
                   ) -> tuple[int, np.ndarray, list[int]]:
    """Paint cortical veins, lesion-touching veins and choroid plexus into ``img`` (in place).

    Parameters
    ----------
    rng : numpy.random.Generator
        The case's render generator.
    anat : dict
        :func:`bmstudy.synthetic.anatomy.head_anatomy` output.
    img : ndarray of float32
        Image painted in place.
    lesion_labels : ndarray
        Lesion label map (free cortical veins keep ~2.5 mm from lesions; touching veins start on them).
    site : SiteParams
        Vessel and plexus intensities of the site.
    spacing : ndarray
        Voxel size in mm.
    s : float
        Head scale (1 = adult).
    touch_rate : float, default=0.3
        Probability per lesion of a vein running along it.

    Returns
    -------
    n_vessels : int
        Number of tubular mimics painted (veins and plexus; the template's sinuses not counted).
    cores : ndarray of bool
        Where any mimic (template sinuses/dura/pituitary included) covers >= half a voxel.
    touched : list of int
        Labels of the lesions a vein touches.
    """
    lab, brain = anat["lab"], anat["brain"]
    mask = lesion_labels > 0
    rec = np.zeros(lab.shape, bool)
    for cov in anat["mimics"].values():
        rec |= cov >= 0.5
    near_lesion = ndimage.binary_dilation(mask, iterations=max(2, int(round(2.5 / float(np.min(spacing))))))
    ok = brain & ~near_lesion & (lab != 9)
    n = _cortical_vessels(rng, anat, ok, img, site, spacing, s, rec)
    touched = _touching_vessels(rng, anat, img, lesion_labels, site, spacing, s, touch_rate, rec)
    n += len(touched)
    vent = anat["vent"] & ~near_lesion
    vc = np.argwhere(vent)
    for _ in range(2):  # choroid plexus inside the lateral ventricles
        if len(vc) == 0:
            break
        pts = random_curve(rng, vc[rng.integers(len(vc))], 15 * max(s, 0.5), spacing, vent)
        if len(pts) > 5:
            paint_tube(img, pts, max(0.8, 2.0 * s), site.tissue["plexus"], spacing, forbid=~vent, record=rec)
            n += 1
    rec &= ~mask
    return n, rec, touched
