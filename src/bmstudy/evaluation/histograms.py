"""Per-patient score histograms: the compact, exact input of the voxel-level AUC statistics.

:func:`score_histogram` quantises one patient's probabilities into lesion / background counts;
:func:`save_score_hists` and :func:`load_score_hists` write and read a cohort's histograms
(``score_hists.npz``, keys ``<patient_id>.pos`` / ``<patient_id>.neg``). They feed
:func:`bmstudy.statistics.auc_from_hist`, :func:`bmstudy.statistics.delong_unpaired_hist` and
:func:`bmstudy.statistics.cluster_bootstrap_auc_diff`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from ..utils import PathLike, atomic_path
from .voxel import _check_same_shape, _mask, _restrict, _scores

__all__ = ["DEFAULT_N_BINS", "score_histogram", "save_score_hists", "load_score_hists"]

#: Default histogram resolution (a power of two: the 0.5 threshold falls on a bin edge).
DEFAULT_N_BINS: int = 65536


def score_histogram(
    prob: np.ndarray, truth: np.ndarray, n_bins: int = DEFAULT_N_BINS, mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Histograms of quantised probabilities of the lesion and of the background voxels.

    Quantisation (floor): a probability ``p`` in [0, 1] goes to bin ``min(floor(p * n_bins),
    n_bins - 1)``; bin ``k`` covers ``[k/n_bins, (k+1)/n_bins)`` and the last bin also holds 1.0.
    With ``n_bins`` a multiple of 2 the 0.5 threshold falls on a bin edge, so thresholded metrics
    are unchanged by quantisation. The histograms are the exact input of
    :func:`bmstudy.statistics.auc_from_hist` / :func:`~bmstudy.statistics.delong_unpaired_hist`: they
    give the AUC of the quantised scores (values inside one bin count as ties).

    Parameters
    ----------
    prob : array-like of float
        Probabilities in [0, 1].
    truth : array-like of bool or 0/1
        Reference mask, same shape.
    n_bins : int, default=65536
        Number of bins (an integer >= 2).
    mask : array-like of bool or 0/1, optional
        Region (e.g. the brain) to which the histograms are restricted.

    Returns
    -------
    pos_counts, neg_counts : ndarray of int64, shape (n_bins,)

    Raises
    ------
    ValueError
        For ``n_bins < 2``, different shapes, probabilities outside [0, 1] or non-finite, or masks
        with values other than 0/1.
    """
    if int(n_bins) != n_bins or n_bins < 2:
        raise ValueError(f"n_bins must be an integer >= 2, got {n_bins}")
    n_bins = int(n_bins)
    _check_same_shape(prob=prob, truth=truth, mask=mask)
    p, t = _restrict(_scores(prob), _mask(truth, "truth"), mask)
    p = p.ravel()
    t = t.ravel()
    if p.size and (p.min() < 0 or p.max() > 1):
        raise ValueError(f"prob must lie in [0, 1] (min {p.min():.4g}, max {p.max():.4g})")
    if p.dtype == np.float32 and n_bins & (n_bins - 1) == 0 and n_bins <= 2**24:
        scaled = p * np.float32(n_bins)  # power-of-two scaling of float32 is exact
    else:
        scaled = p.astype(np.float64) * n_bins
    idx = scaled.astype(np.intp)  # truncation == floor for values >= 0
    np.minimum(idx, n_bins - 1, out=idx)
    total = np.bincount(idx, minlength=n_bins)
    pos = np.bincount(idx[t], minlength=n_bins)
    return pos.astype(np.int64), (total - pos).astype(np.int64)


def save_score_hists(path: PathLike, hists: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> Path:
    """Write ``{patient_id: (pos_counts, neg_counts)}`` to a compressed ``.npz`` file atomically.

    Parameters
    ----------
    path : path-like
        Destination (``score_hists.npz``).
    hists : mapping of str to (ndarray, ndarray)
        Per-patient histograms, as :func:`score_histogram` returns them.

    Returns
    -------
    Path
        ``path``.
    """
    arrays: dict[str, np.ndarray] = {}
    for pid, (pos, neg) in hists.items():
        arrays[f"{pid}.pos"] = pos
        arrays[f"{pid}.neg"] = neg
    with atomic_path(Path(path), suffix=".npz") as tmp:
        np.savez_compressed(tmp, **arrays)
    return Path(path)


def load_score_hists(path: PathLike, patient_ids: Iterable[str] | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read ``score_hists.npz`` into ``{patient_id: (pos_counts, neg_counts)}``.

    Parameters
    ----------
    path : path-like
        File written by :func:`save_score_hists` (e.g. by :func:`bmstudy.evaluation.evaluate_cohort`).
    patient_ids : iterable of str, optional
        Read only these patients (default: all).

    Returns
    -------
    dict of str to (ndarray, ndarray)

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    KeyError
        When a requested patient has no histograms in the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"score histograms not found: {path}")
    wanted = None if patient_ids is None else {str(p) for p in patient_ids}
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    with np.load(path, allow_pickle=False) as z:
        pids = sorted({k.rsplit(".", 1)[0] for k in z.files})
        for pid in pids:
            if wanted is not None and pid not in wanted:
                continue
            out[pid] = (z[f"{pid}.pos"], z[f"{pid}.neg"])
    if wanted is not None and (missing := wanted - set(out)):
        raise KeyError(f"{path}: no histograms for patient(s) {sorted(missing)}")
    return out
