"""FROC analysis: lesion sensitivity against mean false positives per patient, and the FROC score.

Per case, the probability map is thresholded at a low ``candidate_threshold``; every 26-connected
component of ``prob >= candidate_threshold`` is a *candidate* scored by the maximum probability inside
it. Candidates are matched to truth lesions with the BraTS 2023 rules of
:mod:`bmstudy.evaluation.brats` (lesions merged by dilation, a candidate matches a lesion when it
overlaps the dilated lesion; ``matching='any_overlap'`` for a shared voxel). Lesions with volume
``<= min_volume_mm3`` are not counted, and a candidate matching only such a lesion is neither a true
nor a false positive (as in the BraTS code). A candidate matching no lesion is a false positive.

Operating point at score threshold ``s``: a counted lesion is detected when one of its matching
candidates has score ``>= s``; the false positives are the unmatched candidates with score ``>= s``.
The candidates are fixed at ``candidate_threshold`` (they are not re-segmented at ``s``), the usual
reading of FROC for segmentation output.

FROC score: the mean sensitivity at 0.125, 0.25, 0.5, 1, 2, 4 and 8 false positives per patient, the
sensitivity at each rate read off the curve by **linear interpolation** in FP per patient between
operating points (``np.interp``, flat beyond the last point), the curve starting at (0, 0) -- the
LUNA16 convention (its script interpolates the same curve on a 10001-point grid and reads the grid
point nearest each rate; CAMELYON16 interpolates likewise). Among operating points with the same FP
rate the highest sensitivity is used.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from .brats import Matching, match_lesions
from .diameters import axial_diameters_mm

__all__ = ["FROC_FP_POINTS", "LesionScores", "lesion_scores", "froc_curve", "froc_score", "scores_from_rows"]

#: The FP-per-patient rates of the FROC score (LUNA16).
FROC_FP_POINTS: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
_CURVE_COLUMNS = ["threshold", "fp_per_patient", "sensitivity", "n_detected", "n_truth", "n_fp", "n_patients"]


@dataclass
class LesionScores:
    """Scored lesions and false-positive candidates of one case (from :func:`lesion_scores`).

    Attributes
    ----------
    lesions : DataFrame
        One row per counted truth lesion: ``label``, ``n_voxels``, ``volume_mm3``, ``diameter_mm``
        (equivalent sphere), ``axial_diameter_mm`` (longest axial diameter, RANO-BM), ``score`` (max score of its matching candidates; NaN when none).
    fp_scores : ndarray of float
        Scores of the false-positive candidates.
    case_id : str or None
        Optional patient id.
    """

    lesions: pd.DataFrame
    fp_scores: np.ndarray
    case_id: str | None = None


def lesion_scores(
    prob: np.ndarray, truth: np.ndarray, spacing: Sequence[float], candidate_threshold: float = 0.1, *,
    dilation: int = 1, min_volume_mm3: float = 2.0, matching: Matching = "brats", case_id: str | None = None,
    axial_axis: int = 2,
) -> LesionScores:
    """Candidates of one case scored by their maximum probability, matched to the truth lesions.

    Parameters
    ----------
    prob : ndarray
        3-D probability (or any real score) map.
    truth : ndarray
        Binary 3-D reference of the same shape.
    spacing : sequence of float
        Voxel size (mm) per axis.
    candidate_threshold : float
        Candidates are the components of ``prob >= candidate_threshold`` (low, to reach high FP rates).
    dilation, min_volume_mm3, matching
        As :func:`bmstudy.evaluation.brats.brats_lesion_metrics` (BraTS-METS defaults).
    case_id : str, optional
        Stored on the result.
    axial_axis : int, default=2
        Voxel axis normal to the axial plane (for ``axial_diameter_mm``).

    Returns
    -------
    LesionScores

    Raises
    ------
    ValueError
        Shape mismatch, non-finite scores, non-binary truth or bad spacing.
    """
    p = np.asarray(prob)
    if p.dtype.kind not in "uifb":
        raise TypeError(f"prob must be numeric, got dtype {p.dtype}")
    if p.dtype.kind == "f" and not np.isfinite(p).all():
        raise ValueError("prob contains non-finite values (NaN or inf)")
    m = match_lesions(p >= candidate_threshold, truth, spacing, dilation=dilation, matching=matching)
    n_c = m.pred_voxels.size
    # max score per candidate over its voxels only (ndimage.maximum would argsort the whole volume)
    inside = m.pred_labels > 0
    cand = np.full(n_c, -np.inf)
    np.maximum.at(cand, m.pred_labels[inside].astype(np.int64) - 1, p[inside].astype(np.float64))
    counted = np.flatnonzero(m.counted(min_volume_mm3)) + 1
    best = np.full(counted.size, np.nan)
    for i, k in enumerate(counted):
        comps = m.matched_components(int(k))
        if comps.size:
            best[i] = cand[comps - 1].max()
    vol = m.lesion_volume_mm3[counted - 1]
    axial = axial_diameters_mm(m.truth_labels, m.lesion_voxels.size, spacing, axial_axis)[counted - 1]
    lesions = pd.DataFrame({"label": counted.astype(np.int64), "n_voxels": m.lesion_voxels[counted - 1],
                            "volume_mm3": vol, "diameter_mm": np.cbrt(6.0 * vol / np.pi),
                            "axial_diameter_mm": axial, "score": best})
    return LesionScores(lesions=lesions, fp_scores=cand[m.false_positives() - 1], case_id=case_id)


def _curve(lesion_score: np.ndarray, fp: np.ndarray, n_patients: int) -> pd.DataFrame:
    """Operating points (threshold +inf first) from pooled lesion scores (NaN = never) and FP scores."""
    det = np.sort(lesion_score[~np.isnan(lesion_score)])
    fp = np.sort(fp)
    thr = np.unique(np.concatenate([det, fp]))[::-1]
    thr = np.concatenate([[np.inf], thr])
    n_det = det.size - np.searchsorted(det, thr, side="left")
    n_fp = fp.size - np.searchsorted(fp, thr, side="left")
    n_truth = lesion_score.size
    return pd.DataFrame({
        "threshold": thr, "fp_per_patient": n_fp / n_patients,
        "sensitivity": n_det / n_truth if n_truth else np.full(thr.size, np.nan),
        "n_detected": n_det.astype(np.int64), "n_truth": np.int64(n_truth), "n_fp": n_fp.astype(np.int64),
        "n_patients": np.int64(n_patients)})[_CURVE_COLUMNS]


def froc_curve(cases: Sequence[LesionScores], *, size_bin: Callable[[float], str] | None = None,
               diameter_column: str = "diameter_mm") -> pd.DataFrame:
    """FROC operating points over all thresholds, pooled over patients.

    Parameters
    ----------
    cases : sequence of LesionScores
        One per patient (patients without lesions or candidates included: they count in the FP rate).
    size_bin : callable, optional
        Maps a lesion's equivalent-sphere diameter (mm) to a bin name (e.g.
        :func:`bmstudy.evaluation.voxel.size_bin`). Then one curve per bin is returned (sensitivity
        over the bin's lesions, FP per patient over *all* false positives, which have no truth size)
        plus the pooled curve as bin ``'all'``, stacked with a ``size_bin`` column.
    diameter_column : str, default='diameter_mm'
        The lesions' diameter binned: ``'diameter_mm'`` (equivalent sphere) or ``'axial_diameter_mm'``.

    Returns
    -------
    DataFrame
        Columns threshold (descending; the first row is ``inf``: no candidate, 0 FP), fp_per_patient,
        sensitivity (NaN without truth lesions), n_detected, n_truth, n_fp, n_patients
        [, size_bin first].

    Raises
    ------
    ValueError
        When ``cases`` is empty.
    """
    if len(cases) == 0:
        raise ValueError("froc_curve needs at least one case")
    lesions = pd.concat([c.lesions for c in cases], ignore_index=True)
    if size_bin is not None and diameter_column not in lesions.columns:
        raise ValueError(f"lesion scores lack the column {diameter_column!r}")
    fp = np.concatenate([np.asarray(c.fp_scores, dtype=np.float64) for c in cases])
    scores = lesions["score"].to_numpy(dtype=np.float64)
    if size_bin is None:
        return _curve(scores, fp, len(cases))
    bins = np.array([size_bin(float(d)) for d in lesions[diameter_column]], dtype=object)
    parts = []
    for name in [*dict.fromkeys(bins.tolist()), "all"]:
        sel = np.ones(bins.size, bool) if name == "all" else bins == name
        part = _curve(scores[sel], fp, len(cases))
        part.insert(0, "size_bin", name)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def froc_score(curve: pd.DataFrame, fp_points: Sequence[float] = FROC_FP_POINTS) -> float:
    """Mean lesion sensitivity at the given FP-per-patient rates (LUNA16 convention, module docstring).

    Parameters
    ----------
    curve : DataFrame
        One curve from :func:`froc_curve` (select one ``size_bin`` first, e.g.
        ``curve.groupby('size_bin').apply(froc_score)``).
    fp_points : sequence of float
        FP-per-patient rates (default 0.125 ... 8).

    Returns
    -------
    float
        Mean interpolated sensitivity; NaN when the curve has no truth lesion.

    Raises
    ------
    ValueError
        When ``curve`` holds several size bins, lacks columns, or ``fp_points`` is empty / negative.
    """
    missing = {"fp_per_patient", "sensitivity"} - set(curve.columns)
    if missing:
        raise ValueError(f"curve lacks columns {sorted(missing)}")
    if "size_bin" in curve.columns and curve["size_bin"].nunique() > 1:
        raise ValueError("curve holds several size bins; select one (e.g. groupby('size_bin'))")
    pts = np.asarray(fp_points, dtype=np.float64)
    if pts.size == 0 or np.any(pts < 0):
        raise ValueError(f"fp_points must be non-negative rates, got {tuple(fp_points)}")
    sens = curve["sensitivity"].to_numpy(dtype=np.float64)
    if sens.size == 0 or np.isnan(sens).all():
        return float("nan")
    fpr = np.concatenate([[0.0], curve["fp_per_patient"].to_numpy(dtype=np.float64)])
    sens = np.concatenate([[0.0], sens])
    # one point per FP rate: the best sensitivity reached at that rate
    best = pd.Series(sens).groupby(fpr).max()
    return float(np.mean(np.interp(pts, best.index.to_numpy(dtype=np.float64), best.to_numpy())))


def scores_from_rows(rows: pd.DataFrame, patients: Sequence[str] | None = None) -> list[LesionScores]:
    """:class:`LesionScores` per patient from ``froc.csv`` rows (:data:`bmstudy.evaluation.case.FROC_COLUMNS`).

    Parameters
    ----------
    rows : DataFrame
        ``patient_id``, ``kind`` ('lesion' | 'fp'), ``label``, ``volume_mm3``, ``diameter_mm``,
        ``axial_diameter_mm``, ``score``.
    patients : sequence of str, optional
        Every evaluated patient (those without any row still count in the FP rate); default: the
        patients present in ``rows``.

    Returns
    -------
    list of LesionScores
        In the order of ``patients``.

    Raises
    ------
    ValueError
        When columns are missing.
    """
    need = {"patient_id", "kind", "label", "volume_mm3", "diameter_mm", "score"}
    if need - set(rows.columns):
        raise ValueError(f"FROC rows lack columns {sorted(need - set(rows.columns))}")
    ids = [str(p) for p in (patients if patients is not None else dict.fromkeys(rows["patient_id"].astype(str)))]
    by = {str(k): g for k, g in rows.groupby(rows["patient_id"].astype(str))}
    cols = [c for c in ("label", "volume_mm3", "diameter_mm", "axial_diameter_mm", "score") if c in rows.columns]
    out = []
    for pid in ids:
        g = by.get(pid, rows.iloc[:0])
        les = g[g["kind"] == "lesion"][cols].reset_index(drop=True)
        out.append(LesionScores(lesions=les, fp_scores=g.loc[g["kind"] == "fp", "score"].to_numpy(np.float64),
                                case_id=pid))
    return out
