"""Sliding-window prediction of a whole volume from a patch-wise network (pure numpy, no TensorFlow).

This module owns the window grid, the blend weights and the stitching. It imports numpy and
:mod:`bmstudy.plan` only, so it can be used (and tested) without TensorFlow or the preprocessing stage.

:func:`sliding_window_predict` follows the paper (128^3 windows, stride 64, overlapping predictions
averaged) with nnU-Net/MONAI's edge handling:

* window starts on each axis are ``0, stride, 2*stride, ...`` plus one window flush with the end
  of the axis, so every voxel is predicted (a plain stride loop misses the tail of an axis whose
  length is not ``patch + k*stride``; see ``STACK_NOTES.md``);
* an axis shorter than the patch is padded (centred, ``pad_value``) and cropped back;
* ``blend="mean"`` averages overlapping windows with equal weight (the paper);
  ``blend="gaussian"`` weights each window by nnU-Net's Gaussian importance map (sigma = patch/8);
* ``tta_flip=True`` also predicts every window flipped left-right (axis 0) and averages.

Because windows form a regular grid and the blend weights are separable (a product of one 1-D
profile per axis), the normaliser sum_w(x, y, z) is the outer product of three 1-D sums: only ONE
volume-sized float32 accumulator is needed, windows are extracted one batch at a time, and memory
stays bounded (volume + accumulator + one batch).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from ..plan import BLENDS

__all__ = [
    "BLENDS",
    "PredictFn",
    "window_starts",
    "count_windows",
    "as_triple",
    "as_probabilities",
    "gaussian_profile",
    "sliding_window_predict",
]

#: A batch (B, px, py, pz, 1) float32 -> probabilities (B, px, py, pz, 1) or (B, px, py, pz).
PredictFn = Callable[[np.ndarray], Any]

Triple = tuple[int, int, int]


def as_triple(value: int | Sequence[int], name: str) -> Triple:
    """``value`` as a 3-tuple of positive ints (an int is repeated)."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an int or 3 ints, got {value!r}")
    if isinstance(value, (int, np.integer)):
        out = (int(value),) * 3
    else:
        try:
            out = tuple(int(v) for v in value)  # type: ignore[union-attr]
        except TypeError:
            raise TypeError(f"{name} must be an int or 3 ints, got {value!r}") from None
        if any(float(v) != int(v) for v in value):  # type: ignore[union-attr]
            raise ValueError(f"{name} must contain integers, got {value!r}")
    if len(out) != 3 or any(v <= 0 for v in out):
        raise ValueError(f"{name} must be a positive int or 3 positive ints, got {value!r}")
    return out  # type: ignore[return-value]


def window_starts(length: int, patch: int, stride: int) -> np.ndarray:
    """Window start indices on one axis: ``0, stride, ...`` and a last window flush with the end.

    Parameters
    ----------
    length : int
        Axis length; must be ``>= patch`` (pad first).
    patch : int
        Window size on this axis.
    stride : int
        Step between window starts, ``1 <= stride <= patch``.

    Returns
    -------
    numpy.ndarray
        int64 start indices, increasing, the last one equal to ``length - patch``.

    Raises
    ------
    ValueError
        If ``stride`` is out of range or ``length < patch``.
    """
    if patch <= 0 or not 1 <= stride <= patch:
        raise ValueError(f"need patch > 0 and 1 <= stride <= patch, got patch={patch}, stride={stride}")
    if length < patch:
        raise ValueError(f"axis length {length} is shorter than the patch {patch}; pad the volume first")
    starts = list(range(0, length - patch + 1, stride))
    if starts[-1] != length - patch:
        starts.append(length - patch)
    return np.asarray(starts, dtype=np.int64)


def count_windows(shape: Sequence[int], patch: int | Sequence[int], stride: int | Sequence[int]) -> int:
    """Number of windows :func:`sliding_window_predict` evaluates for a volume of ``shape``.

    Parameters
    ----------
    shape : sequence of 3 int
        Volume shape before padding (axes shorter than the patch count as one window).
    patch, stride : int or sequence of 3 int
        Window size and step.

    Returns
    -------
    int
        Product over the axes of the number of window starts.
    """
    patch3, stride3 = as_triple(patch, "patch"), as_triple(stride, "stride")
    return int(np.prod([len(window_starts(max(int(n), p), p, s)) for n, p, s in zip(shape, patch3, stride3)]))


def gaussian_profile(patch: int, sigma_scale: float = 1.0 / 8.0, min_weight: float = 1e-3) -> np.ndarray:
    """1-D Gaussian weights of nnU-Net's importance map (max 1, sigma = ``patch * sigma_scale``).

    nnU-Net's map is a Gaussian around the patch centre, i.e. the outer product of these profiles.
    The centre is ``(patch - 1) / 2`` so the map is symmetric (exactly flip-invariant). Weights are
    floored at ``min_weight`` per axis so voxels near a volume corner, seen only by the borders of
    windows, keep a well-conditioned normaliser (nnU-Net floors its map likewise).

    Parameters
    ----------
    patch : int
        Window size on the axis.
    sigma_scale : float, default=1/8
        Sigma as a fraction of the patch size.
    min_weight : float, default=1e-3
        Floor of the weights.

    Returns
    -------
    numpy.ndarray
        float32 weights of shape ``(patch,)``.
    """
    idx = np.arange(patch, dtype=np.float64)
    centre = (patch - 1) / 2.0
    sigma = patch * sigma_scale
    w = np.exp(-0.5 * ((idx - centre) / sigma) ** 2)
    w /= w.max()
    return np.maximum(w, min_weight).astype(np.float32)


def _axis_profiles(patch: Triple, blend: str) -> list[np.ndarray]:
    if blend == "mean":
        return [np.ones(p, dtype=np.float32) for p in patch]
    return [gaussian_profile(p) for p in patch]


def _axis_norm(length: int, starts: np.ndarray, profile: np.ndarray) -> np.ndarray:
    """Sum over the windows of one axis of their 1-D weights at every position (float64)."""
    norm = np.zeros(length, dtype=np.float64)
    p = profile.shape[0]
    for s in starts:
        norm[s:s + p] += profile
    return norm


def _coverage(
    shape: Sequence[int],
    patch: int | Sequence[int] = 128,
    stride: int | Sequence[int] = 64,
    blend: str = "mean",
) -> np.ndarray:
    """Blend-weight normaliser (for ``blend='mean'``: the number of windows covering each voxel).

    Returned for the (padded) volume ``shape``, which must be at least the patch on every axis.
    Exposed for tests: it is the outer product of per-axis sums, by separability.
    """
    patch3, stride3 = as_triple(patch, "patch"), as_triple(stride, "stride")
    profiles = _axis_profiles(patch3, blend)
    norms = [_axis_norm(n, window_starts(n, p, s), w) for n, p, s, w in zip(shape, patch3, stride3, profiles)]
    return np.einsum("i,j,k->ijk", *norms)


def _iter_batches(starts: Sequence[np.ndarray], batch_size: int) -> Iterator[list[Triple]]:
    batch: list[Triple] = []
    for sx in starts[0]:
        for sy in starts[1]:
            for sz in starts[2]:
                batch.append((int(sx), int(sy), int(sz)))
                if len(batch) == batch_size:
                    yield batch
                    batch = []
    if batch:
        yield batch


def as_probabilities(out: Any, n: int, patch: Triple) -> np.ndarray:
    """Validate and squeeze a predict_fn result to (n, px, py, pz) float32."""
    arr = np.asarray(out.numpy() if hasattr(out, "numpy") else out)
    if arr.ndim == 5 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.shape != (n, *patch):
        raise ValueError(
            f"predict_fn returned shape {tuple(arr.shape)} for a batch of {n} windows of {patch}; "
            f"expected ({n}, {patch[0]}, {patch[1]}, {patch[2]}[, 1])"
        )
    return arr.astype(np.float32, copy=False)


def _check_volume(volume: np.ndarray) -> np.ndarray:
    """``volume`` as a float32 3-D array; raises for other dimensions, empty or non-real input."""
    vol = np.asarray(volume)
    if vol.ndim != 3:
        raise ValueError(f"volume must be 3-D (x, y, z), got shape {vol.shape}")
    if vol.size == 0:
        raise ValueError(f"volume is empty, shape {vol.shape}")
    if not np.issubdtype(vol.dtype, np.number) or np.issubdtype(vol.dtype, np.complexfloating):
        raise TypeError(f"volume must be real-valued, got dtype {vol.dtype}")
    return vol.astype(np.float32, copy=False)


def _check_settings(patch: int | Sequence[int], stride: int | Sequence[int], blend: str, batch_size: int | None,
                    predict_fn: PredictFn) -> tuple[Triple, Triple, int]:
    """Validated ``(patch3, stride3, batch_size)``; ``batch_size=None`` takes ``predict_fn.batch_size`` (else 1)."""
    patch3, stride3 = as_triple(patch, "patch"), as_triple(stride, "stride")
    if batch_size is None:
        batch_size = getattr(predict_fn, "batch_size", None) or 1
    for p, s in zip(patch3, stride3):
        if s > p:
            raise ValueError(f"stride {stride3} must not exceed the patch {patch3} (voxels would be skipped)")
    if blend not in BLENDS:
        raise ValueError(f"blend must be one of {BLENDS}, got {blend!r}")
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not callable(predict_fn):
        raise TypeError("predict_fn must be callable")
    return patch3, stride3, int(batch_size)


def _centre_pad(vol: np.ndarray, patch3: Triple, pad_value: float) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Pad axes shorter than the patch (centred); returns the padded volume and the pads."""
    pads = [(max(p - n, 0) // 2, max(p - n, 0) - max(p - n, 0) // 2) for n, p in zip(vol.shape, patch3)]
    if any(a or b for a, b in pads):
        vol = np.pad(vol, pads, mode="constant", constant_values=np.float32(pad_value))
    return vol, pads


def _predict_batch(vol: np.ndarray, batch: list[Triple], buf: np.ndarray, predict_fn: PredictFn,
                   patch3: Triple, tta_flip: bool) -> np.ndarray:
    """Extract the windows of ``batch`` into ``buf`` and return their (n, px, py, pz) predictions."""
    n = len(batch)
    px, py, pz = patch3
    for i, (sx, sy, sz) in enumerate(batch):
        buf[i, ..., 0] = vol[sx:sx + px, sy:sy + py, sz:sz + pz]
    x = buf[:n]
    pred = as_probabilities(predict_fn(x), n, patch3)
    if tta_flip:
        flipped = as_probabilities(predict_fn(np.ascontiguousarray(x[:, ::-1])), n, patch3)
        pred = pred + flipped[:, ::-1]
        pred *= np.float32(0.5)
    return pred


def _accumulate(vol: np.ndarray, predict_fn: PredictFn, batches: Iterable[list[Triple]], patch3: Triple,
                profiles: list[np.ndarray], blend: str, batch_size: int, tta_flip: bool) -> np.ndarray:
    """Sum of the (weighted) window predictions over the padded volume (float32)."""
    weight = None if blend == "mean" else np.einsum("i,j,k->ijk", *profiles).astype(np.float32)
    acc = np.zeros(vol.shape, dtype=np.float32)
    buf = np.empty((batch_size, *patch3, 1), dtype=np.float32)
    wbuf = None if weight is None else np.empty(patch3, dtype=np.float32)
    px, py, pz = patch3
    for batch in batches:
        pred = _predict_batch(vol, batch, buf, predict_fn, patch3, tta_flip)
        for i, (sx, sy, sz) in enumerate(batch):
            region = acc[sx:sx + px, sy:sy + py, sz:sz + pz]
            if weight is None:
                region += pred[i]
            else:
                np.multiply(pred[i], weight, out=wbuf)
                region += wbuf
    return acc


def _normalise(acc: np.ndarray, starts: Sequence[np.ndarray], profiles: list[np.ndarray]) -> None:
    """Divide ``acc`` in place by the separable normaliser, one x-slab at a time."""
    shape = acc.shape
    norms = [_axis_norm(n, st, w) for n, st, w in zip(shape, starts, profiles)]
    if np.any(norms[0] <= 0) or np.any(norms[1] <= 0) or np.any(norms[2] <= 0):  # pragma: no cover - by design
        raise RuntimeError("internal error: some voxels are not covered by any window")
    inv_yz = (1.0 / np.outer(norms[1], norms[2])).astype(np.float32)
    inv_x = (1.0 / norms[0]).astype(np.float32)
    for ix in range(shape[0]):
        slab = acc[ix]
        np.multiply(slab, inv_yz, out=slab)
        slab *= inv_x[ix]


def sliding_window_predict(
    volume: np.ndarray,
    predict_fn: PredictFn,
    patch: int | Sequence[int] = 128,
    stride: int | Sequence[int] = 64,
    batch_size: int | None = 1,
    blend: str = "mean",
    tta_flip: bool = False,
    pad_value: float = 0.0,
    progress: bool = False,
) -> np.ndarray:
    """Predict a whole volume with overlapping windows and blend them.

    Parameters
    ----------
    volume : numpy.ndarray
        (x, y, z) image, converted to float32.
    predict_fn : callable
        Maps a batch (B, px, py, pz, 1) float32 to probabilities (B, px, py, pz[, 1]).
    patch : int or sequence of 3 int, default=128
        Window size.
    stride : int or sequence of 3 int, default=64
        Step between window starts, ``1 <= stride <= patch``; the last window of each axis is
        placed flush with the end so every voxel is covered.
    batch_size : int or None, default=1
        Windows per ``predict_fn`` call (memory: one batch of windows); None takes the predict_fn's
        ``batch_size`` attribute (:class:`bmstudy.inference.network.KerasPredictFn` chooses it from
        free device memory on a GPU, 1 on CPU), else 1.
    blend : {'mean', 'gaussian'}, default='mean'
        ``'mean'``: overlaps averaged, as in the paper; ``'gaussian'``: nnU-Net's Gaussian
        importance weighting, sigma = patch/8.
    tta_flip : bool, default=False
        Also predict each window flipped along axis 0 (left-right) and average the two.
    pad_value : float, default=0.0
        Value used to pad axes shorter than the patch (centred padding, cropped back).
    progress : bool, default=False
        Show a tqdm bar over batches.

    Returns
    -------
    numpy.ndarray
        float32 array with the shape of ``volume``: the blended predictions.

    Raises
    ------
    ValueError
        For a volume that is not 3-D or empty, bad patch / stride / blend / batch_size, or a
        ``predict_fn`` result of the wrong shape.
    TypeError
        For a non-real volume or a ``predict_fn`` that is not callable.
    """
    vol = _check_volume(volume)
    patch3, stride3, batch_size = _check_settings(patch, stride, blend, batch_size, predict_fn)
    orig_shape = vol.shape
    vol, pads = _centre_pad(vol, patch3, pad_value)
    starts = [window_starts(n, p, s) for n, p, s in zip(vol.shape, patch3, stride3)]
    n_windows = int(np.prod([len(s) for s in starts]))
    profiles = _axis_profiles(patch3, blend)
    batches: Iterable[list[Triple]] = _iter_batches(starts, batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, total=math.ceil(n_windows / batch_size), desc="windows", unit="batch", leave=False)
    acc = _accumulate(vol, predict_fn, batches, patch3, profiles, blend, batch_size, tta_flip)
    _normalise(acc, starts, profiles)
    if any(a or b for a, b in pads):
        crop = tuple(slice(a, a + n) for (a, _), n in zip(pads, orig_shape))
        acc = np.ascontiguousarray(acc[crop])
    return acc
