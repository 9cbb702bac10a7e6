"""One patient's evaluation: read reference and prediction, check the grid, compute every metric.

Every volume is read with :func:`bmstudy.io.read_volume`, so references (and brain masks) may be
NIfTI, NRRD, MetaImage or a DICOM series folder; masks are validated by :func:`bmstudy.io.as_binary`.
Prediction and reference must lie on the same voxel grid: the same shape and affine once both are in
canonical RAS+ orientation (so a file stored in another voxel order but on the same world grid is
accepted). The metrics are computed in the reference file's own voxel order, so lesions are
numbered as in that file.

Predictions are the files inference writes (:func:`prediction_paths`): ``<pid>_prob.nii.gz``
(float32 probabilities) or, as a fallback, ``<pid>.nii.gz`` (uint8 mask).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..io.binary import as_binary
from ..io.volumes import Volume, affine_spacing, read_volume
from ..utils import PathLike, get_logger
from .histograms import score_histogram
from .lesions import lesion_metrics_from_table, lesion_table
from .voxel import case_metrics

__all__ = ["LESION_SUMMARY_KEYS", "prediction_paths", "evaluate_case"]

log = get_logger("bmstudy.evaluation.case")

#: Keys of :func:`bmstudy.evaluation.lesions.lesion_metrics` copied into ``metrics.csv``.
LESION_SUMMARY_KEYS: tuple[str, ...] = (
    "n_true", "n_pred", "n_detected", "n_fp",
    "lesion_sensitivity", "lesion_precision", "lesion_f1", "lesion_dice",
)
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
    d = Path(predictions_dir)
    return d / f"{patient_id}_prob.nii.gz", d / f"{patient_id}.nii.gz"


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
) -> tuple[dict[str, Any], pd.DataFrame, tuple[np.ndarray, np.ndarray]]:
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
        Smallest component counted as a lesion (None: the library default).
    n_bins : int, optional
        Score-histogram resolution (None: the library default).
    mask_labels, label_threshold : optional
        How a label-map reference becomes a 0/1 mask (:func:`bmstudy.io.as_binary`); by default the
        reference must hold only 0/1.

    Returns
    -------
    metrics_row : dict
        Voxel metrics, lesion summary, volumes and the prediction file used.
    lesion_rows : DataFrame
        :func:`~bmstudy.evaluation.lesions.lesion_table` rows with ``patient_id`` first.
    hist : (ndarray, ndarray)
        ``(pos_counts, neg_counts)`` int64 score histograms.

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
    return _case_results(pid, prob, truth, brain, _spacing(ref), source, threshold=threshold,
                         min_lesion_mm3=min_lesion_mm3, n_bins=n_bins)


def _case_results(pid: str, prob: np.ndarray, truth: np.ndarray, brain: np.ndarray | None,
                  spacing: tuple[float, float, float], source: Path, *, threshold: float,
                  min_lesion_mm3: float | None, n_bins: int | None,
                  ) -> tuple[dict[str, Any], pd.DataFrame, tuple[np.ndarray, np.ndarray]]:
    """Metrics row, lesion rows and score histograms of one patient's arrays (same grid)."""
    voxel_mm3 = float(np.prod(spacing))
    pred = prob >= threshold
    row: dict[str, Any] = {"patient_id": pid}
    row.update({k: float(v) for k, v in case_metrics(prob, truth, threshold=threshold, mask=brain).items()})
    lesion_kwargs: dict[str, Any] = {}
    if min_lesion_mm3 is not None:
        lesion_kwargs["min_volume_mm3"] = float(min_lesion_mm3)
    lesions = lesion_table(pred, truth, spacing, **lesion_kwargs)
    summary = lesion_metrics_from_table(lesions)
    row.update({k: summary[k] for k in LESION_SUMMARY_KEYS if k in summary})
    row["truth_volume_ml"] = float(truth.sum()) * voxel_mm3 / 1000.0
    row["pred_volume_ml"] = float(pred.sum()) * voxel_mm3 / 1000.0
    row["prediction_file"] = str(source)
    hist_kwargs: dict[str, Any] = {"mask": brain}
    if n_bins is not None:
        hist_kwargs["n_bins"] = int(n_bins)
    pos, neg = score_histogram(prob, truth, **hist_kwargs)
    lesions = lesions.copy()
    lesions.insert(0, "patient_id", pid)
    return row, lesions, (np.asarray(pos, dtype=np.int64), np.asarray(neg, dtype=np.int64))
