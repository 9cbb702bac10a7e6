"""One patient's evaluation: read reference and prediction, check the grid, compute every metric.

Every volume is read with :func:`bmstudy.io.read_volume`, so references (and brain masks) may be
NIfTI, NRRD, MetaImage or a DICOM series folder; masks are validated by :func:`bmstudy.io.as_binary`.
Prediction and reference must lie on the same voxel grid: the same shape and affine once both are in
canonical RAS+ orientation (so a file stored in another voxel order but on the same world grid is
accepted). The metrics are computed in the reference file's own voxel order, so lesions are
numbered as in that file.

Predictions are the files inference writes (:func:`prediction_paths`): ``<pid>_prob.nii.gz``
(float32 probabilities) or, as a fallback, ``<pid>.nii.gz`` (uint8 mask).

Besides the paper's voxel metrics and the any-overlap lesion table, each case gets the BraTS-METS
2023 lesion-wise scores (:data:`BRATS_COLUMNS`, :func:`bmstudy.evaluation.brats.brats_lesion_metrics`),
the whole-mask surface distances ``hd95`` and ``nsd`` at ``nsd_tolerance_mm``
(:func:`bmstudy.evaluation.surface.surface_metrics`; one mask empty: HD95 374 mm as BraTS, NSD 0;
both empty: 0 and 1) and the FROC candidates (:func:`bmstudy.evaluation.froc.lesion_scores`:
components of ``prob >= froc_candidate_threshold`` scored by their maximum probability, BraTS
matching) as rows of ``froc.csv``. Lesion diameters: the equivalent-sphere diameter and the longest
axial diameter (RANO-BM), the axial axis taken from the reference file's affine
(:func:`bmstudy.evaluation.diameters.axial_axis`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..io.binary import as_binary
from ..io.volumes import Volume, affine_spacing, read_volume
from ..plan import EvalParams
from ..utils import PathLike, get_logger, safe_join
from .brats import BRATS_KEYS, brats_lesion_metrics
from .diameters import axial_axis
from .froc import lesion_scores
from .histograms import score_histogram
from .lesions import lesion_metrics_from_table, lesion_table
from .surface import BRATS_MAX_DISTANCE_MM, surface_metrics
from .voxel import case_metrics

__all__ = ["LESION_SUMMARY_KEYS", "BRATS_COLUMNS", "SURFACE_COLUMNS", "FROC_COLUMNS", "prediction_paths",
           "evaluate_case"]

log = get_logger("bmstudy.evaluation.case")

#: Keys of :func:`bmstudy.evaluation.lesions.lesion_metrics` copied into ``metrics.csv``.
LESION_SUMMARY_KEYS: tuple[str, ...] = (
    "n_true", "n_pred", "n_detected", "n_fp",
    "lesion_sensitivity", "lesion_precision", "lesion_f1", "lesion_dice",
)
#: ``metrics.csv`` columns of the BraTS-METS lesion-wise scores (``brats_`` + :data:`BRATS_KEYS`).
BRATS_COLUMNS: tuple[str, ...] = tuple(f"brats_{k}" for k in BRATS_KEYS)
#: ``metrics.csv`` columns of the whole-mask surface distances.
SURFACE_COLUMNS: tuple[str, ...] = ("hd95", "nsd")
#: Columns of the per-case FROC rows (``froc.csv``): one row per counted truth lesion
#: (``kind='lesion'``, ``score`` NaN when no candidate matches it) and per false-positive candidate.
FROC_COLUMNS: tuple[str, ...] = ("patient_id", "kind", "label", "volume_mm3", "diameter_mm", "axial_diameter_mm",
                                 "score")
_AFFINE_ATOL = 1e-3


def prediction_paths(predictions_dir: PathLike, patient_id: str) -> tuple[Path, Path]:
    """The files inference writes for one patient.

    Parameters
    ----------
    predictions_dir : path-like
    patient_id : str

    Returns
    -------
    prob_path, mask_path : Path
        ``<pid>_prob.nii.gz`` and ``<pid>.nii.gz`` in ``predictions_dir``.
    """
    return (safe_join(predictions_dir, f"{patient_id}_prob.nii.gz"),
            safe_join(predictions_dir, f"{patient_id}.nii.gz"))


def _read(path: Path, what: str, pid: str) -> Volume:
    """Read a volume (any format of :func:`bmstudy.io.read_volume`); errors name case and file."""
    if not path.exists():
        raise FileNotFoundError(f"case {pid!r}: {what} not found: {path}")
    return read_volume(path, case=pid, kind="mask")


def _check_grid(pid: str, ref: Volume, vol: Volume, what: str) -> None:
    """``vol`` must lie on the reference's voxel grid (compared in canonical RAS+ orientation)."""
    if vol.data.shape != ref.data.shape:
        raise ValueError(
            f"case {pid!r}: {what} {vol.path} has shape {vol.data.shape} but the reference mask {ref.path} "
            f"has shape {ref.data.shape} (predictions must be in the input's voxel grid)"
        )
    if not np.allclose(vol.affine, ref.affine, atol=_AFFINE_ATOL):
        raise ValueError(
            f"case {pid!r}: {what} {vol.path} affine differs from the reference mask {ref.path} "
            f"(max abs diff {np.max(np.abs(vol.affine - ref.affine)):.4g}; predictions must be in "
            "the input's voxel grid)"
        )


def _spacing(ref: Volume) -> tuple[float, float, float]:
    """Voxel size (mm) along the reference file's own axes (NIfTI: the header's pixdim, as stored)."""
    if ref.format == "nifti":
        import nibabel as nib

        return tuple(float(z) for z in nib.load(str(ref.path)).header.get_zooms()[:3])  # type: ignore[return-value]
    return affine_spacing(ref.source_affine)


def _read_prediction(pid: str, ref: Volume, predictions_dir: PathLike) -> tuple[np.ndarray, Path]:
    """``(probabilities on the reference grid as float32, source file)``; the mask is the fallback."""
    prob_path, mask_path = prediction_paths(predictions_dir, pid)
    if prob_path.is_file():
        vol = _read(prob_path, "probability map", pid)
        _check_grid(pid, ref, vol, "probability map")
        prob = np.asarray(vol.data, dtype=np.float32)
        if prob.size and (prob.min() < 0.0 or prob.max() > 1.0):
            raise ValueError(
                f"case {pid!r}: probability map {prob_path} has values outside [0, 1] "
                f"(min {prob.min():.4g}, max {prob.max():.4g})"
            )
        return prob, prob_path
    if mask_path.is_file():
        vol = _read(mask_path, "prediction mask", pid)
        _check_grid(pid, ref, vol, "prediction mask")
        log.warning("case %r: no probability map %s; AUC computed from the binary mask %s", pid, prob_path, mask_path)
        return as_binary(vol.data, "prediction mask", case=pid, path=mask_path).astype(np.float32), mask_path
    raise FileNotFoundError(f"case {pid!r}: no prediction found: neither {prob_path} nor {mask_path} exists")


def evaluate_case(
    patient_id: str,
    truth_path: PathLike,
    predictions_dir: PathLike,
    *,
    threshold: float = 0.5,
    brain_mask_path: PathLike | None = None,
    min_lesion_mm3: float | None = None,
    n_bins: int | None = None,
    mask_labels: Sequence[int] | None = None,
    label_threshold: float | None = None,
    params: EvalParams | None = None,
) -> tuple[dict[str, Any], pd.DataFrame, tuple[np.ndarray, np.ndarray], pd.DataFrame]:
    """Evaluate one patient against its prediction.

    Voxel metrics use the probability map (``<pid>_prob.nii.gz``); lesion analysis uses the same map
    thresholded at ``threshold`` so both agree. When only the uint8 mask exists it serves as a
    (binary) score. Every file must share the reference mask's grid (shape and affine).

    Parameters
    ----------
    patient_id : str
    truth_path : path-like
        Reference lesion mask (NIfTI, NRRD, MHA, ... or a DICOM series folder).
    predictions_dir : path-like
        Folder with the patient's prediction files (:func:`prediction_paths`).
    threshold : float, default=0.5
        Probability threshold of the binary prediction (``>=``).
    brain_mask_path : path-like, optional
        Restricts voxel metrics and histograms to the brain.
    min_lesion_mm3 : float, optional
        Smallest component counted as a lesion in the any-overlap table (None: the library default).
    n_bins : int, optional
        Score-histogram resolution (None: the library default).
    mask_labels, label_threshold : optional
        How a label-map reference becomes a 0/1 mask (:func:`bmstudy.io.as_binary`); by default the
        reference must hold only 0/1.
    params : EvalParams, optional
        NSD tolerance, FROC candidate threshold, BraTS dilation / minimum volume and the ``empty``
        convention (default: ``EvalParams()``); its ``threshold`` etc. are NOT read (use the keywords).

    Returns
    -------
    metrics_row : dict
        Voxel metrics, lesion summary, BraTS lesion-wise scores, surface distances, volumes and the
        prediction file used.
    lesion_rows : DataFrame
        :func:`~bmstudy.evaluation.lesions.lesion_table` rows with ``patient_id`` first.
    hist : (ndarray, ndarray)
        ``(pos_counts, neg_counts)`` int64 score histograms.
    froc_rows : DataFrame
        :data:`FROC_COLUMNS` rows of this patient.

    Raises
    ------
    FileNotFoundError
        When the reference or every prediction file is missing.
    ValueError
        (including :class:`bmstudy.io.VolumeError`) for unreadable files, another grid, non-0/1
        masks or probabilities outside [0, 1]; the message names the case and the file.
    """
    pid = str(patient_id)
    truth_path = Path(truth_path)
    ref = _read(truth_path, "reference mask", pid)
    labels = None if mask_labels is None else tuple(int(v) for v in mask_labels)
    truth = as_binary(ref.data, "reference mask", case=pid, path=truth_path, labels=labels,
                      threshold=label_threshold)
    prob, source = _read_prediction(pid, ref, predictions_dir)
    brain = None
    if brain_mask_path is not None and str(brain_mask_path) != "":
        bvol = _read(Path(brain_mask_path), "brain mask", pid)
        _check_grid(pid, ref, bvol, "brain mask")
        brain = ref.to_source(as_binary(bvol.data, "brain mask", case=pid, path=brain_mask_path))
    # back to the reference file's voxel order (an exact permutation): lesions numbered as in the file
    truth, prob = ref.to_source(truth), ref.to_source(prob)
    return case_results(pid, prob, truth, brain, _spacing(ref), source, threshold=threshold,
                        min_lesion_mm3=min_lesion_mm3, n_bins=n_bins, params=params,
                        axis=axial_axis(ref.source_affine))


def case_results(pid: str, prob: np.ndarray, truth: np.ndarray, brain: np.ndarray | None,
                 spacing: tuple[float, float, float], source: PathLike | None = None, *, threshold: float = 0.5,
                 min_lesion_mm3: float | None = None, n_bins: int | None = None,
                 params: EvalParams | None = None, axis: int = 2,
                 ) -> tuple[dict[str, Any], pd.DataFrame, tuple[np.ndarray, np.ndarray], pd.DataFrame]:
    """:func:`evaluate_case`'s results from one patient's arrays (same grid, the file's voxel order).

    ``axis`` is the voxel axis normal to the axial plane; the other arguments as :func:`evaluate_case`.
    """
    ep = params if params is not None else EvalParams()
    voxel_mm3 = float(np.prod(spacing))
    pred = prob >= threshold
    row: dict[str, Any] = {"patient_id": pid}
    row.update({k: float(v) for k, v in
                case_metrics(prob, truth, threshold=threshold, mask=brain, empty=ep.empty).items()})
    lesion_kwargs: dict[str, Any] = {"axial_axis": int(axis)}
    if min_lesion_mm3 is not None:
        lesion_kwargs["min_volume_mm3"] = float(min_lesion_mm3)
    lesions = lesion_table(pred, truth, spacing, **lesion_kwargs)
    summary = lesion_metrics_from_table(lesions)
    row.update({k: summary[k] for k in LESION_SUMMARY_KEYS if k in summary})
    brats = brats_lesion_metrics(pred, truth, spacing, dilation=ep.brats_dilation,
                                 min_volume_mm3=ep.brats_min_volume_mm3)
    row.update({f"brats_{k}": brats[k] for k in BRATS_KEYS})
    surf = surface_metrics(pred, truth, spacing, ep.nsd_tolerance_mm, empty_distance=BRATS_MAX_DISTANCE_MM)
    row.update({k: float(surf[k]) for k in SURFACE_COLUMNS})
    row["truth_volume_ml"] = float(truth.sum()) * voxel_mm3 / 1000.0
    row["pred_volume_ml"] = float(pred.sum()) * voxel_mm3 / 1000.0
    row["prediction_file"] = "" if source is None else str(source)
    hist_kwargs: dict[str, Any] = {"mask": brain}
    if n_bins is not None:
        hist_kwargs["n_bins"] = int(n_bins)
    pos, neg = score_histogram(prob, truth, **hist_kwargs)
    lesions = lesions.copy()
    lesions.insert(0, "patient_id", pid)
    froc = _froc_rows(pid, prob, truth, spacing, ep, int(axis))
    return row, lesions, (np.asarray(pos, dtype=np.int64), np.asarray(neg, dtype=np.int64)), froc


def _froc_rows(pid: str, prob: np.ndarray, truth: np.ndarray, spacing: tuple[float, float, float],
               ep: EvalParams, axis: int) -> pd.DataFrame:
    """:data:`FROC_COLUMNS` rows: the counted truth lesions with their best candidate score, the FPs."""
    ls = lesion_scores(prob, truth, spacing, ep.froc_candidate_threshold, dilation=ep.brats_dilation,
                       min_volume_mm3=ep.brats_min_volume_mm3, case_id=pid, axial_axis=axis)
    les = ls.lesions
    fp = np.asarray(ls.fp_scores, dtype=np.float64)
    rows = pd.DataFrame({
        "patient_id": pid, "kind": ["lesion"] * len(les) + ["fp"] * fp.size,
        "label": np.concatenate([les["label"].to_numpy(np.int64), np.zeros(fp.size, np.int64)]),
        "volume_mm3": np.concatenate([les["volume_mm3"].to_numpy(float), np.full(fp.size, np.nan)]),
        "diameter_mm": np.concatenate([les["diameter_mm"].to_numpy(float), np.full(fp.size, np.nan)]),
        "axial_diameter_mm": np.concatenate([les["axial_diameter_mm"].to_numpy(float), np.full(fp.size, np.nan)]),
        "score": np.concatenate([les["score"].to_numpy(float), fp]),
    })
    return rows[list(FROC_COLUMNS)]
