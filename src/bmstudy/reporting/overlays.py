"""Paper Figure 3: annotation vs prediction masks on the slice through the largest lesion.

* :func:`select_overlay_cases` - patients spread over the range of Dice (best, median, worst, ...)
* :func:`load_overlay_cases` - image, reference and prediction through :func:`bmstudy.io.read_volume`
  (NIfTI, NRRD, MHA, DICOM), masks checked by :func:`bmstudy.io.as_binary`
* :func:`figure3_overlays` - the figure; :func:`largest_lesion_slice` - which slice
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..io import as_binary, read_volume
from ..utils import PathLike
from .common import finish_figure, ok_rows
from .render import METRIC_LABELS

__all__ = ["largest_lesion_slice", "select_overlay_cases", "load_overlay_cases", "figure3_overlays"]


def largest_lesion_slice(truth: np.ndarray, pred: np.ndarray | None = None, axis: int = 2) -> int:
    """Index along ``axis`` of the slice with the largest cross-section of the largest lesion.

    Parameters
    ----------
    truth : ndarray
        3-D reference mask; its largest 26-connected component is used.
    pred : ndarray, optional
        3-D prediction, used when ``truth`` is empty.
    axis : int, default 2
        Slicing axis.

    Returns
    -------
    int
        The slice index (the middle slice when both masks are empty).

    Raises
    ------
    ValueError
        A mask that is not 3-D, or an axis out of range.
    """
    from scipy import ndimage

    truth = np.asarray(truth)
    if truth.ndim != 3:
        raise ValueError(f"expected a 3-D mask, got shape {truth.shape}")
    if not -3 <= axis < 3:
        raise ValueError(f"axis must be 0, 1 or 2, got {axis}")
    for vol in (truth, pred):
        if vol is None:
            continue
        mask = np.asarray(vol) > 0
        if not mask.any():
            continue
        labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
        sizes = np.bincount(labels.ravel())[1:]
        comp = labels == (int(np.argmax(sizes)) + 1)
        other = tuple(a for a in range(3) if a != axis % 3)
        return int(np.argmax(comp.sum(axis=other)))
    return truth.shape[axis] // 2


def _metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric).replace(" Coefficient", "")


def select_overlay_cases(per_patient: pd.DataFrame, n: int = 4, metric: str = "dice") -> pd.DataFrame:
    """Up to ``n`` evaluated patients spread over the range of ``metric`` (best, ..., median, ..., worst).

    Parameters
    ----------
    per_patient : DataFrame
        The per-patient frame of ``evaluate_cohort`` (rows not ``ok`` or without ``metric`` are left out).
    n : int, default 4
        Cases wanted (fewer when fewer patients qualify).
    metric : str, default 'dice'
        Ranking metric, best first.

    Returns
    -------
    DataFrame
        The chosen rows, best first, with a ``label`` column (``'pid (split, Dice 0.83)'``) for
        :func:`figure3_overlays`.
    """
    ranked = ok_rows(per_patient).dropna(subset=[metric]).sort_values(metric, ascending=False)
    if ranked.empty or n < 1:
        return ranked.iloc[:0].assign(label=pd.Series(dtype=object))
    idx = np.unique(np.linspace(0, len(ranked) - 1, min(n, len(ranked))).round().astype(int))
    pick = ranked.iloc[idx]
    name = _metric_label(metric)
    labels = [f"{r['patient_id']} ({r['split']}, {name} {r[metric]:.2f})" for _, r in pick.iterrows()]
    return pick.assign(label=labels)


def load_overlay_cases(
    manifest_df: pd.DataFrame, predictions_dir: PathLike, patient_ids: Sequence[str], threshold: float = 0.5,
    *, labels: Sequence[str] | None = None, mask_labels: Sequence[int] | None = None,
    label_threshold: float | None = None,
) -> list[dict[str, Any]]:
    """Read image, reference mask and prediction of the given patients for :func:`figure3_overlays`.

    Parameters
    ----------
    manifest_df : DataFrame
        The study manifest (``patient_id``, ``image``, ``mask``).
    predictions_dir : path
        Inference output: ``<pid>.nii.gz`` (binary mask), else ``<pid>_prob.nii.gz`` thresholded.
    patient_ids : sequence of str
        Patients, in figure order.
    threshold : float, default 0.5
        Probability threshold when only the probability map exists (``>= threshold``).
    labels : sequence of str, optional
        Row titles, one per patient (default: the patient id).
    mask_labels, label_threshold : optional
        How a label-map reference becomes a 0/1 mask (:func:`bmstudy.io.as_binary`).

    Returns
    -------
    list of dict
        ``patient_id``, ``image`` (float32), ``truth``, ``pred`` (bool) and ``label`` when given;
        arrays in canonical RAS+ orientation (:func:`bmstudy.io.read_volume`).

    Raises
    ------
    KeyError
        A patient missing from the manifest.
    FileNotFoundError
        No prediction for a patient.
    ValueError
        Shapes that differ, or a reference that is not 0/1 (``VolumeError`` names the case and file).
    """
    from ..evaluation.case import prediction_paths  # lazily: only Figure 3 needs the evaluation reader

    patient_ids = [str(p) for p in patient_ids]
    if labels is not None and len(labels) != len(patient_ids):
        raise ValueError(f"load_overlay_cases: {len(labels)} labels for {len(patient_ids)} patients")
    by_id = manifest_df.set_index(manifest_df["patient_id"].astype(str))
    cases = []
    for i, pid in enumerate(patient_ids):
        if pid not in by_id.index:
            raise KeyError(f"patient {pid!r} not in the manifest")
        row = by_id.loc[pid]
        prob_path, mask_path = prediction_paths(predictions_dir, pid)
        if mask_path.is_file():
            pred = as_binary(read_volume(mask_path, case=pid, kind="mask").data, "prediction", case=pid, path=mask_path)
        elif prob_path.is_file():
            pred = read_volume(prob_path, case=pid, kind="mask").data >= threshold
        else:
            raise FileNotFoundError(f"case {pid!r}: no prediction found: neither {mask_path} nor {prob_path} exists")
        image = read_volume(row["image"], case=pid, kind="image").data.astype(np.float32)
        truth = as_binary(read_volume(row["mask"], case=pid, kind="mask").data, "reference", case=pid,
                          path=row["mask"], labels=None if mask_labels is None else tuple(mask_labels),
                          threshold=label_threshold)
        if not image.shape == truth.shape == pred.shape:
            raise ValueError(f"case {pid!r}: image {image.shape}, mask {truth.shape} and prediction "
                             f"{pred.shape} shapes differ ({row['image']}, {row['mask']}, {predictions_dir})")
        case = {"patient_id": pid, "image": image, "truth": truth, "pred": pred}
        if labels is not None:
            case["label"] = str(labels[i])
        cases.append(case)
    return cases


def _window(img: np.ndarray) -> tuple[float, float]:
    vals = img[np.isfinite(img)]
    fg = vals[vals != vals.min()] if vals.size and (vals != vals.min()).any() else vals
    if fg.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(fg, [1, 99.5])
    return float(lo), float(hi if hi > lo else lo + 1.0)


def figure3_overlays(
    cases: Sequence[Mapping[str, Any]],
    out: PathLike | None = None,
    *,
    axis: int = 2,
    alpha: float = 0.5,
    color: str = "red",
    titles: tuple[str, str] = ("Annotation Mask", "Prediction Mask"),
    panel_size: float = 2.8,
    **save_kwargs: Any,
) -> Figure:
    """Paper Figure 3: per case (row) the image slice through the largest reference lesion with the
    annotation mask (left) and the prediction mask (right) overlaid; rows are lettered A, B, C, ...

    Parameters
    ----------
    cases : sequence of mapping
        ``image``, ``truth``, ``pred`` (3-D arrays of one shape, (x, y, z) RAS), optional ``patient_id``
        / ``label`` (row title) and ``slice`` (see :func:`load_overlay_cases`).
    out : path, optional
        Also save as PNG and SVG (:func:`save_figure`).
    axis : int, default 2
        Slicing axis (2: axial).
    alpha : float, default 0.5
        Mask opacity.
    color : str, default 'red'
        Mask colour.
    titles : pair of str
        Column titles.
    panel_size : float, default 2.8
        Inches per panel.

    Returns
    -------
    Figure

    Raises
    ------
    ValueError
        No case, or arrays that are not 3-D of one shape.
    """
    from matplotlib.colors import ListedColormap

    if not cases:
        raise ValueError("figure3_overlays needs at least one case")
    n = len(cases)
    fig = Figure(figsize=(2 * panel_size, n * panel_size), layout="constrained")
    axes = fig.subplots(n, 2, squeeze=False)
    cmap = ListedColormap([color])
    for i, case in enumerate(cases):
        image, truth, pred = (np.asarray(case[k]) for k in ("image", "truth", "pred"))
        name = case.get("label", case.get("patient_id", f"case {i + 1}"))
        if image.ndim != 3 or image.shape != truth.shape or image.shape != pred.shape:
            raise ValueError(f"{name}: image {image.shape}, truth {truth.shape} and pred {pred.shape} "
                             "must be 3-D arrays of one shape")
        k = int(case.get("slice", largest_lesion_slice(truth, pred, axis)))
        sl = [np.take(v, k, axis=axis).T for v in (image, truth, pred)]
        lo, hi = _window(sl[0])
        for j, (mask, title) in enumerate(zip(sl[1:], titles)):
            ax = axes[i, j]
            ax.imshow(sl[0], cmap="gray", vmin=lo, vmax=hi, origin="lower", interpolation="nearest")
            ax.imshow(np.ma.masked_where(mask == 0, mask), cmap=cmap, alpha=alpha, origin="lower",
                      interpolation="nearest", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(title)
            if j == 0:
                ax.set_ylabel(f"{chr(65 + i) if i < 26 else i + 1}  {name}\nslice {k}", fontsize=8)
    return finish_figure(fig, out, **save_kwargs)
