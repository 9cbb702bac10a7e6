"""Preprocessing of one image, one case and a cohort (cached, resumable), and the ``bmstudy preprocess`` CLI.

Per case (:func:`preprocess_case`), in this order:

1. read image, lesion mask and (backend ``'mask'``) brain mask (:mod:`bmstudy.io.volumes`), each reoriented
   exactly (axis permutations/flips only) to canonical RAS+;
2. alignment check of mask and brain mask against the image ON DISK: shape, spacing, origin and
   direction within ``PreprocessParams`` tolerances (:mod:`.checks`). A mismatch raises
   :class:`AlignmentError`; the case is reported ``excluded`` and never silently resampled;
3. lesion mask binarised: exactly {0, 1} as given, or ``isin(mask_labels)`` (e.g. ``(4,)`` for the
   BraTS enhancing tumour), or ``> label_threshold``; otherwise :class:`MaskValueError` (excluded);
4. brain mask from the skull-strip backend (:mod:`bmstudy.preprocessing.skullstrip`) on the canonical input grid;
5. optional crop of the canonical input to the brain bounding box + ``crop_margin_mm``
   (recorded; cuts resampling and training compute; :func:`restore_to_input` pads it back with 0);
6. resampling to ``target_spacing`` (default 0.833 mm isotropic, :mod:`.resampling`): image linear (or
   cubic B-spline), lesion and brain masks linear then > 0.5 (nnU-Net style; ``mask_interpolation='nearest'``
   available), on a grid spanning exactly the input's physical extent; the realised spacing is recorded;
7. Z-score normalisation with mean/std over brain voxels, background set to 0 (:mod:`.normalization`);
   QC statistics and histograms recorded (:mod:`.qc`).

Outputs of :func:`preprocess_cohort` (see :mod:`.store` and docs/DESIGN.md): ``out_dir/<pid>/image.npy``
(float32), ``mask.npy`` (uint8), ``brain.npy`` (uint8), ``meta.json`` (the transform record, params,
input fingerprints), and ``out_dir/preprocess_report.csv``; QC PNGs via :func:`write_qc`.
The loop over cases is :func:`bmstudy.cases.run_cases`, under the output folder's lock
(:func:`bmstudy.io.folder_lock`); re-running skips cases whose ``meta.json`` records the same input
content, params hash and code hash (:func:`bmstudy.preprocessing.store.code_hash`); any difference redoes the case.
Case folders are built with :func:`bmstudy.utils.safe_join` (ids never leave ``out_dir``).
"""
from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ..cases import exit_code, run_cases
from ..io.locks import folder_lock
from ..io.volumes import Volume, VolumeError, affine_spacing, input_fingerprint, read_volume
from ..plan import INTERPOLATION_ORDER, NORMALISATIONS, PreprocessParams
from ..utils import (PathLike, atomic_save_npy, atomic_to_csv, atomic_write_json, clean_stale_temps, duplicate_ids,
                     get_logger, id_problem)
from .checks import binarize_mask, check_alignment
from .normalization import zscore
from .qc import intensity_qc, write_qc
from .resampling import crop_to_bbox, resample_mask, resample_to_shape, resampled_affine, resampled_shape
from .skullstrip import brain_mask as _brain_mask
from .skullstrip import resolve_backend
from .store import (CASE_FILES, CODE_MODULES, RECORD_VERSION, REPORT_COLUMNS, REPORT_NAME, cached_report_row, case_dir,
                    code_hash)

__all__ = ["EXCLUDED_ERRORS", "preprocess_image", "preprocess_case", "preprocess_cohort", "add_cli_arguments",
           "cli_main"]

log = get_logger(__name__)

#: Exceptions that mark a case ``excluded`` (bad input) rather than ``failed``.
EXCLUDED_ERRORS: tuple[type[BaseException], ...] = (VolumeError,)  # incl. AlignmentError, MaskValueError


# ----------------------------------------------------------------------------- single image


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
        sl, crop, base_aff = crop_to_bbox(brain, image.spacing, params.crop_margin_mm, base_aff)
        data, brain = data[sl], brain[sl]
        masks = {k: m[sl] for k, m in masks.items()}
    new_shape = resampled_shape(data.shape, image.spacing, params.target_spacing)
    out_aff = resampled_affine(base_aff, data.shape, new_shape)
    img = resample_to_shape(data, new_shape, INTERPOLATION_ORDER[params.interpolation]).astype(np.float32, copy=False)
    br = np.ones(new_shape, dtype=np.uint8) if brain.all() else resample_mask(brain, new_shape, "linear")
    out_masks = {k: resample_mask(m, new_shape, params.mask_interpolation) for k, m in masks.items()}
    if not br.any():
        raise VolumeError("brain mask is empty after resampling", case=case, path=image.path)
    raw = img[br > 0]
    try:
        img, mean, std = zscore(img, br, params.normalisation)
    except ValueError as exc:
        raise VolumeError(str(exc), case=case, path=image.path) from exc
    rec = {
        "crop": crop,
        "cropped_shape": list(data.shape),
        "output": {"shape": list(img.shape), "affine": out_aff.tolist(), "spacing": list(affine_spacing(out_aff))},
        "normalisation": {"method": params.normalisation, "mean": mean, "std": std},
        "qc": intensity_qc(raw, img[br > 0]),
    }
    return img, br, out_masks, rec


def _strip(image: Volume, params: PreprocessParams, brain_mask_path: PathLike | None, case: str | None,
           record: dict[str, Any]) -> np.ndarray:
    """The brain mask on the canonical input grid from the skull-strip backend (timing recorded)."""
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


def preprocess_image(image_path: PathLike, params: PreprocessParams, brain_mask_path: PathLike | None = None,
                     *, case: str | None = None, return_brain: bool = False) -> tuple[Any, ...]:
    """Preprocess one image for inference (no lesion mask): skull strip, crop, resample, normalise.

    Parameters
    ----------
    image_path : str or Path
        Any volume :func:`bmstudy.io.read_volume` reads.
    params : PreprocessParams
        The preprocessing parameters (those recorded by training, for inference).
    brain_mask_path : str or Path, optional
        Brain mask for the ``'mask'`` backend (and ``'auto'`` when given); must be aligned with the image.
    case : str, optional
        Patient id, named in errors.
    return_brain : bool, default=False
        Also return the brain mask on the preprocessed grid (uint8; all ones for ``skull_strip='none'``).

    Returns
    -------
    image : ndarray of float32
        The preprocessed (canonical, resampled, normalised) image.
    record : dict
        The JSON-able transform record :func:`restore_to_input` / :func:`save_like_input` need.
    brain : ndarray of uint8
        Only with ``return_brain``.

    Raises
    ------
    VolumeError
        For unreadable or invalid input; :class:`AlignmentError` for a misaligned brain mask.
    """
    image = read_volume(image_path, case=case, kind="image")
    record = _record_base(image, params)
    brain = _strip(image, params, brain_mask_path, case, record)
    img, br, _, rec = _transform(image, brain, params, case=case)
    record.update(rec)
    record["inputs"] = {"image": str(image_path), "brain_mask": None if brain_mask_path is None else str(brain_mask_path)}
    return (img, record, br) if return_brain else (img, record)


# ----------------------------------------------------------------------------- one case


def _case_inputs(row: Mapping[str, Any]) -> dict[str, str]:
    inputs = {"image": str(row["image"]), "mask": str(row["mask"])}
    bm = row.get("brain_mask")
    if isinstance(bm, (str, os.PathLike)) and str(bm).strip():
        inputs["brain_mask"] = str(bm)
    return inputs


def _base_row(row: Mapping[str, Any], params: PreprocessParams) -> dict[str, Any]:
    """The report columns every row has, whatever its status."""
    return {"patient_id": str(row["patient_id"]), "site": row.get("site", ""), "split": row.get("split", ""),
            "params_hash": params.hash(), "cached": False}


def _report_row(image: Volume, record: dict[str, Any], mask_in: np.ndarray, img: np.ndarray, br: np.ndarray,
                mask_out: np.ndarray) -> dict[str, Any]:
    """The report columns of an ``ok`` case (also stored as ``meta.json``'s ``report``)."""
    vox_in = float(np.prod(image.spacing)) / 1000.0
    vox_out = float(np.prod(record["output"]["spacing"])) / 1000.0
    m_in, m_out = float(mask_in.sum()) * vox_in, float(mask_out.sum()) * vox_out
    return {
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


def _process_case(row: Mapping[str, Any], out_dir: PathLike, params: PreprocessParams,
                  code: str | None = None) -> dict[str, Any]:
    """Preprocess one manifest row into ``out_dir/<pid>/`` (no cache check); raises on any problem."""
    t0 = time.perf_counter()
    pid = str(row["patient_id"])
    folder = case_dir(out_dir, pid)
    inputs = _case_inputs(row)
    for name in (CASE_FILES[-1], *CASE_FILES[:-1]):  # meta.json first: no stale outputs if this run fails
        (folder / name).unlink(missing_ok=True)
    image = read_volume(inputs["image"], case=pid, kind="image")
    mvol = read_volume(inputs["mask"], case=pid, kind="mask")
    check_alignment(image, mvol, params, case=pid, what="mask")
    mask = binarize_mask(mvol.data, params, case=pid, path=mvol.path)
    del mvol
    record = _record_base(image, params)
    brain = _strip(image, params, inputs.get("brain_mask"), pid, record)
    img, br, masks, rec = _transform(image, brain, params, {"mask": mask}, case=pid)
    record.update(rec)
    report = _report_row(image, record, mask, img, br, masks["mask"])
    record["patient_id"] = pid
    record["input_files"] = {role: input_fingerprint(p) for role, p in inputs.items()}
    record["code_hash"] = code or code_hash()
    record["code_modules"] = list(CODE_MODULES)
    record["report"] = report
    # meta.json last: its presence (with matching hashes) marks the case complete
    atomic_save_npy(folder / "image.npy", img)
    atomic_save_npy(folder / "mask.npy", masks["mask"])
    atomic_save_npy(folder / "brain.npy", br)
    record["seconds"] = round(time.perf_counter() - t0, 3)
    atomic_write_json(folder / "meta.json", record)
    return {**_base_row(row, params), **report, "seconds": record["seconds"]}


def _finished_row(row: Mapping[str, Any], out_dir: Path, params: PreprocessParams, code: str) -> dict[str, Any] | None:
    """The report row of a cached case, or None to (re)compute it (also when the row cannot be checked)."""
    try:
        cached = cached_report_row(case_dir(out_dir, str(row["patient_id"])), _case_inputs(row), params, code=code)
    except Exception:  # noqa: BLE001  the case is then run, and reports its own error
        return None
    return None if cached is None else {**_base_row(row, params), **cached, "seconds": 0.0}


def _run(rows: Sequence[Mapping[str, Any]], out_dir: Path, params: PreprocessParams, *, n_jobs: int, force: bool,
         progress: bool) -> list[dict[str, Any]]:
    """:func:`run_cases` over manifest rows under the folder's lock; every row completed with the base columns."""
    code = code_hash()
    with folder_lock(out_dir, "preprocessing output folder"):
        clean_stale_temps(out_dir)
        result = run_cases(
            _process_case, rows, kwargs={"out_dir": out_dir, "params": params, "code": code},
            is_finished=None if force else (lambda row: _finished_row(row, out_dir, params, code)),
            n_jobs=max(1, int(n_jobs)), excluded=EXCLUDED_ERRORS, desc="preprocess", progress=progress)
    return [{**_base_row(row, params), **r} for row, r in zip(rows, result.rows)]


def preprocess_case(row: Mapping[str, Any], out_dir: PathLike, params: PreprocessParams, *,
                    force: bool = False) -> dict[str, Any]:
    """Preprocess one manifest row into ``out_dir/<pid>/``; never raises for data problems.

    Parameters
    ----------
    row : mapping
        A manifest row: ``patient_id``, ``image``, ``mask``, optional ``brain_mask``, ``site``, ``split``.
    out_dir : str or Path
        The preprocessing output folder.
    params : PreprocessParams
        The preprocessing parameters.
    force : bool, default=False
        Recompute even when the case is cached.

    Returns
    -------
    dict
        The case's report row (:data:`REPORT_COLUMNS`). Status ``ok``; ``excluded`` for input problems
        (:class:`VolumeError`: unreadable, 4-D, NaN/Inf, constant, misaligned, non-binary mask);
        ``failed`` for anything else (message in ``reason``, naming the case).
    """
    return _run([row], Path(out_dir), params, n_jobs=1, force=force, progress=False)[0]


# ----------------------------------------------------------------------------- cohort


def _rows(manifest_df: pd.DataFrame) -> list[dict[str, Any]]:
    missing = {"patient_id", "image", "mask"} - set(manifest_df.columns)
    if missing:
        raise ValueError(f"manifest lacks columns {sorted(missing)}")
    if manifest_df["patient_id"].duplicated().any():
        dup = manifest_df.loc[manifest_df["patient_id"].duplicated(), "patient_id"].tolist()
        raise ValueError(f"duplicate patient_id in manifest: {dup[:5]}")
    bad = [f"row {i} patient_id {v!r}: {why}" for i, v in enumerate(manifest_df["patient_id"])
           if (why := id_problem(v if isinstance(v, str) else str(v))) is not None]
    bad += [f"patient_ids {g} differ only in letter case" for g in duplicate_ids(map(str, manifest_df["patient_id"]))]
    if bad:
        raise ValueError("unsafe patient ids (they name output folders):\n" + "\n".join(bad[:20]))
    rows = []
    for rec in manifest_df.to_dict("records"):
        rows.append({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in rec.items()})
    return rows


def preprocess_cohort(manifest_df: pd.DataFrame, out_dir: PathLike, params: PreprocessParams | None = None,
                      n_jobs: int = 1, *, force: bool = False, qc: bool = True, progress: bool = True) -> pd.DataFrame:
    """Preprocess every manifest row into ``out_dir`` (cached, resumable); returns and writes the report.

    Parameters
    ----------
    manifest_df : DataFrame
        The data manifest (at least ``patient_id``, ``image``, ``mask``; unique ids).
    out_dir : str or Path
        The output folder (created).
    params : PreprocessParams, optional
        Default ``PreprocessParams()``.
    n_jobs : int, default=1
        Worker processes (each case's memory is independent; keep it small on big volumes).
    force : bool, default=False
        Recompute cached cases.
    qc : bool, default=True
        Also write the QC figures and table (:func:`write_qc`) when any case is ``ok``.
    progress : bool, default=True
        Show a progress bar.

    Returns
    -------
    DataFrame
        One row per manifest row, in manifest order, with the columns :data:`REPORT_COLUMNS`; also
        written to ``out_dir/preprocess_report.csv``.

    Raises
    ------
    ValueError
        When the manifest lacks ``patient_id``/``image``/``mask``, repeats a patient id (also ignoring
        letter case) or holds an unsafe one (:func:`bmstudy.utils.id_problem`).
    bmstudy.io.LockError
        When another live process is writing into ``out_dir``.
    """
    params = params or PreprocessParams()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = _rows(manifest_df)
    with folder_lock(out_dir, "preprocessing output folder"):  # the report and QC too (re-entrant with _run's)
        report = pd.DataFrame(_run(rows, out_dir, params, n_jobs=n_jobs, force=force, progress=progress))
        for col in REPORT_COLUMNS:
            if col not in report.columns:
                report[col] = None
        report = report[list(REPORT_COLUMNS)]
        atomic_to_csv(report, out_dir / REPORT_NAME)
        counts = report["status"].value_counts().to_dict()
        log.info("preprocessed %d cases into %s: %s (%d from cache)", len(report), out_dir, counts,
                 int(report["cached"].sum()))
        if qc and (report["status"] == "ok").any():
            write_qc(out_dir, report)
    return report


# ----------------------------------------------------------------------------- CLI


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``bmstudy preprocess`` options to ``parser``.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The sub-command's parser.
    """
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
    """Run ``bmstudy preprocess``.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed options (:func:`add_cli_arguments`).

    Returns
    -------
    int
        :func:`bmstudy.cases.exit_code`: 0 every case ok, 3 some excluded or failed (others ok), 1 none ok.
    """
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
    return exit_code(report)
