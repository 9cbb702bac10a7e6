"""Preprocessing: alignment check, reorientation, resampling, skull stripping, Z-score, QC, caching.

Per case (:func:`preprocess_case`), in this order:

1. read image, lesion mask and (backend ``'mask'``) brain mask (:mod:`bmstudy.io.volumes`), each reoriented
   exactly (axis permutations/flips only) to canonical RAS+;
2. alignment check of mask and brain mask against the image ON DISK: shape, spacing, origin and
   direction within ``PreprocessParams`` tolerances. A mismatch raises :class:`AlignmentError`; the
   case is reported ``excluded`` and never silently resampled;
3. lesion mask binarised: exactly {0, 1} as given, or ``isin(mask_labels)`` (e.g. ``(4,)`` for the
   BraTS enhancing tumour), or ``> label_threshold``; otherwise :class:`MaskValueError` (excluded);
4. brain mask from the skull-strip backend (:mod:`bmstudy.preprocessing.skullstrip`) on the canonical input grid;
5. resampling to ``target_spacing`` (default 0.833 mm isotropic): image linear (or cubic B-spline),
   lesion and brain masks linear then > 0.5 (nnU-Net style; ``mask_interpolation='nearest'`` available). The new grid spans exactly the input's
   physical extent (``new_shape = round(shape * spacing / target)``, grid-aligned zoom), so the
   realised spacing can differ from the target by < half a voxel over the field of view; it is recorded;
6. (before 5) optional crop of the canonical input to the brain bounding box + ``crop_margin_mm``
   (recorded; cuts resampling and training compute; :func:`restore_to_input` pads it back with 0);
7. Z-score normalisation with mean/std over brain voxels; background set to 0.

Why Z-score inside the brain rather than over the whole volume: the background (air, skull, neck)
fraction varies with field of view and scanner, so whole-volume statistics shift with acquisition
rather than with tissue contrast. Brain-only statistics make intensities comparable across sites
(nnU-Net does the same for MRI with non-zero masks). ``normalisation='zscore_volume'`` is available
for comparison, ``'none'`` keeps the intensities.

Outputs of :func:`preprocess_cohort` (see docs/DESIGN.md): ``out_dir/<pid>/image.npy`` (float32),
``mask.npy`` (uint8), ``brain.npy`` (uint8), ``meta.json`` (the transform record, params, input
fingerprints), and ``out_dir/preprocess_report.csv``; QC PNGs via :func:`write_qc`.
Re-running skips cases whose input fingerprints and params hash match their ``meta.json``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import ndimage

from ..io.volumes import (VolumeError, Volume, affine_direction, affine_spacing, canonical_to_source, fingerprint_unchanged,
                 input_fingerprint, read_volume, write_volume)
from ..preprocessing.skullstrip import brain_mask as _brain_mask
from ..preprocessing.skullstrip import resolve_backend
from ..utils import (PathLike, atomic_save_npy, atomic_to_csv, atomic_write_json, get_logger, params_hash)

log = get_logger(__name__)

RECORD_VERSION = 1
REPORT_NAME = "preprocess_report.csv"
HIST_Z_EDGES = np.linspace(-5.0, 5.0, 101)
from ..plan import INTERPOLATION_ORDER, NORMALISATIONS
REPORT_COLUMNS: tuple[str, ...] = (
    "patient_id", "site", "split", "status", "reason", "cached", "seconds", "skull_strip",
    "input_shape", "input_spacing", "input_axcodes", "cropped_shape", "output_shape", "output_spacing",
    "brain_volume_ml", "mask_volume_ml_input", "mask_volume_ml_output", "mask_volume_rel_change",
    "brain_mean", "brain_std", "brain_p01", "brain_p99", "params_hash",
)


class AlignmentError(VolumeError):
    """Image and mask (or brain mask) do not share one voxel grid within tolerance."""


class MaskValueError(VolumeError):
    """A lesion mask is not binary and no label selection/threshold was requested."""


from ..plan import PreprocessParams  # noqa: E402  (defined with the other stage parameters)


# ----------------------------------------------------------------------------- array functions


def check_alignment(ref: Volume, other: Volume, params: PreprocessParams, *, case: str | None = None,
                    what: str = "mask") -> None:
    """Raise :class:`AlignmentError` unless ``other`` shares ``ref``'s on-disk grid within tolerance."""
    problems = []
    if tuple(other.source_shape) != tuple(ref.source_shape):
        problems.append(f"shape {tuple(other.source_shape)} != image {tuple(ref.source_shape)}")
    else:
        sp_o, sp_r = np.array(affine_spacing(other.source_affine)), np.array(affine_spacing(ref.source_affine))
        if np.abs(sp_o - sp_r).max() > params.spacing_tol_mm:
            problems.append(f"spacing {np.round(sp_o, 4).tolist()} != image {np.round(sp_r, 4).tolist()}")
        org_o, org_r = other.source_affine[:3, 3], ref.source_affine[:3, 3]
        if np.abs(org_o - org_r).max() > params.origin_tol_mm:
            problems.append(f"origin {np.round(org_o, 3).tolist()} != image {np.round(org_r, 3).tolist()} (mm)")
        d = np.abs(affine_direction(other.source_affine) - affine_direction(ref.source_affine)).max()
        if d > params.direction_tol:
            problems.append(f"direction cosines differ by {d:.4g} (> {params.direction_tol})")
    if problems:
        raise AlignmentError(f"{what} not aligned with image: " + "; ".join(problems), case=case, path=other.path)


def binarize_mask(data: np.ndarray, params: PreprocessParams, *, case: str | None = None,
                  path: PathLike | None = None) -> np.ndarray:
    """uint8 {0,1} lesion mask following ``mask_labels`` / ``label_threshold``; else values must be {0,1}."""
    if params.mask_labels is not None:
        labels = data if np.issubdtype(data.dtype, np.integer) else np.rint(data)
        return np.isin(labels, params.mask_labels).astype(np.uint8)
    if params.label_threshold is not None:
        return (data > params.label_threshold).astype(np.uint8)
    values = np.unique(data)
    if not np.isin(values, (0, 1)).all():
        shown = ", ".join(f"{v:g}" for v in values[:8]) + (" ..." if values.size > 8 else "")
        raise MaskValueError(f"mask is not binary (values {shown}); set mask_labels (e.g. (4,) for BraTS enhancing "
                             "tumour) or label_threshold", case=case, path=path)
    return data.astype(np.uint8)


def resampled_shape(shape: Sequence[int], spacing: Sequence[float], target: Sequence[float] | None) -> tuple[int, int, int]:
    """``round(shape * spacing / target)`` (at least 1 voxel per axis); ``shape`` if ``target`` is None."""
    if target is None:
        return tuple(int(s) for s in shape)  # type: ignore[return-value]
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, target))  # type: ignore[return-value]


def resample_to_shape(array: np.ndarray, shape: Sequence[int], order: int) -> np.ndarray:
    """Grid-aligned resampling (voxel extents of input and output coincide) to exactly ``shape``.

    ``order`` 0 = nearest, 1 = linear, 3 = cubic B-spline. Identity when the shape is unchanged.
    """
    shape = tuple(int(s) for s in shape)
    if tuple(array.shape) == shape:
        return array.copy()
    zoom = [n / o for n, o in zip(shape, array.shape)]
    out = ndimage.zoom(array, zoom, order=order, mode="nearest", grid_mode=True, prefilter=order > 1)
    if out.shape != shape:  # guard against rounding in scipy's output-shape computation
        raise RuntimeError(f"resampling produced {out.shape}, expected {shape}")
    return out


def resample_mask(mask: np.ndarray, shape: Sequence[int], method: str = "linear") -> np.ndarray:
    """Resample a binary mask to ``shape``: ``'linear'`` (linear interpolation then > 0.5) or ``'nearest'``."""
    if method == "nearest":
        return resample_to_shape(mask.astype(np.uint8, copy=False), shape, 0).astype(np.uint8, copy=False)
    if tuple(mask.shape) == tuple(shape):
        return (mask > 0).astype(np.uint8)
    return (resample_sparse(mask > 0, shape, 1) > 0.5).astype(np.uint8)


def resample_sparse(array: np.ndarray, shape: Sequence[int], order: int = 1) -> np.ndarray:
    """:func:`resample_to_shape` (order 0 or 1) computed only around the non-zero bounding box.

    Identical to the full resampling (values outside the box are exactly 0 for order <= 1) but costs
    in proportion to the box: lesion masks are a tiny fraction of the volume.
    """
    if order not in (0, 1):
        raise ValueError("resample_sparse supports order 0 or 1")
    shape = tuple(int(s) for s in shape)
    out = np.zeros(shape, dtype=np.float32)
    idx = np.nonzero(array)
    if idx[0].size == 0:
        return out
    out_sl, in_sl, offsets, factors = [], [], [], []
    for ax, (n_in, n_out) in enumerate(zip(array.shape, shape)):
        f = n_in / n_out
        lo, hi = int(idx[ax].min()), int(idx[ax].max())
        # output voxels whose input coordinate c = (o + .5) f - .5 lies within [lo - 1, hi + 1]
        o0 = max(0, int(math.floor((lo - 1 + 0.5) / f - 0.5)) - 1)
        o1 = min(n_out, int(math.ceil((hi + 1 + 0.5) / f - 0.5)) + 2)
        c0, c1 = (o0 + 0.5) * f - 0.5, (o1 - 1 + 0.5) * f - 0.5
        i0 = max(0, int(math.floor(c0)) - 1)
        i1 = min(n_in, int(math.floor(c1)) + 3)
        out_sl.append(slice(o0, o1))
        in_sl.append(slice(i0, i1))
        offsets.append(c0 - i0)
        factors.append(f)
    block = np.ascontiguousarray(array[tuple(in_sl)], dtype=np.float32)
    out_shape = tuple(s.stop - s.start for s in out_sl)
    out[tuple(out_sl)] = ndimage.affine_transform(block, np.asarray(factors), offset=offsets, output_shape=out_shape,
                                                  order=order, mode="nearest", prefilter=False)
    return out


def resampled_affine(affine: np.ndarray, in_shape: Sequence[int], out_shape: Sequence[int]) -> np.ndarray:
    """Affine of the grid-aligned resampled grid: voxel i_out sits at input voxel (i_out + .5) * f - .5."""
    f = np.array(in_shape, dtype=float) / np.array(out_shape, dtype=float)
    scale = np.eye(4)
    scale[:3, :3] = np.diag(f)
    scale[:3, 3] = 0.5 * f - 0.5
    return np.asarray(affine, dtype=float) @ scale


def brain_bbox(brain: np.ndarray, margin_vox: Sequence[int]) -> list[list[int]]:
    """[[start, stop], ...] of the non-zero voxels plus margin, clipped to the array."""
    idx = np.nonzero(brain)
    if idx[0].size == 0:
        raise ValueError("empty brain mask: cannot crop")
    return [[max(0, int(i.min()) - int(m)), min(int(n), int(i.max()) + 1 + int(m))]
            for i, m, n in zip(idx, margin_vox, brain.shape)]


def zscore(image: np.ndarray, brain: np.ndarray, method: str = "zscore_brain") -> tuple[np.ndarray, float, float]:
    """Z-score ``image`` (mean/std over brain voxels, or the whole volume); background set to 0.

    Returns (float32 array, mean, std). A brain with zero intensity spread raises ``ValueError``.
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


# ----------------------------------------------------------------------------- single image / case


def _record_base(image: Volume, params: PreprocessParams) -> dict[str, Any]:
    return {
        "version": RECORD_VERSION,
        "params": params.to_dict(),
        "params_hash": params.hash(),
        "source": {"shape": list(image.source_shape), "affine": image.source_affine.tolist(),
                   "axcodes": "".join(image.source_axcodes), "spacing": list(affine_spacing(image.source_affine)),
                   "format": image.format, "nifti_codes": [image.meta.get("qform_code", 1), image.meta.get("sform_code", 1)]},
        "canonical": {"shape": list(image.data.shape), "affine": image.affine.tolist(), "spacing": list(image.spacing)},
    }


def _transform(image: Volume, brain: np.ndarray, params: PreprocessParams,
               masks: dict[str, np.ndarray] | None = None, case: str | None = None) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], dict[str, Any]]:
    """Crop + resample + normalise; returns (image, brain, masks, record additions)."""
    data, base_aff, crop = image.data, image.affine, None
    masks = dict(masks or {})
    if params.crop_to_brain:  # crop in the canonical input grid first: less to resample
        margin = [int(math.ceil(params.crop_margin_mm / s)) for s in image.spacing]
        crop = brain_bbox(brain, margin)
        sl = tuple(slice(a, b) for a, b in crop)
        data, brain = data[sl], brain[sl]
        masks = {k: m[sl] for k, m in masks.items()}
        offset = np.eye(4)
        offset[:3, 3] = [a for a, _ in crop]
        base_aff = base_aff @ offset
    new_shape = resampled_shape(data.shape, image.spacing, params.target_spacing)
    out_aff = resampled_affine(base_aff, data.shape, new_shape)
    img = resample_to_shape(data, new_shape, INTERPOLATION_ORDER[params.interpolation]).astype(np.float32, copy=False)
    br = np.ones(new_shape, dtype=np.uint8) if brain.all() else resample_mask(brain, new_shape, "linear")
    out_masks = {k: resample_mask(m, new_shape, params.mask_interpolation) for k, m in masks.items()}
    spacing = affine_spacing(out_aff)
    if not br.any():
        raise VolumeError("brain mask is empty after resampling", case=case, path=image.path)
    raw = img[br > 0]
    p01, p99 = (float(v) for v in np.percentile(raw, [1, 99]))
    try:
        img, mean, std = zscore(img, br, params.normalisation)
    except ValueError as exc:
        raise VolumeError(str(exc), case=case, path=image.path) from exc
    hist_z = np.histogram(img[br > 0], bins=HIST_Z_EDGES)[0]
    lo, hi = float(raw.min()), float(raw.max())
    raw_edges = np.linspace(lo, hi if hi > lo else lo + 1.0, 101)
    hist_raw = np.histogram(raw, bins=raw_edges)[0]
    rec = {
        "crop": crop,
        "cropped_shape": list(data.shape),
        "output": {"shape": list(img.shape), "affine": out_aff.tolist(), "spacing": list(spacing)},
        "normalisation": {"method": params.normalisation, "mean": mean, "std": std},
        "qc": {"brain_p01": p01, "brain_p99": p99, "brain_min": float(raw.min()), "brain_max": float(raw.max()),
               "hist_z_edges": [float(HIST_Z_EDGES[0]), float(HIST_Z_EDGES[-1]), int(HIST_Z_EDGES.size)],
               "hist_z": hist_z.tolist(), "hist_raw_edges": raw_edges.tolist(), "hist_raw": hist_raw.tolist()},
    }
    return img, br, out_masks, rec


def preprocess_image(image_path: PathLike, params: PreprocessParams, brain_mask_path: PathLike | None = None,
                     *, case: str | None = None, return_brain: bool = False) -> tuple[Any, ...]:
    """Preprocess one image for inference: returns (float32 canonical array, transform record).

    The record is JSON-able and is what :func:`restore_to_input` / :func:`save_like_input` need.
    ``brain_mask_path`` is used by the ``'mask'`` backend (and by ``'auto'`` when given); it must be
    aligned with the image (:class:`AlignmentError` otherwise). With ``return_brain=True`` the brain
    mask on the preprocessed grid (uint8, all ones for ``skull_strip='none'``) is returned third.
    """
    image = read_volume(image_path, case=case, kind="image")
    record = _record_base(image, params)
    brain = _strip(image, params, brain_mask_path, case, record)
    img, br, _, rec = _transform(image, brain, params, case=case)
    record.update(rec)
    record["inputs"] = {"image": str(image_path), "brain_mask": None if brain_mask_path is None else str(brain_mask_path)}
    return (img, record, br) if return_brain else (img, record)


def _strip(image: Volume, params: PreprocessParams, brain_mask_path: PathLike | None, case: str | None,
           record: dict[str, Any]) -> np.ndarray:
    backend = resolve_backend(params.skull_strip, brain_mask_path is not None)
    t0 = time.perf_counter()
    if backend == "mask" and brain_mask_path is not None:
        bvol = read_volume(brain_mask_path, case=case, kind="mask")
        check_alignment(image, bvol, params, case=case, what="brain mask")
        brain = (bvol.data > 0).astype(np.uint8)
        if not brain.any():
            raise VolumeError("brain mask is empty", case=case, path=brain_mask_path)
    else:
        brain = _brain_mask(image.data, image.affine, backend, case=case, synthstrip_model=params.synthstrip_model,
                            threads=params.threads)
    record["skull_strip"] = {"backend": backend, "seconds": round(time.perf_counter() - t0, 3)}
    return brain


def restore_to_input(array: np.ndarray, record: dict[str, Any], order: int = 1, fill: float = 0.0) -> np.ndarray:
    """Map an array on the preprocessed grid back onto the input file's voxel grid.

    Resamples to the (cropped) canonical input grid (``order`` 0 nearest, 1 linear, 3 B-spline), pads
    the crop with ``fill`` and undoes the reorientation, so the result has exactly the on-disk shape
    and is saved with the input affine (:func:`save_like_input`). Float inputs stay float32.
    """
    arr = np.asarray(array)
    out_shape = tuple(record["output"]["shape"])
    if arr.shape != out_shape:
        raise ValueError(f"restore_to_input: array shape {arr.shape} != preprocessed shape {out_shape} in the record")
    if (order > 0 and not np.issubdtype(arr.dtype, np.floating)) or (np.issubdtype(arr.dtype, np.floating) and arr.dtype != np.float32):
        arr = arr.astype(np.float32)
    can_shape = tuple(record["canonical"]["shape"])
    crop = record.get("crop")
    if crop:
        block = resample_to_shape(arr, record["cropped_shape"], order)
        can = np.full(can_shape, fill, dtype=block.dtype)
        can[tuple(slice(a, b) for a, b in crop)] = block
    else:
        can = resample_to_shape(arr, can_shape, order)
    out = canonical_to_source(can, np.asarray(record["source"]["affine"], dtype=float))
    if tuple(out.shape) != tuple(record["source"]["shape"]):
        raise RuntimeError(f"restore_to_input produced {out.shape}, expected {record['source']['shape']}")
    return out


def save_like_input(array: np.ndarray, record: dict[str, Any], path: PathLike, dtype: Any = None) -> Path:
    """Write an input-grid array (from :func:`restore_to_input`) with the input's affine (NIfTI by suffix)."""
    shape = tuple(record["source"]["shape"])
    if tuple(np.shape(array)) != shape:
        raise ValueError(f"save_like_input: array shape {np.shape(array)} is not the input grid {shape}; "
                         "call restore_to_input first")
    codes = tuple(int(c) or 1 for c in record["source"].get("nifti_codes", (1, 1)))
    return write_volume(np.asarray(array), np.asarray(record["source"]["affine"], dtype=float), path, dtype=dtype,
                        nifti_codes=codes)  # type: ignore[arg-type]


def _case_inputs(row: dict[str, Any], params: PreprocessParams) -> dict[str, str]:
    inputs = {"image": str(row["image"]), "mask": str(row["mask"])}
    bm = row.get("brain_mask")
    if isinstance(bm, (str, os.PathLike)) and str(bm).strip():
        inputs["brain_mask"] = str(bm)
    return inputs


def is_cached(case_dir: PathLike, inputs: dict[str, str], params: PreprocessParams) -> bool:
    """True when ``case_dir`` holds complete outputs for these inputs (fingerprints) and params hash."""
    case_dir = Path(case_dir)
    meta_path = case_dir / "meta.json"
    if not meta_path.is_file() or not all((case_dir / f).is_file() for f in ("image.npy", "mask.npy", "brain.npy")):
        return False
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    if meta.get("params_hash") != params.hash() or meta.get("version") != RECORD_VERSION:
        return False
    recorded = meta.get("input_files", {})
    if set(recorded) != set(inputs):
        return False
    for role, path in inputs.items():
        rec = recorded[role]
        if fingerprint_unchanged(path, rec):
            continue
        if str(Path(path)) != rec.get("path") or not Path(path).exists() or input_fingerprint(path)["sha256"] != rec.get("sha256"):
            return False
    return True


def preprocess_case(row: dict[str, Any], out_dir: PathLike, params: PreprocessParams, *, force: bool = False) -> dict[str, Any]:
    """Preprocess one manifest row into ``out_dir/<pid>/``; returns a report row (never raises for data problems).

    Status ``ok``; ``excluded`` for input problems (:class:`VolumeError`: unreadable, 4-D, NaN/Inf,
    constant, misaligned, non-binary mask); ``failed`` for anything else (message in ``reason``).
    """
    pid = str(row["patient_id"])
    case_dir = Path(out_dir) / pid
    base = {"patient_id": pid, "site": row.get("site", ""), "split": row.get("split", ""),
            "params_hash": params.hash(), "cached": False}
    t0 = time.perf_counter()
    try:
        inputs = _case_inputs(row, params)
        if not force and is_cached(case_dir, inputs, params):
            meta = json.loads((case_dir / "meta.json").read_text(encoding="utf-8"))
            return {**base, **meta["report"], "cached": True, "seconds": 0.0}
        for name in ("meta.json", "image.npy", "mask.npy", "brain.npy"):  # no stale outputs if this run fails
            (case_dir / name).unlink(missing_ok=True)
        image = read_volume(inputs["image"], case=pid, kind="image")
        mvol = read_volume(inputs["mask"], case=pid, kind="mask")
        check_alignment(image, mvol, params, case=pid, what="mask")
        mask = binarize_mask(mvol.data, params, case=pid, path=mvol.path)
        del mvol
        record = _record_base(image, params)
        brain = _strip(image, params, inputs.get("brain_mask"), pid, record)
        img, br, masks, rec = _transform(image, brain, params, {"mask": mask}, case=pid)
        record.update(rec)
        vox_in = float(np.prod(image.spacing)) / 1000.0
        vox_out = float(np.prod(record["output"]["spacing"])) / 1000.0
        m_in, m_out = float(mask.sum()) * vox_in, float(masks["mask"].sum()) * vox_out
        report = {
            "status": "ok", "reason": "", "skull_strip": record["skull_strip"]["backend"],
            "input_shape": "x".join(map(str, image.source_shape)),
            "input_spacing": "x".join(f"{v:.4g}" for v in affine_spacing(image.source_affine)),
            "input_axcodes": "".join(image.source_axcodes),
            "cropped_shape": "x".join(map(str, record["cropped_shape"])),
            "output_shape": "x".join(map(str, img.shape)),
            "output_spacing": "x".join(f"{v:.4g}" for v in record["output"]["spacing"]),
            "brain_volume_ml": round(float(br.sum()) * vox_out, 3),
            "mask_volume_ml_input": round(m_in, 4), "mask_volume_ml_output": round(m_out, 4),
            "mask_volume_rel_change": round((m_out - m_in) / m_in, 5) if m_in > 0 else 0.0,
            "brain_mean": record["normalisation"]["mean"], "brain_std": record["normalisation"]["std"],
            "brain_p01": record["qc"]["brain_p01"], "brain_p99": record["qc"]["brain_p99"],
        }
        record["patient_id"] = pid
        record["input_files"] = {role: input_fingerprint(p) for role, p in inputs.items()}
        record["report"] = report
        # meta.json last: its presence (with matching hashes) marks the case complete
        atomic_save_npy(case_dir / "image.npy", img)
        atomic_save_npy(case_dir / "mask.npy", masks["mask"])
        atomic_save_npy(case_dir / "brain.npy", br)
        record["seconds"] = round(time.perf_counter() - t0, 3)
        atomic_write_json(case_dir / "meta.json", record)
        return {**base, **report, "seconds": record["seconds"]}
    except VolumeError as exc:
        return {**base, "status": "excluded", "reason": str(exc), "seconds": round(time.perf_counter() - t0, 3)}
    except Exception as exc:  # one bad case never loses the others
        log.exception("case %s failed", pid)
        return {**base, "status": "failed", "reason": f"{type(exc).__name__}: {exc}",
                "seconds": round(time.perf_counter() - t0, 3)}


def _rows(manifest_df: pd.DataFrame) -> list[dict[str, Any]]:
    missing = {"patient_id", "image", "mask"} - set(manifest_df.columns)
    if missing:
        raise ValueError(f"manifest lacks columns {sorted(missing)}")
    if manifest_df["patient_id"].duplicated().any():
        dup = manifest_df.loc[manifest_df["patient_id"].duplicated(), "patient_id"].tolist()
        raise ValueError(f"duplicate patient_id in manifest: {dup[:5]}")
    rows = []
    for rec in manifest_df.to_dict("records"):
        rows.append({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in rec.items()})
    return rows


def preprocess_cohort(manifest_df: pd.DataFrame, out_dir: PathLike, params: PreprocessParams | None = None,
                      n_jobs: int = 1, *, force: bool = False, qc: bool = True, progress: bool = True) -> pd.DataFrame:
    """Preprocess every manifest row into ``out_dir`` (cached, resumable); returns and writes the report.

    ``n_jobs`` > 1 runs cases in worker processes (each case's memory is independent; keep n_jobs
    small on big volumes). The report is ``out_dir/preprocess_report.csv``; with ``qc`` the QC
    figures are written too (:func:`write_qc`).
    """
    from tqdm.auto import tqdm

    params = params or PreprocessParams()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = _rows(manifest_df)
    results: dict[str, dict[str, Any]] = {}
    bar = tqdm(total=len(rows), desc="preprocess", unit="case", disable=not progress)
    if n_jobs <= 1 or len(rows) <= 1:
        for row in rows:
            results[str(row["patient_id"])] = preprocess_case(row, out_dir, params, force=force)
            bar.update(1)
    else:
        import multiprocessing as mp
        import sys

        # forking a process that already runs TensorFlow/torch threads can deadlock: spawn then
        ctx = mp.get_context("spawn") if {"tensorflow", "torch"} & set(sys.modules) else None
        with ProcessPoolExecutor(max_workers=min(n_jobs, len(rows)), mp_context=ctx) as pool:
            futures = {pool.submit(preprocess_case, row, out_dir, params, force=force): str(row["patient_id"]) for row in rows}
            for fut in as_completed(futures):
                pid = futures[fut]
                try:
                    results[pid] = fut.result()
                except Exception as exc:  # worker crash (e.g. killed for memory)
                    results[pid] = {"patient_id": pid, "status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
                bar.update(1)
    bar.close()
    report = pd.DataFrame([results[str(r["patient_id"])] for r in rows])
    for col in REPORT_COLUMNS:
        if col not in report.columns:
            report[col] = None
    report = report[list(REPORT_COLUMNS)]
    atomic_to_csv(report, out_dir / REPORT_NAME)
    counts = report["status"].value_counts().to_dict()
    log.info("preprocessed %d cases into %s: %s (%d from cache)", len(report), out_dir, counts, int(report["cached"].sum()))
    for r in report.itertuples():
        if r.status != "ok":
            log.warning("%s %s: %s", r.patient_id, r.status, r.reason)
    if qc and (report["status"] == "ok").any():
        write_qc(out_dir, report)
    return report


def load_case(out_dir: PathLike, patient_id: str, mmap: bool = False) -> dict[str, Any]:
    """Read ``out_dir/<pid>/{image,mask,brain}.npy`` and ``meta.json`` into a dict."""
    case_dir = Path(out_dir) / str(patient_id)
    out: dict[str, Any] = {}
    for key in ("image", "mask", "brain"):
        path = case_dir / f"{key}.npy"
        if not path.is_file():
            raise FileNotFoundError(f"case {patient_id!r}: missing {path} (run `bmstudy preprocess`)")
        out[key] = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    meta_path = case_dir / "meta.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"case {patient_id!r}: missing {meta_path} (incomplete case)")
    out["meta"] = json.loads(meta_path.read_text(encoding="utf-8"))
    return out


def load_report(out_dir: PathLike) -> pd.DataFrame:
    """Read ``out_dir/preprocess_report.csv`` (patient_id as str)."""
    path = Path(out_dir) / REPORT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `bmstudy preprocess` first")
    return pd.read_csv(path, dtype={"patient_id": str, "reason": str}, keep_default_na=False)


# ----------------------------------------------------------------------------- QC


def _ok_metas(out_dir: Path, report: pd.DataFrame) -> list[tuple[str, str, dict[str, Any]]]:
    out = []
    for r in report[report["status"] == "ok"].itertuples():
        meta = json.loads((out_dir / str(r.patient_id) / "meta.json").read_text(encoding="utf-8"))
        out.append((str(r.patient_id), str(r.site) if isinstance(r.site, str) else "", meta))
    return out


def plot_case_histograms(out_dir: PathLike, report: pd.DataFrame | None = None, space: str = "raw"):
    """Figure: per-case brain intensity histograms (``space`` 'raw' before or 'z' after normalisation), coloured by site."""
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    report = load_report(out_dir) if report is None else report
    metas = _ok_metas(out_dir, report)
    sites = sorted({s for _, s, _ in metas})
    colors = {s: plt.cm.tab10(i % 10) for i, s in enumerate(sites)}
    fig, ax = plt.subplots(figsize=(7, 4))
    for pid, site, meta in metas:
        qc = meta["qc"]
        if space == "z":
            lo, hi, n = qc["hist_z_edges"]
            edges = np.linspace(lo, hi, n)
            counts = np.asarray(qc["hist_z"], dtype=float)
        else:
            edges, counts = np.asarray(qc["hist_raw_edges"]), np.asarray(qc["hist_raw"], dtype=float)
        centres = 0.5 * (edges[1:] + edges[:-1])
        dens = counts / max(counts.sum(), 1) / np.diff(edges)
        ax.plot(centres, dens, color=colors[site], alpha=0.6, lw=1)
    for s in sites:
        ax.plot([], [], color=colors[s], label=s or "(no site)")
    ax.set_xlabel("intensity inside brain" + (" (Z-score)" if space == "z" else " (input units)"))
    ax.set_ylabel("density")
    ax.set_title(f"Per-case brain intensity histograms ({len(metas)} cases)")
    if sites:
        ax.legend(title="site")
    fig.tight_layout()
    return fig


def plot_site_histograms(out_dir: PathLike, report: pd.DataFrame | None = None):
    """Figure: one panel per site overlaying its cases' Z-scored brain histograms, plus the site mean."""
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    report = load_report(out_dir) if report is None else report
    metas = _ok_metas(out_dir, report)
    sites = sorted({s for _, s, _ in metas}) or [""]
    fig, axes = plt.subplots(1, len(sites), figsize=(4.5 * len(sites), 3.6), sharey=True, squeeze=False)
    for ax, site in zip(axes[0], sites):
        dens_all = []
        for _, s, meta in metas:
            if s != site:
                continue
            lo, hi, n = meta["qc"]["hist_z_edges"]
            edges = np.linspace(lo, hi, n)
            counts = np.asarray(meta["qc"]["hist_z"], dtype=float)
            dens = counts / max(counts.sum(), 1) / np.diff(edges)
            centres = 0.5 * (edges[1:] + edges[:-1])
            ax.plot(centres, dens, color="0.6", lw=0.8, alpha=0.7)
            dens_all.append(dens)
        if dens_all:
            ax.plot(centres, np.mean(dens_all, axis=0), color="C3", lw=2, label="site mean")
            ax.legend()
        ax.set_title(f"{site or '(no site)'} (n={len(dens_all)})")
        ax.set_xlabel("Z-scored intensity inside brain")
    axes[0][0].set_ylabel("density")
    fig.tight_layout()
    return fig


def qc_table(out_dir: PathLike, report: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per-case statistics of the ok cases (shapes, spacings, volumes, brain intensity stats)."""
    report = load_report(out_dir) if report is None else report
    cols = [c for c in REPORT_COLUMNS if c not in ("status", "reason", "cached", "params_hash")]
    return report.loc[report["status"] == "ok", cols].reset_index(drop=True)


def write_qc(out_dir: PathLike, report: pd.DataFrame | None = None) -> dict[str, Path]:
    """Write ``qc_hist_cases.png`` (raw), ``qc_hist_cases_z.png``, ``qc_hist_sites.png`` and ``qc_stats.csv``."""
    import matplotlib.pyplot as plt

    from ..utils import atomic_path

    out_dir = Path(out_dir)
    report = load_report(out_dir) if report is None else report
    paths: dict[str, Path] = {}
    for name, fig in (("qc_hist_cases", plot_case_histograms(out_dir, report, "raw")),
                      ("qc_hist_cases_z", plot_case_histograms(out_dir, report, "z")),
                      ("qc_hist_sites", plot_site_histograms(out_dir, report))):
        path = out_dir / f"{name}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
        plt.close(fig)
        paths[name] = path
    paths["qc_stats"] = atomic_to_csv(qc_table(out_dir, report), out_dir / "qc_stats.csv")
    return paths


# ----------------------------------------------------------------------------- CLI


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", required=True, help="data manifest CSV")
    parser.add_argument("--out", required=True, help="output folder for preprocessed cases")
    parser.add_argument("--spacing", type=float, nargs="+", default=[0.833], help="target spacing mm (1 or 3 values)")
    parser.add_argument("--no-resample", action="store_true", help="keep the input spacing")
    parser.add_argument("--interpolation", choices=tuple(INTERPOLATION_ORDER), default="linear")
    parser.add_argument("--mask-interpolation", choices=("linear", "nearest"), default="linear")
    parser.add_argument("--skull-strip", choices=("auto", "mask", "none", "deepbet", "synthstrip"), default="auto")
    parser.add_argument("--synthstrip-model", default=None, help="path to synthstrip.1.pt (or env BMSTUDY_SYNTHSTRIP_MODEL)")
    parser.add_argument("--normalisation", choices=NORMALISATIONS, default="zscore_brain")
    parser.add_argument("--mask-labels", type=int, nargs="+", default=None, help="label values forming the lesion, e.g. 4")
    parser.add_argument("--label-threshold", type=float, default=None, help="binarise masks with mask > T")
    parser.add_argument("--crop-to-brain", action="store_true")
    parser.add_argument("--crop-margin-mm", type=float, default=10.0)
    parser.add_argument("--n-jobs", type=int, default=1)
    parser.add_argument("--force", action="store_true", help="ignore cached results")
    parser.add_argument("--no-qc", action="store_true")


def cli_main(args: argparse.Namespace) -> int:
    from ..io.manifest import load_manifest

    spacing = None if args.no_resample else (tuple(args.spacing) * 3 if len(args.spacing) == 1 else tuple(args.spacing))
    params = PreprocessParams(target_spacing=spacing, interpolation=args.interpolation,
                              mask_interpolation=args.mask_interpolation, skull_strip=args.skull_strip,
                              normalisation=args.normalisation,
                              mask_labels=tuple(args.mask_labels) if args.mask_labels else None,
                              label_threshold=args.label_threshold, crop_to_brain=args.crop_to_brain,
                              crop_margin_mm=args.crop_margin_mm, synthstrip_model=args.synthstrip_model)
    report = preprocess_cohort(load_manifest(args.manifest), args.out, params, n_jobs=args.n_jobs, force=args.force,
                               qc=not args.no_qc)
    counts = report["status"].value_counts().to_dict()
    print(f"{len(report)} cases: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())) +
          f"; report {Path(args.out) / REPORT_NAME}")
    return 0 if (report["status"] != "failed").all() else 1
