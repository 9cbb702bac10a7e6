"""Lesion-wise analysis: connected components of reference and prediction, matched BraTS-METS style.

A lesion is a connected component (26-connectivity by default) of at least
:data:`DEFAULT_MIN_VOLUME_MM3`; its size is summarised by the equivalent-sphere diameter and one of
:data:`SIZE_BINS`. :func:`lesion_table` lists every lesion of one patient with its match and Dice,
:func:`lesion_metrics` summarises one patient (detection sensitivity, precision, lesion-wise Dice)
and :func:`lesion_summary_by_size` a cohort per size bin (the lesion-detection table).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from scipy import ndimage

from .diameters import axial_diameters_mm
from .voxel import _check_same_shape, _mask, _ratio

__all__ = [
    "SIZE_BINS",
    "DEFAULT_MIN_VOLUME_MM3",
    "LESION_COLUMNS",
    "equivalent_diameter_mm",
    "size_bin",
    "connected_components",
    "lesion_table",
    "lesion_metrics",
    "lesion_metrics_from_table",
    "lesion_summary_by_size",
]

#: Lesion size bins by equivalent-sphere diameter: d < 3 mm, 3 <= d <= 10 mm, d > 10 mm.
SIZE_BINS: tuple[str, ...] = ("<3 mm", "3-10 mm", ">10 mm")
#: Connected components smaller than this (mm^3) are ignored as specks (3 voxels at 1 mm isotropic;
#: the equivalent-sphere diameter of 3 mm^3 is 1.8 mm, below any clinically reported metastasis).
DEFAULT_MIN_VOLUME_MM3: float = 3.0


def equivalent_diameter_mm(volume_mm3: np.ndarray | float) -> np.ndarray | float:
    """Diameter (mm) of the sphere with the given volume: ``(6 V / pi) ** (1/3)``.

    Parameters
    ----------
    volume_mm3 : float or array-like of float
        Volume(s) in mm^3.

    Returns
    -------
    float or ndarray of float64
    """
    return np.cbrt(6.0 * np.asarray(volume_mm3, dtype=np.float64) / np.pi)


def size_bin(diameter_mm: float) -> str:
    """Size bin of an equivalent-sphere diameter.

    Parameters
    ----------
    diameter_mm : float

    Returns
    -------
    str
        ``'<3 mm'``, ``'3-10 mm'`` (both ends included) or ``'>10 mm'`` (:data:`SIZE_BINS`).
    """
    if diameter_mm < 3.0:
        return SIZE_BINS[0]
    if diameter_mm <= 10.0:
        return SIZE_BINS[1]
    return SIZE_BINS[2]


def _structure(connectivity: int) -> np.ndarray:
    rank = {6: 1, 18: 2, 26: 3}.get(int(connectivity))
    if rank is None:
        raise ValueError(f"connectivity must be 6, 18 or 26, got {connectivity}")
    return ndimage.generate_binary_structure(3, rank)


def _components(mask: np.ndarray, structure: np.ndarray, min_voxels: float) -> tuple[np.ndarray, np.ndarray]:
    """Label ``mask``; drop components below ``min_voxels``; return (labels 1..K, sizes[K])."""
    lab, n = ndimage.label(mask, structure=structure)
    if n == 0:
        return lab, np.zeros(0, dtype=np.int64)
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    keep = sizes >= min_voxels
    keep[0] = False
    if not keep[1:].all():
        remap = np.zeros(n + 1, dtype=lab.dtype)
        remap[keep] = np.arange(1, int(keep.sum()) + 1, dtype=lab.dtype)
        lab = remap[lab]
    return lab, sizes[keep].astype(np.int64)


def _validate_spacing(spacing: Sequence[float]) -> tuple[float, float, float]:
    sp = tuple(float(s) for s in spacing)
    if len(sp) != 3 or not all(np.isfinite(s) and s > 0 for s in sp):
        raise ValueError(f"spacing must be three positive voxel sizes in mm, got {spacing}")
    return sp  # type: ignore[return-value]


def _voxel_and_min(spacing: Sequence[float], min_volume_mm3: float) -> tuple[float, float]:
    """``(voxel volume mm^3, smallest kept component in voxels)`` after validating both inputs."""
    sp = _validate_spacing(spacing)
    if not (min_volume_mm3 >= 0):
        raise ValueError(f"min_volume_mm3 must be >= 0, got {min_volume_mm3}")
    voxel = sp[0] * sp[1] * sp[2]
    return voxel, float(min_volume_mm3) / voxel - 1e-9


def connected_components(
    mask: np.ndarray,
    spacing: Sequence[float],
    min_volume_mm3: float = DEFAULT_MIN_VOLUME_MM3,
    connectivity: int = 26,
) -> tuple[np.ndarray, np.ndarray]:
    """Lesions of one 3-D mask: connected components of at least ``min_volume_mm3``.

    Parameters
    ----------
    mask : array-like of bool or 0/1, 3-D
        The mask (validated by :func:`bmstudy.io.as_binary`).
    spacing : sequence of 3 float
        Voxel size in mm along the mask's axes.
    min_volume_mm3 : float, default=3.0
        Smaller components are dropped (:data:`DEFAULT_MIN_VOLUME_MM3`).
    connectivity : {6, 18, 26}, default=26
        Voxel neighbourhood of a component.

    Returns
    -------
    labels : ndarray of int, same shape
        0 for background, 1..K for the kept components (in scan order).
    sizes : ndarray of int64, shape (K,)
        Voxel count of each kept component.

    Raises
    ------
    ValueError
        For a bad spacing, a negative ``min_volume_mm3``, an unknown connectivity or a non-0/1 mask.
    """
    _, min_voxels = _voxel_and_min(spacing, min_volume_mm3)
    return _components(_mask(mask, "mask"), _structure(connectivity), min_voxels)


#: Columns of :func:`lesion_table`.
LESION_COLUMNS: tuple[str, ...] = (
    "origin", "label", "n_voxels", "volume_mm3", "diameter_mm", "size_bin", "matched", "dice",
    "axial_diameter_mm", "size_bin_axial")
_LESION_DTYPES = {"origin": object, "label": np.int64, "n_voxels": np.int64, "volume_mm3": np.float64,
                  "diameter_mm": np.float64, "size_bin": object, "matched": bool, "dice": np.float64,
                  "axial_diameter_mm": np.float64, "size_bin_axial": object}


def _pair_overlaps(t_lab: np.ndarray, p_lab: np.ndarray, n_pred: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(truth label, pred label, overlap voxels)`` of every overlapping component pair."""
    both = (t_lab > 0) & (p_lab > 0)
    tl = t_lab[both].astype(np.int64)
    pl = p_lab[both].astype(np.int64)
    if not tl.size:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    key, cnt = np.unique(tl * (n_pred + 1) + pl, return_counts=True)
    return key // (n_pred + 1), key % (n_pred + 1), cnt


def _match_side(n: int, sizes: np.ndarray, own: np.ndarray, other: np.ndarray, other_sizes: np.ndarray,
                cnt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(matched, dice)`` of the ``n`` components of one side against the union of their partners."""
    inter = np.bincount(own, weights=cnt, minlength=n + 1)[1:]
    matched = np.bincount(own, minlength=n + 1)[1:] > 0
    # size of the union of the (disjoint) partner components: sum over distinct partners
    union = np.bincount(own, weights=other_sizes[other - 1] if other.size else None, minlength=n + 1)[1:]
    dice = np.where(matched, 2.0 * inter / np.maximum(sizes + union, 1), 0.0)
    return matched, dice


def lesion_table(
    pred_mask: np.ndarray,
    truth_mask: np.ndarray,
    spacing: Sequence[float],
    min_volume_mm3: float = DEFAULT_MIN_VOLUME_MM3,
    connectivity: int = 26,
    axial_axis: int = 2,
) -> pd.DataFrame:
    """One row per lesion (connected component) of the reference and of the prediction.

    Matching (BraTS-METS style): components are found with ``connectivity`` (26 by default) and
    those smaller than ``min_volume_mm3`` are discarded from both masks. A reference lesion is
    *detected* (``matched``) when any kept predicted component overlaps it by at least one voxel; its
    ``dice`` is computed against the union of all predicted components that overlap it (0 when
    missed). A predicted component is ``matched`` when it overlaps any kept reference lesion (else it
    is a false positive, ``dice`` 0); its ``dice`` is against the union of the reference lesions it
    overlaps. Volumes use ``spacing`` (mm, any anisotropy); ``diameter_mm`` is the
    equivalent-sphere diameter and ``size_bin`` one of :data:`SIZE_BINS`; ``axial_diameter_mm`` is the
    longest in-plane diameter on the slices perpendicular to ``axial_axis`` (RANO-BM;
    :func:`bmstudy.evaluation.diameters.axial_diameters_mm`) and ``size_bin_axial`` its bin (same bins).

    Parameters
    ----------
    pred_mask, truth_mask : array-like of bool or 0/1, 3-D, same shape
        Predicted and reference masks.
    spacing : sequence of 3 float
        Voxel size in mm.
    min_volume_mm3 : float, default=3.0
        Smallest component counted as a lesion.
    connectivity : {6, 18, 26}, default=26
    axial_axis : int, default=2
        Voxel axis normal to the axial plane (:func:`bmstudy.evaluation.diameters.axial_axis`).

    Returns
    -------
    DataFrame
        Columns :data:`LESION_COLUMNS`: origin ('truth'|'pred'), label (1..K within its origin),
        n_voxels, volume_mm3, diameter_mm, size_bin, matched, dice, axial_diameter_mm,
        size_bin_axial. Rows: truth lesions first, then
        predicted components.

    Raises
    ------
    ValueError
        For masks of different shapes or not 3-D, non-0/1 masks, or invalid parameters.
    """
    _check_same_shape(pred_mask=pred_mask, truth_mask=truth_mask)
    if np.ndim(truth_mask) != 3:
        raise ValueError(f"lesion analysis needs 3-D masks, got shape {np.shape(truth_mask)}")
    voxel, min_voxels = _voxel_and_min(spacing, min_volume_mm3)
    st = _structure(connectivity)
    t_lab, t_size = _components(_mask(truth_mask, "truth_mask"), st, min_voxels)
    p_lab, p_size = _components(_mask(pred_mask, "pred_mask"), st, min_voxels)
    pair_t, pair_p, cnt = _pair_overlaps(t_lab, p_lab, p_size.size)
    t_matched, t_dice = _match_side(t_size.size, t_size, pair_t, pair_p, p_size, cnt)
    p_matched, p_dice = _match_side(p_size.size, p_size, pair_p, pair_t, t_size, cnt)
    rows = []
    for origin, lab, sizes, matched, dice in (("truth", t_lab, t_size, t_matched, t_dice),
                                              ("pred", p_lab, p_size, p_matched, p_dice)):
        vol = sizes * voxel
        diam = equivalent_diameter_mm(vol)
        axial = axial_diameters_mm(lab, sizes.size, spacing, axial_axis)
        for i in range(sizes.size):
            rows.append((origin, i + 1, int(sizes[i]), float(vol[i]), float(diam[i]), size_bin(float(diam[i])),
                         bool(matched[i]), float(dice[i]), float(axial[i]), size_bin(float(axial[i]))))
    return pd.DataFrame(rows, columns=list(LESION_COLUMNS)).astype(_LESION_DTYPES)


def _summary(n_true: int, n_pred: int, n_detected: int, n_tp_pred: int, dice_sum: float) -> dict[str, float]:
    n_fp = n_pred - n_tp_pred
    perfect = n_detected == n_true and n_fp == 0
    sens = _ratio(n_detected, n_true, perfect)
    prec = _ratio(n_tp_pred, n_pred, perfect)
    f1 = 2 * sens * prec / (sens + prec) if sens + prec > 0 else 0.0
    dice = _ratio(dice_sum, n_true + n_fp, perfect)  # type: ignore[arg-type]
    return {
        "n_true": int(n_true), "n_pred": int(n_pred), "n_detected": int(n_detected), "n_fp": int(n_fp),
        "lesion_sensitivity": float(sens), "lesion_precision": float(prec), "lesion_f1": float(f1),
        "lesion_dice": float(dice),
    }


def lesion_metrics(
    pred_mask: np.ndarray,
    truth_mask: np.ndarray,
    spacing: Sequence[float],
    min_volume_mm3: float = DEFAULT_MIN_VOLUME_MM3,
    connectivity: int = 26,
) -> dict[str, float]:
    """Lesion-wise summary of one patient (from :func:`lesion_table`).

    Keys: n_true, n_pred, n_detected (detected reference lesions), n_fp (predicted components
    overlapping no reference lesion = false positives of this patient), lesion_sensitivity =
    n_detected / n_true, lesion_precision = matched predicted components / n_pred, lesion_f1 (their
    harmonic mean, 0 when both are 0), lesion_dice = BraTS-METS lesion-wise Dice = sum of the
    reference lesions' Dice / (n_true + n_fp) (false positives count as Dice 0). Zero denominators
    follow the module rule: 1.0 when there are no reference and no predicted lesions, else 0.0.

    Parameters
    ----------
    pred_mask, truth_mask, spacing, min_volume_mm3, connectivity
        As :func:`lesion_table`.

    Returns
    -------
    dict of str to float

    Raises
    ------
    ValueError
        As :func:`lesion_table`.
    """
    table = lesion_table(pred_mask, truth_mask, spacing, min_volume_mm3=min_volume_mm3, connectivity=connectivity)
    return lesion_metrics_from_table(table)


def lesion_metrics_from_table(table: pd.DataFrame) -> dict[str, float]:
    """:func:`lesion_metrics` of one patient from its :func:`lesion_table` rows (no relabelling).

    Parameters
    ----------
    table : DataFrame
        The :func:`lesion_table` rows of ONE patient (``origin``, ``matched``, ``dice`` used).

    Returns
    -------
    dict of str to float

    Raises
    ------
    ValueError
        When columns are missing or the rows belong to more than one ``patient_id``.
    """
    missing = {"origin", "matched", "dice"} - set(table.columns)
    if missing:
        raise ValueError(f"lesion table lacks columns {sorted(missing)}")
    if "patient_id" in table.columns and table["patient_id"].nunique() > 1:
        raise ValueError("lesion_metrics_from_table expects the rows of ONE patient")
    t = table[table["origin"] == "truth"]
    p = table[table["origin"] == "pred"]
    return _summary(len(t), len(p), int(t["matched"].sum()), int(p["matched"].sum()), float(t["dice"].sum()))


def lesion_summary_by_size(lesions: pd.DataFrame, bin_column: str = "size_bin") -> pd.DataFrame:
    """Cohort-level lesion detection by size bin (rows '<3 mm', '3-10 mm', '>10 mm', 'all').

    ``lesions`` is the concatenation of :func:`lesion_table` rows (over any number of patients).
    Reference lesions are binned by their own size, predicted components by theirs. Columns:
    n_true, n_detected, sensitivity (n_detected / n_true; NaN when the bin holds no reference
    lesion -- a missing cell, not a score), mean_dice and median_dice of the reference lesions
    (missed ones count 0), n_pred, n_fp, precision (matched / n_pred; NaN when no prediction).
    With a ``patient_id`` column, ``n_patients`` and ``fp_per_patient`` (n_fp over the patients
    present in ``lesions``) are added.

    Parameters
    ----------
    lesions : DataFrame
        :func:`lesion_table` rows of any number of patients (e.g. ``lesions.csv``).
    bin_column : str, default='size_bin'
        The bins used: ``'size_bin'`` (equivalent-sphere diameter) or ``'size_bin_axial'`` (longest
        axial diameter, RANO-BM).

    Returns
    -------
    DataFrame
        Indexed by ``size_bin``.

    Raises
    ------
    ValueError
        When columns are missing or ``origin`` holds values other than 'truth'/'pred'.
    """
    missing = {"origin", bin_column, "matched", "dice"} - set(lesions.columns)
    if missing:
        raise ValueError(f"lesions frame lacks columns {sorted(missing)} (expected lesion_table rows)")
    bad = set(lesions["origin"].unique()) - {"truth", "pred"}
    if bad:
        raise ValueError(f"unknown lesion origin values {sorted(map(str, bad))}")
    n_pat = lesions["patient_id"].nunique() if "patient_id" in lesions.columns else None
    rows = []
    for name in (*SIZE_BINS, "all"):
        sub = lesions if name == "all" else lesions[lesions[bin_column] == name]
        t = sub[sub["origin"] == "truth"]
        p = sub[sub["origin"] == "pred"]
        n_true, n_det = len(t), int(t["matched"].sum())
        n_pred, n_tp = len(p), int(p["matched"].sum())
        row = {
            "size_bin": name,
            "n_true": n_true,
            "n_detected": n_det,
            "sensitivity": n_det / n_true if n_true else float("nan"),
            "mean_dice": float(t["dice"].mean()) if n_true else float("nan"),
            "median_dice": float(t["dice"].median()) if n_true else float("nan"),
            "n_pred": n_pred,
            "n_fp": n_pred - n_tp,
            "precision": n_tp / n_pred if n_pred else float("nan"),
        }
        if n_pat is not None:
            row["n_patients"] = int(n_pat)
            row["fp_per_patient"] = (n_pred - n_tp) / n_pat if n_pat else float("nan")
        rows.append(row)
    return pd.DataFrame(rows).set_index("size_bin")
