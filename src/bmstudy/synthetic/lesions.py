"""Metastases of the synthetic cases: placement, shapes, enhancement patterns and oedema.

:func:`render_lesions` places the planned lesions (~80 % with their centre in white matter at the
grey-white junction, separated by >= 3 mm unless planned ``touching`` an earlier lesion), paints the peritumoral vasogenic oedema (darker, stronger
in white matter, *not* in the mask), then each lesion in its enhancement pattern:

* ``uniform``: nodular, homogeneously enhancing ellipsoid;
* ``ring``: enhancing rim around a necrotic (non-enhancing) centre;
* ``irregular``: lobulated body with satellite lobes and patchy non-enhancing parts;

and the variants ``cystic`` (thin rim around a large fluid core) and ``haemorrhagic`` (intrinsically
T1-bright blood products in a partly dark rim). :func:`annotator_mask` optionally jitters the "manual"
mask's boundary smoothly (annotator variability).

The lesion mask holds the whole metastases (necrotic core included, oedema excluded), one 6-connected
component per planned lesion (touching lesions share one), never larger than the planned diameter and
always inside the brain.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from ..plan import SiteParams
from ..utils import get_logger
from .fields import box_coords_mm, local_box, smooth_noise
from .plans import CasePlan, LesionPlan

log = get_logger("bmstudy.synthetic.lesions")

__all__ = ["place_lesions", "lesion_shape", "render_lesions", "annotator_mask"]


def _draw_centre(rng: np.random.Generator, cand: np.ndarray, r: float, centres: list[np.ndarray],
                 radii: list[float], spacing: np.ndarray, gap: float) -> np.ndarray | None:
    """Up to 200 random candidates; the first far enough from the placed lesions, or None."""
    for _ in range(200):
        c = cand[rng.integers(len(cand))].astype(np.float64) + rng.uniform(-0.5, 0.5, 3)
        if all(np.linalg.norm((c - c2) * spacing) > r + r2 + gap for c2, r2 in zip(centres, radii)):
            return c
    return None


def _touching_centre(rng: np.random.Generator, r: float, centres: list[np.ndarray], radii: list[float],
                     pool: np.ndarray, spacing: np.ndarray) -> np.ndarray | None:
    """A centre at ~0.8 (r + r_j) from a random earlier lesion j (the two masks touch), or None."""
    j = int(rng.integers(len(centres)))
    for _ in range(60):
        u = rng.normal(size=3)
        u /= np.linalg.norm(u)
        c = centres[j] + u * 0.8 * (r + radii[j]) / spacing
        q = np.round(c).astype(int)
        if np.any(q < 0) or np.any(q >= pool.shape) or not pool[tuple(q)]:
            continue
        others = [k for k in range(len(centres)) if k != j]
        if all(np.linalg.norm((c - centres[k]) * spacing) > r + radii[k] + 3.0 for k in others):
            return c
    return None


def place_lesions(rng: np.random.Generator, plan: CasePlan, anat: dict[str, Any], spacing: np.ndarray
                  ) -> list[np.ndarray]:
    """Centres (voxel coordinates) for the planned lesions: ~80 % at the grey-white junction.

    Parameters
    ----------
    rng : numpy.random.Generator
        The case's render generator.
    plan : CasePlan
        The case (lesion diameters, ``touching`` flags, patient id for messages).
    anat : dict
        :func:`bmstudy.synthetic.anatomy.head_anatomy` output (``lab``, ``prob``, ``depth``).
    spacing : ndarray
        Voxel size in mm.

    Returns
    -------
    list of ndarray
        One centre per planned lesion, in plan order.

    Raises
    ------
    RuntimeError
        If a lesion fits nowhere in the brain (profile with too large or too many lesions).
    """
    lab, depth = anat["lab"], anat["depth"]
    wm = lab == 7
    # "at the junction": white matter where the smoothed grey-matter probability is still noticeable
    gm_near = ndimage.gaussian_filter(anat["prob"]["gm"], 2.0 / spacing) > 0.12
    parenchyma = (lab >= 6) & (lab <= 8)
    parenchyma &= ~ndimage.binary_dilation(lab == 9, iterations=1)
    centres: list[np.ndarray] = []
    radii: list[float] = []
    for les in plan.lesions:
        r = les.diameter_mm / 2.0
        need = r + 1.5 + 0.5 * float(np.max(spacing))
        placed = None
        pools = ["junction", "parenchyma", "brain"] if rng.random() < 0.8 else ["parenchyma", "brain"]
        for pool_name in pools:
            base = {"junction": wm & gm_near, "parenchyma": parenchyma, "brain": parenchyma | (lab == 5)}[pool_name]
            pool = base & (depth > need)
            if not pool.any():
                continue
            if les.touching and centres:
                placed = _touching_centre(rng, r, centres, radii, pool, spacing)
            if placed is None:
                placed = _draw_centre(rng, np.argwhere(pool), r, centres, radii, spacing, 3.0)
            if placed is not None:
                centres.append(placed)
                radii.append(r)
                break
        if placed is None:
            raise RuntimeError(f"{plan.patient_id}: cannot place lesion of {les.diameter_mm} mm "
                               f"({len(centres)} of {plan.n_lesions} placed); reduce max_diameter_mm/max_lesions")
    return centres


def _irregular(rng: np.random.Generator, R: float, coords: list[np.ndarray], noise: np.ndarray,
               dist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lobulated body + 2-4 satellite lobes; patchy non-enhancing parts when R >= 4 mm."""
    x, y, z = coords
    a = R * rng.uniform(0.6, 0.72)
    body = (np.sqrt((x / (a * rng.uniform(0.85, 1.0))) ** 2 + (y / a) ** 2 + (z / (a * rng.uniform(0.85, 1.0))) ** 2)
            * (1 + 0.12 * noise)) <= 1.0
    inside = body.copy()
    for _ in range(int(rng.integers(2, 5))):
        u = rng.normal(size=3)
        u /= np.linalg.norm(u)
        dc = a * rng.uniform(0.55, 0.9)
        rl = min(R - dc, a * rng.uniform(0.45, 0.75))
        if rl <= 0.3:
            continue
        d2 = np.sqrt((x - u[0] * dc) ** 2 + (y - u[1] * dc) ** 2 + (z - u[2] * dc) ** 2)
        inside |= d2 * (1 + 0.1 * noise) <= rl
    inside &= dist <= R  # never exceed the planned size
    enh = np.clip(0.78 + 0.22 * rng.uniform(0.5, 1.0) + 0.12 * noise, 0.55, 1.15)
    if R >= 4:  # patchy non-enhancing parts
        enh = np.where(noise > 1.1, 0.35, enh)
    return inside, enh


def _ellipsoid(rng: np.random.Generator, R: float, pattern: str, coords: list[np.ndarray], noise: np.ndarray,
               dist: np.ndarray, variant: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Nodular ellipsoid; ``ring``: necrotic centre in an enhancing rim; cystic/haemorrhagic variants."""
    x, y, z = coords
    ax = R * np.array([rng.uniform(0.85, 1.0), rng.uniform(0.85, 1.0), 1.0])
    e = np.sqrt((x / ax[0]) ** 2 + (y / ax[1]) ** 2 + (z / ax[2]) ** 2)
    inside = (e * (1 + 0.04 * noise) <= 1.0) & (dist <= R)
    enh = np.clip(1.0 + 0.05 * noise, 0.85, 1.15)
    if pattern == "ring" or variant == "cystic":
        rim = (max(1.0, rng.uniform(0.08, 0.15) * R) if variant == "cystic" else max(1.5, rng.uniform(0.22, 0.35) * R)) / R
        core = e * (1 + 0.05 * noise) < 1.0 - rim
        enh = np.where(core, -1.0 if variant == "cystic" else 0.0, enh)  # -1: fluid (CSF-like)
    elif variant == "haemorrhagic":  # blood products: patchy intrinsic brightness, partly dark rim
        enh = np.where(noise > 0.6, 1.25, np.where(e > 0.85, 0.2, enh))
    return inside, enh


def _centre_voxel(coords: list[np.ndarray]) -> tuple[int, ...]:
    """Index of the box voxel nearest the lesion centre (coordinates in mm relative to it)."""
    return tuple(int(np.argmin(np.abs(c.ravel()))) for c in coords)


def lesion_shape(rng: np.random.Generator, les: LesionPlan, coords: list[np.ndarray], spacing: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Boolean lesion mask and relative enhancement (1 = full, necrosis ~0) in a local box.

    Parameters
    ----------
    rng : numpy.random.Generator
        The case's render generator.
    les : LesionPlan
        Diameter and enhancement pattern.
    coords : list of ndarray
        Box coordinates in mm relative to the lesion centre (:func:`~bmstudy.synthetic.fields.box_coords_mm`).
    spacing : ndarray
        Voxel size in mm.

    Returns
    -------
    inside : ndarray of bool
        One 6-connected component containing the centre voxel (always >= 1 voxel).
    enhancement : ndarray of float32
        Relative enhancement per voxel.
    """
    x, y, z = coords
    R = les.diameter_mm / 2.0
    box_shape = np.broadcast_shapes(x.shape, y.shape, z.shape)
    noise = rng.standard_normal(box_shape).astype(np.float32)
    noise = ndimage.gaussian_filter(noise, max(0.8, 0.15 * R / float(np.min(spacing))))
    noise /= noise.std() + 1e-6
    dist = np.sqrt(x * x + y * y + z * z)
    if les.pattern == "irregular":
        inside, enh = _irregular(rng, R, coords, noise, dist)
    else:
        inside, enh = _ellipsoid(rng, R, les.pattern, coords, noise, dist, les.variant)
    # one lesion = one (6-connected) component containing the centre; always >= 1 voxel
    centre = _centre_voxel(coords)
    inside[centre] = True
    lab, _ = ndimage.label(inside)
    inside = lab == lab[centre]
    return inside, enh.astype(np.float32)


def _paint_oedema(rng: np.random.Generator, plan: CasePlan, centres: list[np.ndarray], lab: np.ndarray,
                  img: np.ndarray, spacing: np.ndarray) -> None:
    """Darken the parenchyma around every lesion (vasogenic oedema, stronger in white matter)."""
    parenchyma = (lab >= 6) & (lab <= 8)
    for les, c in zip(plan.lesions, centres):
        R = les.diameter_mm / 2.0
        ext = R * rng.uniform(0.3, 1.0) + (0.8 if R > 2 else 0.0)
        sl, _ = local_box(c, R + ext + 2, spacing, lab.shape)
        coords = box_coords_mm(sl, c, spacing)
        d = np.sqrt(sum(q * q for q in coords))
        wob = ndimage.gaussian_filter(rng.standard_normal(d.shape).astype(np.float32), 1.5)
        wob /= wob.std() + 1e-6
        oed = (d * (1 + 0.15 * wob) <= R + ext) & parenchyma[sl]
        # vasogenic oedema spreads along white matter; grey matter is spared more
        factor = np.where(lab[sl] == 7, 0.76, 0.9).astype(np.float32)
        img[sl] = np.where(oed, img[sl] * factor, img[sl])


def render_lesions(rng: np.random.Generator, plan: CasePlan, anat: dict[str, Any], img: np.ndarray,
                   site: SiteParams, spacing: np.ndarray) -> tuple[np.ndarray, list[dict[str, Any]], np.ndarray]:
    """Place the planned lesions, paint oedema and lesions into ``img`` (in place); return the mask.

    Parameters
    ----------
    rng : numpy.random.Generator
        The case's render generator.
    plan : CasePlan
        The planned lesions.
    anat : dict
        :func:`bmstudy.synthetic.anatomy.head_anatomy` output.
    img : ndarray of float32
        Tissue image (white matter = 1), modified in place.
    site : SiteParams
        Enhancement range and necrosis level of the site.
    spacing : ndarray
        Voxel size in mm.

    Returns
    -------
    mask : ndarray of uint8
        1 inside the metastases (necrotic core included, oedema excluded).
    lesions : list of dict
        Per lesion: ``label``, ``center_vox``, ``diameter_mm``, ``pattern``, ``variant``, ``touching``,
        ``n_voxels``, ``clipped_voxels`` (voxels outside the brain cut off, 0 for nearly every lesion).
    labels : ndarray of uint8
        Lesion ``k + 1`` where lesion k was painted (a later lesion overwrites a touching earlier one).

    Raises
    ------
    RuntimeError
        If a lesion cannot be placed, or the mask still leaves the brain (a bug).
    """
    lab, brain = anat["lab"], anat["brain"]
    shape = lab.shape
    mask = np.zeros(shape, np.uint8)
    labels = np.zeros(shape, np.uint8)
    centres = place_lesions(rng, plan, anat, spacing)
    info = []
    wm_level = site.tissue["wm"]
    # oedema first (all lesions), then the lesions on top
    _paint_oedema(rng, plan, centres, lab, img, spacing)
    for k, (les, c) in enumerate(zip(plan.lesions, centres)):
        R = les.diameter_mm / 2.0
        sl, _ = local_box(c, R + 1, spacing, shape)
        coords = box_coords_mm(sl, c, spacing)
        inside, enh = lesion_shape(rng, les, coords, spacing)
        # The placement depth is the template's distance scaled by the patient's size, which the
        # patient's nonlinear warp can exceed locally: a lesion at the cortex may then overhang the
        # envelope. It is clipped to the brain (a lesion abutting the pial surface), keeping the
        # component of its centre; lesions that fit (nearly all) are unchanged and draw no randomness.
        clipped = int((inside & ~brain[sl]).sum())
        if clipped:  # the centre voxel is in the brain (placement draws it from the brain's depth map)
            cl, _ = ndimage.label(inside & brain[sl])
            inside = cl == cl[_centre_voxel(coords)]
            log.debug("%s: lesion %d overhung the brain by %d voxels; clipped", plan.patient_id, k + 1, clipped)
        peak = wm_level * rng.uniform(*site.enhancement)
        nec = site.tissue["necrosis"] * rng.uniform(0.8, 1.2)
        val = np.where(enh < 0, site.tissue["csf"], nec + np.clip(enh, 0, None) * (peak - nec))
        img[sl] = np.where(inside, val, img[sl])
        mask[sl][inside] = 1
        labels[sl][inside] = k + 1
        info.append({"label": k + 1, "center_vox": [float(v) for v in c], "diameter_mm": les.diameter_mm,
                     "pattern": les.pattern, "variant": les.variant, "touching": les.touching,
                     "n_voxels": int(inside.sum()), "clipped_voxels": clipped})
    if np.any(mask & ~brain):
        raise RuntimeError(f"{plan.patient_id}: a lesion leaves the brain mask (placement bug)")
    return mask, info, labels


def annotator_mask(rng: np.random.Generator, mask: np.ndarray, brain: np.ndarray, spacing: np.ndarray,
                   jitter_mm: float) -> np.ndarray:
    """The "manual" mask: ``mask`` with its boundary moved by a smooth random field (annotator variability).

    Parameters
    ----------
    rng : numpy.random.Generator
        The case's render generator.
    mask : ndarray of uint8
        The rendered lesion mask.
    brain : ndarray of bool
        The brain (the jittered mask stays inside it).
    spacing : ndarray
        Voxel size in mm.
    jitter_mm : float
        Standard deviation of the boundary displacement in mm (0: ``mask`` unchanged).

    Returns
    -------
    ndarray of uint8
        Jittered mask (every lesion keeps at least its core).
    """
    if jitter_mm <= 0 or not mask.any():
        return mask
    nz = np.argwhere(mask)
    pad = np.ceil((3 * jitter_mm + 2) / spacing).astype(int)
    lo, hi = np.maximum(nz.min(0) - pad, 0), np.minimum(nz.max(0) + pad + 1, mask.shape)
    sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    m = mask[sl].astype(bool)
    sd = (ndimage.distance_transform_edt(~m, sampling=spacing) - ndimage.distance_transform_edt(m, sampling=spacing))
    field = jitter_mm * smooth_noise(rng, m.shape, spacing, 5.0)
    core = ndimage.binary_erosion(m, iterations=1) if m.sum() > 27 else m
    out = mask.copy()
    out[sl] = (((sd + field) < 0.0) | core) & brain[sl]
    return out
