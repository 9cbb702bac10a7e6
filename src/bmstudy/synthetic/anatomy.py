"""Procedural head anatomy: the tissue label volume every synthetic case is rendered from.

:func:`head_anatomy` builds, in physical millimetres, a deformed ellipsoidal head with scalp,
temporal muscle, dark cortical bone with diploe, a CSF layer, folded grey matter over white matter
(sulci, interhemispheric fissure), the cerebellum with folia and tentorium, deep grey nuclei, lateral
and third ventricles, and the orbits. Labels::

    0 background   1 scalp   2 muscle   3 skull   4 diploe   5 CSF   6 GM   7 WM
    8 deep GM      9 ventricle CSF      10 vitreous      11 orbital fat

The random draws happen in a fixed order (head shape, folding fields, ventricle size), so a case's
anatomy depends only on its render generator.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..plan import SynthParams
from .fields import grid_mm, smooth_noise

__all__ = ["TISSUE_LABELS", "head_anatomy"]

#: Tissue label -> name.
TISSUE_LABELS: dict[int, str] = {
    0: "background", 1: "scalp", 2: "muscle", 3: "skull", 4: "diploe", 5: "csf", 6: "gm", 7: "wm",
    8: "deep_gm", 9: "ventricle_csf", 10: "vitreous", 11: "orbital_fat",
}


@dataclass
class _Head:
    """Geometry shared by the anatomy builders (coordinates in mm, relative to the head centre)."""

    xs: np.ndarray
    ys: np.ndarray
    zs: np.ndarray
    axes: np.ndarray  # head semi-axes, mm
    shift: np.ndarray  # head centre offset, mm
    deform: np.ndarray  # smooth shape deformation field
    rho: np.ndarray  # normalised (deformed) ellipsoidal radius, 1 = skin surface
    R: float  # mean head semi-axis, mm
    rho_brain: float  # rho of the brain surface
    b_axes: np.ndarray  # brain semi-axes, mm
    s: float  # head scale (paper profile = 1)


def _head_layers(rng: np.random.Generator, prof: SynthParams, shape: tuple[int, int, int],
                 spacing: np.ndarray, lab: np.ndarray) -> tuple[_Head, np.ndarray]:
    """Scalp, muscle, skull with diploe and the CSF layer (labels 1-5); return the geometry and brain."""
    s = prof.head_scale
    x, y, z = grid_mm(shape, spacing)
    fov = np.asarray(prof.fov_mm, dtype=np.float32)
    axes = fov * np.array([0.44, 0.445, 0.43]) * rng.uniform(0.95, 1.02, 3)
    shift = rng.normal(0, 0.01, 3) * fov
    xs, ys, zs = x - shift[0], y - shift[1], z - shift[2]
    deform = smooth_noise(rng, shape, spacing, 18.0 * s + 8.0)
    # flatten the skull base a little, widen the back of the head
    r = np.sqrt((xs / (axes[0] * (1.0 - 0.04 * ys / axes[1]))) ** 2 + (ys / axes[1]) ** 2
                + (zs / (axes[2] * np.where(zs < 0, 0.9, 1.0))) ** 2)
    rho = r * (1.0 + 0.025 * deform)
    R = float(np.mean(axes))
    t_scalp, t_muscle = max(2.0, 5.0 * s), max(1.0, 1.5 * s)
    t_skull, t_csf = max(3.0, 7.0 * s), max(1.2, 2.5 * s)
    lv = np.cumsum([t_scalp, t_muscle, t_skull, t_csf]) / R
    rho_brain = 1.0 - lv[3]
    lab[rho < 1.0] = 1
    lab[rho < 1.0 - lv[0]] = 2
    lab[rho < 1.0 - lv[1]] = 3
    dip = (rho < 1.0 - lv[1] - 0.3 * t_skull / R) & (rho > 1.0 - lv[2] + 0.3 * t_skull / R)
    lab[dip] = 4
    lab[rho < 1.0 - lv[2]] = 5
    brain = rho < rho_brain
    head = _Head(xs=xs, ys=ys, zs=zs, axes=axes, shift=shift, deform=deform, rho=rho, R=R,
                 rho_brain=rho_brain, b_axes=axes * (1 - lv[3]), s=s)
    return head, brain


def _cortex(rng: np.random.Generator, head: _Head, shape: tuple[int, int, int], spacing: np.ndarray,
            lab: np.ndarray, brain: np.ndarray) -> dict[str, Any]:
    """Folded grey matter over white matter, sulci and the interhemispheric fissure (labels 5-7)."""
    s, xs, ys, zs, b_axes = head.s, head.xs, head.ys, head.zs, head.b_axes
    # cortex: sulci are thin CSF sheets along the zero set of a band-pass field, reaching t_sulc deep;
    # the grey-white boundary dips under each sulcus (gyri with white-matter cores)
    g1 = smooth_noise(rng, shape, spacing, max(4.0, 9.0 * s))
    g2 = smooth_noise(rng, shape, spacing, max(2.5, 4.0 * s))
    gyri = g1 + 0.35 * g2
    gyri /= gyri.std() + 1e-6
    t_gm, t_sulc = max(2.2, 3.0 * s), max(3.5, 10.0 * s)
    depth = (head.rho_brain - head.rho) * head.R  # approximate depth below the brain surface, mm
    near = np.exp(-(gyri / 0.6) ** 2)
    lab[brain] = 6
    wm = brain & (depth > t_gm + (t_sulc - 0.5) * near)
    sulcus = brain & (np.abs(gyri) < 0.09) & (depth < t_sulc)
    # interhemispheric fissure above the corpus callosum (and fore/aft of it), with medial cortex
    above_cc = (zs > 0.22 * b_axes[2]) | ((np.abs(ys) > 0.42 * b_axes[1]) & (zs > -0.2 * b_axes[2]))
    fiss = (np.abs(xs) < max(0.6, 0.8 * spacing[0])) & above_cc
    wm &= ~((np.abs(xs) < t_gm + max(0.6, spacing[0])) & above_cc)
    lab[wm] = 7
    lab[sulcus] = 5
    lab[brain & fiss] = 5
    return dict(g2=g2, gyri=gyri, depth=depth, t_gm=t_gm, t_sulc=t_sulc)


def _cerebellum(head: _Head, spacing: np.ndarray, lab: np.ndarray, brain: np.ndarray,
                cortex: dict[str, Any]) -> None:
    """Posterior-inferior ellipsoid with foliated GM/WM and the tentorium (CSF) on top."""
    s, xs, ys, zs, b_axes = head.s, head.xs, head.ys, head.zs, head.b_axes
    depth, t_gm, t_sulc = cortex["depth"], cortex["t_gm"], cortex["t_sulc"]
    ce = np.sqrt((xs / (0.62 * b_axes[0])) ** 2 + ((ys + 0.62 * b_axes[1]) / (0.32 * b_axes[1])) ** 2
                 + ((zs + 0.6 * b_axes[2]) / (0.34 * b_axes[2])) ** 2) * (1 + 0.03 * head.deform)
    cer = brain & (ce < 1.0)
    fol = np.sin(2 * np.pi * ce * 0.32 * b_axes[1] / max(2.5, 3.5 * s) + 2.0 * cortex["g2"])
    lab[cer & (depth > t_gm) & (fol > 0.2)] = 7
    lab[cer & (depth > t_gm) & (fol <= 0.2)] = 6
    lab[cer & (fol < -0.85) & (depth < 0.5 * t_sulc)] = 5
    lab[brain & (ce >= 1.0) & (ce < 1.0 + max(0.8, spacing[2]) / (0.34 * b_axes[2]))] = 5


def _deep_grey(head: _Head, lab: np.ndarray) -> None:
    """Thalamus / basal ganglia: one ellipsoid each side (label 8)."""
    xs, ys, zs, b_axes = head.xs, head.ys, head.zs, head.b_axes
    for sx in (-1, 1):
        c = np.array([sx * 0.2, -0.02, -0.05]) * b_axes
        e = np.sqrt(((xs - c[0]) / (0.11 * b_axes[0])) ** 2 + ((ys - c[1]) / (0.17 * b_axes[1])) ** 2
                    + ((zs - c[2]) / (0.12 * b_axes[2])) ** 2) * (1 + 0.08 * head.deform)
        lab[e < 1] = 8


def _ventricles(rng: np.random.Generator, head: _Head, shape: tuple[int, int, int], lab: np.ndarray,
                brain: np.ndarray) -> np.ndarray:
    """Curved (banana) lateral ventricles either side of the midline + third ventricle (label 9)."""
    xs, ys, zs, b_axes = head.xs, head.ys, head.zs, head.b_axes
    vent = np.zeros(shape, bool)
    vs = rng.uniform(0.85, 1.25)  # ventricle size varies with age
    for sx in (-1, 1):
        yy = ys / b_axes[1]
        zc = (0.12 - 0.35 * yy ** 2) * b_axes[2]
        e = np.sqrt(((xs - sx * 0.1 * b_axes[0]) / (0.075 * vs * b_axes[0])) ** 2
                    + ((ys - 0.02 * b_axes[1]) / (0.38 * b_axes[1])) ** 2
                    + ((zs - zc) / (0.09 * vs * b_axes[2])) ** 2) * (1 + 0.1 * head.deform)
        vent |= e < 1
    e3 = np.sqrt((xs / max(0.8, 0.012 * b_axes[0])) ** 2 + ((ys + 0.02 * b_axes[1]) / (0.12 * b_axes[1])) ** 2
                 + ((zs + 0.02 * b_axes[2]) / (0.1 * b_axes[2])) ** 2)
    vent |= e3 < 1
    vent &= brain
    lab[vent] = 9
    return vent


def _orbits(head: _Head, lab: np.ndarray, brain: np.ndarray) -> None:
    """Vitreous (dark on T1) in bright orbital fat, outside the brain below the frontal lobe."""
    s, xs, ys, zs, axes = head.s, head.xs, head.ys, head.zs, head.axes
    r_eye = max(4.0, 12.0 * s)
    for sx in (-1, 1):
        c = np.array([sx * 0.3 * axes[0], 0.8 * axes[1], -0.38 * axes[2]])
        d = np.sqrt((xs - c[0]) ** 2 + (ys - c[1]) ** 2 + (zs - c[2]) ** 2)
        free = ~brain & (head.rho < 1.0)
        lab[free & (d < r_eye + max(2.0, 4.0 * s))] = 11
        lab[free & (d < r_eye)] = 10


def head_anatomy(rng: np.random.Generator, prof: SynthParams, shape: tuple[int, int, int],
                 spacing: np.ndarray) -> dict[str, Any]:
    """Tissue label volume of one procedural head, and the geometry later renderers need.

    Parameters
    ----------
    rng : numpy.random.Generator
        The case's render generator (draws: head shape, deformation, folding, ventricle size).
    prof : SynthParams
        Cohort parameters (``fov_mm`` and the head scale).
    shape : tuple of int
        Voxel grid of the site.
    spacing : ndarray
        Voxel size of the site in mm.

    Returns
    -------
    dict
        ``lab`` (uint8 labels, see :data:`TISSUE_LABELS`), ``brain`` (bool), ``rho`` (normalised head
        radius), ``rho_brain``, ``R`` (mean head semi-axis, mm), ``axes`` and ``b_axes`` (head and brain
        semi-axes, mm), ``shift`` (head centre offset, mm), ``gyri`` (folding field) and ``vent`` (bool
        lateral + third ventricles).
    """
    lab = np.zeros(shape, np.uint8)
    head, brain = _head_layers(rng, prof, shape, spacing, lab)
    cortex = _cortex(rng, head, shape, spacing, lab, brain)
    _cerebellum(head, spacing, lab, brain, cortex)
    _deep_grey(head, lab)
    vent = _ventricles(rng, head, shape, lab, brain)
    _orbits(head, lab, brain)
    return dict(lab=lab, brain=brain, rho=head.rho, rho_brain=head.rho_brain, R=head.R, axes=head.axes,
                shift=head.shift, b_axes=head.b_axes, gyri=cortex["gyri"], vent=vent)
