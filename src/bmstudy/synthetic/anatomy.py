"""Head anatomy of a synthetic case: the real MNI152 brain, deformed per patient, in a procedural skull.

:func:`head_anatomy` maps every voxel of the site's grid (world mm, origin at the volume centre) into
the template (:mod:`~bmstudy.synthetic.template`) through a per-patient transform: global size
(``anatomy_scale`` x a log-normal draw), per-axis scaling, small rotations, left-right asymmetry, a
smooth nonlinear displacement (~2.5 mm, 35 mm correlation) and a radial ventricle expansion (ventricle
size). It samples the template's GM/WM probabilities, deep-grey weight, ventricles, signed envelope
distance and dural/skull-base mimic maps, then draws the layers outside the brain envelope on the
signed distance, with per-patient thickness and smooth variation: CSF (1.5-3.5 mm), inner table,
fatty (bright) diploe, outer table, galea/temporal muscle, subcutaneous fat and skin, plus a neck
below the skull base and the orbits. Labels::

    0 background   1 skin     2 muscle   3 skull (cortical bone)   4 diploe (marrow)   5 CSF
    6 GM           7 WM       8 deep GM  9 ventricle CSF          10 vitreous          11 fat

The random draws happen in a fixed order, so a case's anatomy depends only on its render generator.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from ..plan import SynthParams
from .fields import grid_mm, smooth_noise
from .template import load_template

__all__ = ["TISSUE_LABELS", "head_anatomy", "patient_transform"]

#: Tissue label -> name.
TISSUE_LABELS: dict[int, str] = {
    0: "background", 1: "skin", 2: "muscle", 3: "skull", 4: "diploe", 5: "csf", 6: "gm", 7: "wm",
    8: "deep_gm", 9: "ventricle_csf", 10: "vitreous", 11: "fat",
}
_CHANNELS = ("gm", "wm", "sd", "venous", "dura")


def _rotation(angles_deg: np.ndarray) -> np.ndarray:
    a, b, c = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def patient_transform(rng: np.random.Generator, prof: SynthParams, shape: tuple[int, int, int],
                      spacing: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
    """Template voxel coordinates of every output voxel, and the drawn deformation parameters.

    Parameters
    ----------
    rng : numpy.random.Generator
        The case's render generator.
    prof : SynthParams
        ``anatomy_scale`` (head size relative to the MNI152 head).
    shape : tuple of int
        Output grid.
    spacing : ndarray
        Output voxel size in mm.

    Returns
    -------
    coords : ndarray of shape (3, *shape), float32
        Template voxel coordinates (for :func:`scipy.ndimage.map_coordinates`).
    params : dict
        ``scale``, ``ventricle_k``, ``asymmetry`` (for the case's metadata).
    """
    t = load_template()
    s = prof.anatomy_scale * float(np.exp(rng.normal(-0.08, 0.05)))  # MNI152 is ~8 % larger than an average adult
    axis = 1.0 + rng.normal(0, 0.03, 3)
    rot = _rotation(rng.normal(0, 3.0, 3))
    asym = float(rng.normal(0, 0.02))
    shift = rng.normal(0, 2.0, 3)
    vent_k = float(rng.uniform(-0.1, 0.3))
    x, y, z = grid_mm(shape, spacing)
    x = x * (1.0 - asym * np.tanh(x / 20.0))  # one hemisphere a little larger
    m = rot / (s * axis)[None, :]
    p = [t["centre"][k] + shift[k] + m[k, 0] * x + m[k, 1] * y + m[k, 2] * z for k in range(3)]
    amp = 2.5 / max(s, 0.3)
    for k in range(3):
        p[k] = p[k] + amp * smooth_noise(rng, shape, spacing, 35.0 * s)
    # ventricle size: radial expansion (k > 0) or shrinkage around the ventricles' centre
    cv = np.array([0.0, -10.0, 12.0])
    r2 = sum((p[k] - cv[k]) ** 2 for k in range(3))
    w = (1.0 - vent_k * np.exp(-r2 / (2 * 22.0 ** 2))).astype(np.float32)
    coords = np.stack([np.broadcast_to((cv[k] + (p[k] - cv[k]) * w) - t["origin"][k], shape) for k in range(3)])
    return coords.astype(np.float32), {"scale": round(s, 4), "ventricle_k": round(vent_k, 4), "asymmetry": round(asym, 4)}


def _warp(coords: np.ndarray) -> dict[str, np.ndarray]:
    """Sample the template channels at ``coords`` (linear; outside the template: no tissue, far out)."""
    t = load_template()
    src = {"gm": t["gm"], "wm": t["wm"], "sd": t["sd"], "venous": t["venous"], "dura": t["dura"]}
    out = {}
    for name in _CHANNELS:
        cval = 60.0 if name == "sd" else 0.0
        out[name] = ndimage.map_coordinates(src[name], coords, order=1, mode="constant", cval=cval,
                                            prefilter=False).astype(np.float32)
    return out


def _outer_layers(rng: np.random.Generator, sd: np.ndarray, spacing: np.ndarray, s: float,
                  zt: np.ndarray, xs: np.ndarray, lab: np.ndarray) -> dict[str, float]:
    """CSF, skull tables, diploe, muscle, fat and skin on the signed envelope distance (mm, scaled)."""
    shape = sd.shape
    var = 1.0 + 0.15 * smooth_noise(rng, shape, spacing, 30.0 * s)
    th = {"csf": rng.uniform(1.5, 3.5), "inner": rng.uniform(1.2, 2.0), "diploe": rng.uniform(2.0, 4.5),
          "outer": rng.uniform(1.2, 2.0), "galea": rng.uniform(1.0, 2.0), "fat": rng.uniform(3.0, 6.5),
          "skin": rng.uniform(1.5, 2.5)}
    d = sd * s  # template mm -> patient mm
    # temporal muscle: thick on the sides above the zygoma
    temporal = (rng.uniform(3, 6) * np.exp(-((np.abs(xs) - 60 * s) / (25 * s)) ** 2)
                * np.exp(-((zt + 5.0) / 25.0) ** 2)).astype(np.float32)
    # at least ~one voxel per layer (the tiny preset's half-size heads would lose the bone tables otherwise)
    vox = float(np.max(spacing))
    keys = ("csf", "inner", "diploe", "outer", "galea", "fat", "skin")
    edges = np.cumsum([max(th[k] * s, (1.5 if k in ("inner", "outer") else 0.8) * vox) for k in keys])
    labels = (5, 3, 4, 3, 2, 11, 1)
    out = d > 0
    lo = np.zeros(shape, np.float32)
    for k, (e, lv) in enumerate(zip(edges, labels)):
        hi = e * var + (temporal if k >= 4 else 0.0)
        lab[out & (d > lo) & (d <= hi)] = lv
        lo = hi
    # neck below the skull base: soft tissue (muscle) with fat
    neck = (zt < -58.0) & (lab == 0) & (d < 18.0 * s)
    lab[neck] = 2
    lab[neck & (d > 14.0 * s)] = 11
    return {k: round(float(v), 3) for k, v in th.items()}


def _orbits(s: float, p: list[np.ndarray], lab: np.ndarray, env: np.ndarray) -> None:
    """Vitreous (dark) in bright orbital fat, in front of the frontal lobes (template coordinates)."""
    for sx in (-1.0, 1.0):
        d = np.sqrt((p[0] - sx * 32.0) ** 2 + (p[1] - 48.0) ** 2 + (p[2] + 40.0) ** 2) * s
        free = ~env
        lab[free & (d < 16.0 * s)] = 11
        lab[free & (d < 11.5 * s)] = 10


def head_anatomy(rng: np.random.Generator, prof: SynthParams, shape: tuple[int, int, int],
                 spacing: np.ndarray) -> dict[str, Any]:
    """Tissue labels and partial-volume maps of one deformed MNI152 head on the site's grid.

    Parameters
    ----------
    rng : numpy.random.Generator
        The case's render generator.
    prof : SynthParams
        Cohort parameters (``anatomy_scale``).
    shape : tuple of int
        Voxel grid of the site.
    spacing : ndarray
        Voxel size of the site in mm.

    Returns
    -------
    dict
        ``lab`` (uint8, :data:`TISSUE_LABELS`), ``brain`` (bool: the brain envelope, the true brain
        mask), ``prob`` (float32 ``gm``, ``wm``, ``csf``, ``deep`` partial-volume maps), ``vent``
        (bool ventricles), ``depth`` (mm inside the brain envelope, 0 outside), ``mimics`` (float32
        coverage of ``venous`` (dural and cavernous sinuses, pituitary) and ``dura`` (falx/tentorium)), ``deform``
        (drawn parameters), ``thickness`` (layer thicknesses, mm), ``tcoords_z`` (template z, mm).
    """
    coords, deform = patient_transform(rng, prof, shape, spacing)
    w = _warp(coords)
    t = load_template()
    s = float(deform["scale"])
    brain = w["sd"] <= 0.0
    gm, wm = w["gm"] * brain, w["wm"] * brain
    csf = np.clip(1.0 - gm - wm, 0, 1) * brain
    lab = np.zeros(shape, np.uint8)
    zt = coords[2] + np.float32(t["origin"][2])
    xt = coords[0] + np.float32(t["origin"][0])
    xs = xt * s
    tdepth = -w["sd"]  # template mm inside the envelope
    # ventricles and deep grey nuclei as in the template (module template): deep CSF near the midline
    vent = brain & (csf > 0.55) & (tdepth > 10.0) & (np.abs(xt) < 28.0) & (zt > -30.0)
    deep = ndimage.gaussian_filter(((gm > 0.45) & (tdepth > 17.0)).astype(np.float32), 1.0 / spacing)
    thickness = _outer_layers(rng, w["sd"], spacing, s, zt, xs, lab)
    p = [coords[k] + np.float32(t["origin"][k]) for k in range(3)]
    _orbits(s, p, lab, brain)
    tis = np.argmax(np.stack([csf, gm, wm]), 0)
    lab[brain] = np.array([5, 6, 7], np.uint8)[tis[brain]]
    lab[brain & (lab == 6) & (deep > 0.5)] = 8
    lab[vent & (csf > 0.4)] = 9
    depth = np.clip(-w["sd"], 0, None) * s
    return dict(lab=lab, brain=brain, prob={"gm": gm, "wm": wm, "csf": csf, "deep": deep * brain},
                vent=vent & (csf > 0.4), depth=depth,
                mimics={"venous": w["venous"], "dura": w["dura"]},
                deform=deform, thickness=thickness, tcoords_z=zt)
