"""Real-MRI anatomical base of the synthetic heads: the MNI ICBM152 2009a template that nilearn ships.

nilearn (BSD-3) installs the 1 mm symmetric MNI ICBM152 2009a T1 template and its grey- and
white-matter probability maps (``nilearn/datasets/data/mni_icbm152_*_tal_nlin_sym_09a_converted.nii.gz``,
197x233x189, RAS, brain only; template copyright McConnell Brain Imaging Centre, Montreal
Neurological Institute, McGill University, free use with the copyright notice, see README).
:func:`load_template` reads them once per process and derives, in template millimetres:

* ``gm``, ``wm``, ``csf`` tissue probabilities (CSF = template brain minus GM and WM);
* ``env`` the brain envelope (filled, smoothed parenchyma: the "true" brain mask), ``dist_out``
  (mm outside the envelope: the skull/scalp layers are drawn on it) and ``depth`` (mm inside);
* ``vent`` (lateral/third ventricles) and ``deep`` (deep grey nuclei weight);
* coverage maps of the dural and skull-base mimics (:func:`_mimic_maps`): ``sinus`` (superior
  sagittal, straight, transverse and sigmoid sinuses), ``dura`` (falx and tentorium), ``pituitary``
  and ``cavernous`` (sinuses).

Everything is float32 (or bool) on the template grid; ``origin`` is the world (MNI mm) coordinate of
voxel (0, 0, 0) (the grid is 1 mm, axis-aligned).
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = ["template_files", "load_template", "TEMPLATE_LICENCE"]

#: Licence note of the anatomical base (the README repeats it).
TEMPLATE_LICENCE = (
    "MNI ICBM152 2009a symmetric template (Fonov et al. 2009/2011), as shipped in nilearn 0.14.1 (BSD-3). "
    "Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre, Montreal Neurological Institute, "
    "McGill University. Permission to use, copy, modify, and distribute this software and its documentation "
    "for any purpose and without fee is hereby granted, provided that the above copyright notice appear in all "
    "copies. The authors and McGill University make no representations about the suitability of this software "
    "for any purpose. It is provided 'as is' without express or implied warranty.")


def template_files() -> dict[str, Path]:
    """Paths of the nilearn template files (T1, GM, WM).

    Returns
    -------
    dict
        ``t1``, ``gm``, ``wm`` paths.

    Raises
    ------
    ImportError
        If nilearn is not installed (``pip install nilearn==0.14.1``).
    FileNotFoundError
        If the installed nilearn lacks the template files.
    """
    try:
        import nilearn
    except ImportError as exc:  # pragma: no cover - dependency
        raise ImportError("the synthetic cohort needs nilearn's MNI152 template: pip install nilearn==0.14.1") from exc
    d = Path(nilearn.__file__).parent / "datasets" / "data"
    files = {k: d / f"mni_icbm152_{k}_tal_nlin_sym_09a_converted.nii.gz" for k in ("t1", "gm", "wm")}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"nilearn {nilearn.__version__} lacks the MNI152 template files {missing}")
    return files


def _sphere(shape: tuple[int, ...], origin: np.ndarray, centre: tuple[float, float, float],
            semi: tuple[float, float, float]) -> np.ndarray:
    """Ellipsoid (template grid) around a world-mm centre with semi-axes in mm."""
    g = [np.arange(n, dtype=np.float32).reshape([-1 if a == k else 1 for a in range(3)]) + origin[k]
         for k, n in enumerate(shape)]
    return sum(((g[k] - centre[k]) / semi[k]) ** 2 for k in range(3)) <= 1.0


def _surface_curve(env: np.ndarray, origin: np.ndarray, centre: np.ndarray, dirs: np.ndarray,
                   offset: float) -> np.ndarray:
    """Points ``offset`` mm outside the envelope along rays from ``centre`` (world mm) in ``dirs``."""
    pts = []
    for d in dirs:
        d = d / np.linalg.norm(d)
        last = None
        for t in np.arange(0.0, 140.0, 0.5):
            q = np.round(centre + t * d - origin).astype(int)
            if np.any(q < 0) or np.any(q >= env.shape):
                break
            if env[tuple(q)]:
                last = t
        if last is not None:
            pts.append(centre + (last + offset) * d)
    return np.asarray(pts)


def _tube_map(shape: tuple[int, ...], origin: np.ndarray, pts: np.ndarray, radius: float) -> np.ndarray:
    """Coverage (0..1, partial-volume edge) of a tube of ``radius`` mm along world-mm points."""
    from scipy.spatial import cKDTree

    out = np.zeros(shape, np.float32)
    if len(pts) < 2:
        return out
    # densify the polyline to 0.5 mm steps
    seg = [np.linspace(a, b, max(2, int(np.linalg.norm(b - a) / 0.5) + 1)) for a, b in zip(pts[:-1], pts[1:])]
    line = np.concatenate(seg)
    lo = np.maximum(np.floor(line.min(0) - origin - radius - 2).astype(int), 0)
    hi = np.minimum(np.ceil(line.max(0) - origin + radius + 2).astype(int) + 1, shape)
    grid = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij"), -1).reshape(-1, 3)
    dist, _ = cKDTree(line).query(grid + origin, distance_upper_bound=radius + 2)
    frac = np.clip(radius + 0.5 - dist, 0, 1).astype(np.float32)
    sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    out[sl] = frac.reshape(out[sl].shape)
    return out


def _mimic_maps(t: dict[str, Any]) -> dict[str, np.ndarray]:
    """Dural sinuses, falx/tentorium, pituitary and cavernous sinuses on the template grid."""
    env, origin, shape = t["env"], t["origin"], t["env"].shape
    tissue = (t["gm"] + t["wm"]) > 0.35
    # superior sagittal sinus: over the vertex along the midline, front to the torcular
    ang = np.deg2rad(np.linspace(20, 200, 90))
    c_sss = np.array([0.0, -18.0, 8.0])
    sss = _surface_curve(env, origin, c_sss, np.stack([0 * ang, np.cos(ang), np.sin(ang)], 1), 3.0)
    torcular = sss[-1] if len(sss) else np.array([0.0, -100.0, 0.0])
    # transverse -> sigmoid sinuses: from the torcular along the occipital/temporal surface, then down
    c_tr = np.array([0.0, -30.0, torcular[2]])
    phi = np.deg2rad(np.linspace(0, 75, 40))
    sinus = _tube_map(shape, origin, sss, 3.5)
    for sx in (-1.0, 1.0):
        tr = _surface_curve(env, origin, c_tr, np.stack([sx * np.sin(phi), -np.cos(phi), -0.35 * phi], 1), 2.5)
        if len(tr):
            end = tr[-1]
            sig = np.stack([np.full(12, end[0]), np.linspace(end[1], end[1] + 12, 12), np.linspace(end[2], end[2] - 30, 12)], 1)
            sinus = np.maximum(sinus, _tube_map(shape, origin, np.concatenate([tr, sig]), 3.0))
    straight = np.stack([np.zeros(20), np.linspace(-48, torcular[1] + 3, 20), np.linspace(2, torcular[2], 20)], 1)
    sinus = np.maximum(sinus, _tube_map(shape, origin, straight, 2.2) * (~tissue))
    # falx: midline sheet in the interhemispheric fissure (non-tissue), above the corpus callosum
    g = [np.arange(n, dtype=np.float32).reshape([-1 if a == k else 1 for a in range(3)]) + origin[k]
         for k, n in enumerate(shape)]
    near_env = t["dist_out"] < 3.0
    falx = (np.abs(g[0]) < 0.9) & ~tissue & near_env & ~t["vent"] & (g[2] > 8.0)
    # tentorium: tent-shaped sheet between the occipital lobes and the cerebellum
    zt = -8.0 + 0.28 * (g[1] + 50.0) - 0.22 * np.abs(g[0])
    tent = (np.abs(g[2] - zt) < 1.0) & (g[1] < -45) & (np.abs(g[0]) < 58) & ~tissue & near_env & ~t["vent"]
    dura = ndimage.gaussian_filter((falx | tent).astype(np.float32), 0.5)
    not_tissue = ~tissue
    pit = _sphere(shape, origin, (0.0, 2.0, -34.0), (6.0, 5.5, 4.0)) & not_tissue
    cav = (_sphere(shape, origin, (-15.0, 0.0, -30.0), (4.0, 9.0, 6.0))
           | _sphere(shape, origin, (15.0, 0.0, -30.0), (4.0, 9.0, 6.0))) & not_tissue
    return {"sinus": sinus, "dura": np.clip(dura * 2.0, 0, 1), "pituitary": pit.astype(np.float32),
            "cavernous": cav.astype(np.float32)}


@lru_cache(maxsize=1)
def load_template() -> dict[str, Any]:
    """Template tissue maps, envelope, distances and mimic maps (cached per process).

    Returns
    -------
    dict
        See the module docstring; ``origin`` (ndarray, world mm of voxel 0), ``centre`` (world mm of
        the brain's bounding-box centre).
    """
    import nibabel as nib

    files = template_files()
    imgs = {k: nib.load(str(p)) for k, p in files.items()}
    aff = imgs["t1"].affine
    if not np.allclose(aff[:3, :3], np.eye(3)):
        raise ValueError(f"{files['t1']}: expected a 1 mm RAS template, got affine {aff.tolist()}")
    origin = aff[:3, 3].astype(np.float64)
    t1 = np.asarray(imgs["t1"].dataobj, dtype=np.float32) / 255.0
    gm = np.asarray(imgs["gm"].dataobj, dtype=np.float32) / 255.0
    wm = np.asarray(imgs["wm"].dataobj, dtype=np.float32) / 255.0
    head = t1 > 0
    par = gm + wm
    env = ndimage.binary_fill_holes(ndimage.gaussian_filter((par > 0.5).astype(np.float32), 2.0) > 0.3) & head
    csf = np.clip(head.astype(np.float32) - par, 0, 1) * env
    depth = ndimage.distance_transform_edt(env).astype(np.float32)
    dist_out = ndimage.distance_transform_edt(~env).astype(np.float32)
    gx = np.arange(env.shape[0], dtype=np.float32).reshape(-1, 1, 1) + origin[0]
    gz = np.arange(env.shape[2], dtype=np.float32).reshape(1, 1, -1) + origin[2]
    vent = (csf > 0.55) & (depth > 10.0) & (np.abs(gx) < 28.0) & (gz > -30.0)
    lab, n = ndimage.label(vent)
    if n:
        sizes = ndimage.sum(vent, lab, range(1, n + 1))
        vent = np.isin(lab, 1 + np.flatnonzero(sizes >= 300))
    deep = ndimage.gaussian_filter(((gm > 0.45) & (depth > 17.0)).astype(np.float32), 1.0)
    nz = np.argwhere(env)
    centre = origin + (nz.min(0) + nz.max(0)) / 2.0
    t = dict(t1=t1, gm=gm, wm=wm, csf=csf, env=env, depth=depth, dist_out=dist_out, vent=vent, deep=deep,
             origin=origin, centre=centre, files={k: str(p) for k, p in files.items()})
    t.update(_mimic_maps(t))
    # the renderer samples five channels: GM, WM, signed envelope distance, venous (sinuses; the
    # pituitary at 0.85 coverage, i.e. a little less bright), dura (falx/tentorium)
    t["sd"] = t["dist_out"] - t["depth"]
    t["venous"] = np.maximum.reduce([t["sinus"], t["cavernous"], 0.85 * t["pituitary"]])
    return t
