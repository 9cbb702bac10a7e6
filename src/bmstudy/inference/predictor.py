"""Inference: sliding-window prediction, masks back in the input's space, per-case timing.

Sliding window (:func:`sliding_window_predict`), as in the paper (128^3 windows, stride 64,
overlapping predictions averaged) with nnU-Net/MONAI's edge handling:

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

Per-case pipeline (:func:`predict_case`): read + preprocess with the training's recorded parameters
(:func:`bmstudy.preprocessing.cohort.preprocess_image`), predict, resample the probability map back to the
input grid (linear, :func:`bmstudy.preprocessing.cohort.restore_to_input`), threshold 0.5 there, write
``<pid>_prob.nii.gz`` (float32) and ``<pid>.nii.gz`` (uint8) with the input's affine, atomically.
:func:`predict_cohort` runs it for a manifest or a folder of images, writes ``timings.csv``
(patient_id, preprocess_s, model_s, postprocess_s, total_s, status, error, ...) after every case,
keeps going when one case fails and skips finished cases on a re-run unless ``force=True``.

This module imports TensorFlow only inside :func:`make_predict_fn` / :func:`load_predictor`.
"""
from __future__ import annotations

import argparse
import functools
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from ..utils import PathLike, atomic_path, atomic_to_csv, get_logger

__all__ = [
    "TIMING_COLUMNS",
    "PredictFn",
    "window_starts",
    "gaussian_profile",
    "sliding_window_predict",
    "make_predict_fn",
    "load_predictor",
    "output_paths",
    "predict_case",
    "predict_cohort",
    "add_cli_arguments",
    "cli_main",
]

log = get_logger("bmstudy.inference.predictor")

#: A batch (B, px, py, pz, 1) float32 -> probabilities (B, px, py, pz, 1) or (B, px, py, pz).
PredictFn = Callable[[np.ndarray], Any]

#: Columns of ``timings.csv`` (the contract of DESIGN.md first, then extras).
TIMING_COLUMNS: tuple[str, ...] = (
    "patient_id", "preprocess_s", "model_s", "postprocess_s", "total_s", "status", "error",
    "n_windows", "input_shape", "model_shape", "image",
)
BLENDS: tuple[str, ...] = ("mean", "gaussian")
IMAGE_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii")
#: Suffixes stripped from file names to get a patient id in folder mode (nnU-Net's channel suffix,
#: the synthetic cohort's image suffix).
_ID_SUFFIXES: tuple[str, ...] = ("_0000", "_t1c")


# --------------------------------------------------------------------------- sliding window
def _triple(value: int | Sequence[int], name: str) -> tuple[int, int, int]:
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

    ``length`` must be ``>= patch`` (pad first) and ``1 <= stride <= patch``.
    """
    if patch <= 0 or not 1 <= stride <= patch:
        raise ValueError(f"need patch > 0 and 1 <= stride <= patch, got patch={patch}, stride={stride}")
    if length < patch:
        raise ValueError(f"axis length {length} is shorter than the patch {patch}; pad the volume first")
    starts = list(range(0, length - patch + 1, stride))
    if starts[-1] != length - patch:
        starts.append(length - patch)
    return np.asarray(starts, dtype=np.int64)


def gaussian_profile(patch: int, sigma_scale: float = 1.0 / 8.0, min_weight: float = 1e-3) -> np.ndarray:
    """1-D Gaussian weights of nnU-Net's importance map (max 1, sigma = ``patch * sigma_scale``).

    nnU-Net's map is a Gaussian around the patch centre, i.e. the outer product of these profiles.
    The centre is ``(patch - 1) / 2`` so the map is symmetric (exactly flip-invariant). Weights are
    floored at ``min_weight`` per axis so voxels near a volume corner, seen only by the borders of
    windows, keep a well-conditioned normaliser (nnU-Net floors its map likewise).
    """
    idx = np.arange(patch, dtype=np.float64)
    centre = (patch - 1) / 2.0
    sigma = patch * sigma_scale
    w = np.exp(-0.5 * ((idx - centre) / sigma) ** 2)
    w /= w.max()
    return np.maximum(w, min_weight).astype(np.float32)


def _axis_profiles(patch: tuple[int, int, int], blend: str) -> list[np.ndarray]:
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
    patch3, stride3 = _triple(patch, "patch"), _triple(stride, "stride")
    profiles = _axis_profiles(patch3, blend)
    norms = [_axis_norm(n, window_starts(n, p, s), w) for n, p, s, w in zip(shape, patch3, stride3, profiles)]
    return np.einsum("i,j,k->ijk", *norms)


def _iter_batches(starts: Sequence[np.ndarray], batch_size: int) -> Iterator[list[tuple[int, int, int]]]:
    batch: list[tuple[int, int, int]] = []
    for sx in starts[0]:
        for sy in starts[1]:
            for sz in starts[2]:
                batch.append((int(sx), int(sy), int(sz)))
                if len(batch) == batch_size:
                    yield batch
                    batch = []
    if batch:
        yield batch


def _as_probs(out: Any, n: int, patch: tuple[int, int, int]) -> np.ndarray:
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


def sliding_window_predict(
    volume: np.ndarray,
    predict_fn: PredictFn,
    patch: int | Sequence[int] = 128,
    stride: int | Sequence[int] = 64,
    batch_size: int = 1,
    blend: str = "mean",
    tta_flip: bool = False,
    pad_value: float = 0.0,
    progress: bool = False,
) -> np.ndarray:
    """Predict a whole volume with overlapping windows and blend them.

    Args:
        volume: (x, y, z) image, converted to float32.
        predict_fn: maps a batch (B, px, py, pz, 1) float32 to probabilities (B, px, py, pz[, 1]).
        patch: window size, int or 3 ints.
        stride: step between window starts, int or 3 ints, ``1 <= stride <= patch``; the last
            window of each axis is placed flush with the end so every voxel is covered.
        batch_size: windows per ``predict_fn`` call (memory: one batch of windows).
        blend: ``"mean"`` (overlaps averaged, as in the paper) or ``"gaussian"`` (nnU-Net's
            Gaussian importance weighting, sigma = patch/8).
        tta_flip: also predict each window flipped along axis 0 (left-right) and average the two.
        pad_value: value used to pad axes shorter than the patch (centred padding, cropped back).
        progress: show a tqdm bar over batches.
    Returns:
        float32 array with the shape of ``volume``: the blended predictions.
    """
    vol = np.asarray(volume)
    if vol.ndim != 3:
        raise ValueError(f"volume must be 3-D (x, y, z), got shape {vol.shape}")
    if vol.size == 0:
        raise ValueError(f"volume is empty, shape {vol.shape}")
    if not np.issubdtype(vol.dtype, np.number) or np.issubdtype(vol.dtype, np.complexfloating):
        raise TypeError(f"volume must be real-valued, got dtype {vol.dtype}")
    vol = vol.astype(np.float32, copy=False)
    patch3, stride3 = _triple(patch, "patch"), _triple(stride, "stride")
    for p, s in zip(patch3, stride3):
        if s > p:
            raise ValueError(f"stride {stride3} must not exceed the patch {patch3} (voxels would be skipped)")
    if blend not in BLENDS:
        raise ValueError(f"blend must be one of {BLENDS}, got {blend!r}")
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    batch_size = int(batch_size)
    if not callable(predict_fn):
        raise TypeError("predict_fn must be callable")

    # centred padding of axes shorter than the patch
    orig_shape = vol.shape
    pads = [(max(p - n, 0) // 2, max(p - n, 0) - max(p - n, 0) // 2) for n, p in zip(orig_shape, patch3)]
    if any(a or b for a, b in pads):
        vol = np.pad(vol, pads, mode="constant", constant_values=np.float32(pad_value))
    shape = vol.shape
    starts = [window_starts(n, p, s) for n, p, s in zip(shape, patch3, stride3)]
    n_windows = int(np.prod([len(s) for s in starts]))

    profiles = _axis_profiles(patch3, blend)
    weight = None if blend == "mean" else np.einsum("i,j,k->ijk", *profiles).astype(np.float32)
    acc = np.zeros(shape, dtype=np.float32)
    buf = np.empty((batch_size, *patch3, 1), dtype=np.float32)
    wbuf = None if weight is None else np.empty(patch3, dtype=np.float32)

    batches = _iter_batches(starts, batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, total=math.ceil(n_windows / batch_size), desc="windows", unit="batch", leave=False)
    px, py, pz = patch3
    for batch in batches:
        n = len(batch)
        for i, (sx, sy, sz) in enumerate(batch):
            buf[i, ..., 0] = vol[sx:sx + px, sy:sy + py, sz:sz + pz]
        x = buf[:n]
        pred = _as_probs(predict_fn(x), n, patch3)
        if tta_flip:
            flipped = _as_probs(predict_fn(np.ascontiguousarray(x[:, ::-1])), n, patch3)
            pred = pred + flipped[:, ::-1]
            pred *= np.float32(0.5)
        for i, (sx, sy, sz) in enumerate(batch):
            region = acc[sx:sx + px, sy:sy + py, sz:sz + pz]
            if weight is None:
                region += pred[i]
            else:
                np.multiply(pred[i], weight, out=wbuf)
                region += wbuf

    # divide by the separable normaliser one x-slab at a time (no second volume-sized array)
    norms = [_axis_norm(n, st, w) for n, st, w in zip(shape, starts, profiles)]
    if np.any(norms[0] <= 0) or np.any(norms[1] <= 0) or np.any(norms[2] <= 0):  # pragma: no cover - by design
        raise RuntimeError("internal error: some voxels are not covered by any window")
    inv_yz = (1.0 / np.outer(norms[1], norms[2])).astype(np.float32)
    inv_x = (1.0 / norms[0]).astype(np.float32)
    for ix in range(shape[0]):
        slab = acc[ix]
        np.multiply(slab, inv_yz, out=slab)
        slab *= inv_x[ix]
    if any(a or b for a, b in pads):
        crop = tuple(slice(a, a + n) for (a, _), n in zip(pads, orig_shape))
        acc = np.ascontiguousarray(acc[crop])
    return acc


# --------------------------------------------------------------------------- model wrapper
class _TimedFn:
    """Wrap a predict_fn and accumulate the seconds spent inside it (the network's own time)."""

    def __init__(self, fn: PredictFn) -> None:
        self.fn = fn
        self.seconds = 0.0
        self.calls = 0

    def __call__(self, batch: np.ndarray) -> Any:
        t0 = time.perf_counter()
        out = self.fn(batch)
        out = np.asarray(out.numpy() if hasattr(out, "numpy") else out)  # force evaluation inside the timer
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        return out


def make_predict_fn(model: Any) -> PredictFn:
    """A predict_fn for a Keras model (``predict_on_batch``, inference mode, numpy out).

    A model whose input has C > 1 channels gets the single image channel repeated C times.
    """
    if not hasattr(model, "predict_on_batch"):
        raise TypeError(f"expected a keras.Model, got {type(model).__name__}")
    in_shape = getattr(model, "input_shape", None)
    channels = int(in_shape[-1]) if in_shape is not None and in_shape[-1] is not None else 1

    def predict_fn(batch: np.ndarray) -> np.ndarray:
        x = batch if channels == 1 else np.repeat(batch, channels, axis=-1)
        return np.asarray(model.predict_on_batch(x), dtype=np.float32)

    return predict_fn


def _as_predict_fn(model: Any) -> PredictFn:
    if hasattr(model, "predict_on_batch"):
        return make_predict_fn(model)
    if callable(model):
        return model
    raise TypeError(f"model must be a keras.Model or a predict_fn callable, got {type(model).__name__}")


def load_predictor(model_dir: PathLike, which: str = "best") -> tuple[PredictFn, dict[str, Any]]:
    """``(predict_fn, config)`` for a training output folder (:func:`bmstudy.training.model.load_trained`)."""
    from ..training.model import load_trained

    model, config = load_trained(model_dir, which=which)
    return make_predict_fn(model), dict(config)


def _read_config(model_dir: Path) -> dict[str, Any]:
    import json

    path = model_dir / "train_config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {model_dir} is not a finished bmstudy training folder")
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: invalid JSON ({exc})") from exc


# --------------------------------------------------------------------------- one case
def output_paths(out_dir: PathLike, patient_id: str) -> tuple[Path, Path]:
    """``(mask_path, prob_path)``: ``out_dir/<pid>.nii.gz`` and ``out_dir/<pid>_prob.nii.gz``."""
    d = Path(out_dir)
    return d / f"{patient_id}.nii.gz", d / f"{patient_id}_prob.nii.gz"


def _config_get(config: Mapping[str, Any], *keys: str, default: Any = None) -> Any:
    for k in keys:
        if k in config and config[k] is not None:
            return config[k]
    return default


def _preprocess_params(config: Mapping[str, Any]) -> Any:
    """The preprocessing parameters recorded by training, as ``bmstudy.preprocessing.cohort`` expects them."""
    from ..preprocessing import cohort as pp

    raw = _config_get(config, "preprocessing", "preprocess", "preprocess_params")
    cls = getattr(pp, "PreprocessParams", None)
    if not raw:
        if cls is None:
            raise ValueError(f"the model config records no preprocessing parameters (keys: {sorted(config)})")
        _warn_once("the model config records no preprocessing parameters; using PreprocessParams() defaults")
        return cls()
    if cls is None or isinstance(raw, cls) or not isinstance(raw, Mapping):
        return raw
    if hasattr(cls, "from_dict"):
        return cls.from_dict(dict(raw))
    return cls(**dict(raw))


@functools.lru_cache(maxsize=None)
def _warn_once(message: str) -> None:
    log.warning(message)


def _inference_settings(config: Mapping[str, Any], patch: Any, stride: Any) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    patch = patch if patch is not None else _config_get(config, "inference_patch", "patch_size", default=128)
    stride = stride if stride is not None else _config_get(config, "inference_stride", default=64)
    return _triple(patch, "patch"), _triple(stride, "stride")


@dataclass
class _Timer:
    seconds: float = 0.0

    def __enter__(self) -> "_Timer":
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self._t0


def predict_case(
    image_path: PathLike,
    model: Any,
    config: Mapping[str, Any],
    out_dir: PathLike,
    patient_id: str,
    brain_mask_path: PathLike | None = None,
    *,
    patch: int | Sequence[int] | None = None,
    stride: int | Sequence[int] | None = None,
    batch_size: int = 1,
    blend: str = "mean",
    tta_flip: bool = False,
    threshold: float = 0.5,
    restrict_to_brain: bool = True,
    progress: bool = False,
) -> dict[str, Any]:
    """Predict one image and write its mask and probability map in the input's voxel grid.

    Args:
        image_path: the input NIfTI (any orientation / spacing).
        model: a ``keras.Model`` or any predict_fn (batch (B, px, py, pz, 1) -> probabilities).
        config: the training config (``train_config.json``): recorded preprocessing parameters
            (key ``preprocessing``) and ``inference_patch`` / ``inference_stride``.
        out_dir: where ``<pid>.nii.gz`` (uint8) and ``<pid>_prob.nii.gz`` (float32) are written.
        patient_id: the case's id (file names, error messages).
        brain_mask_path: optional brain mask in the input's grid (skips skull stripping).
        patch, stride: override the config's inference window / step.
        batch_size, blend, tta_flip: see :func:`sliding_window_predict`.
        threshold: probability threshold applied in the input grid (``prob >= threshold``).
        restrict_to_brain: set probabilities outside the skull-stripping brain mask to 0 (metastases
            are intracranial; the network never sees extracranial tissue in training, so anything it
            says about the zeroed background is noise). No effect with ``skull_strip='none'``.
    Returns:
        A timing row: ``patient_id, preprocess_s, model_s, postprocess_s, total_s, status='ok',
        error='', n_windows, input_shape, model_shape, image`` plus ``network_s`` (time inside the
        network; ``model_s - network_s`` is the stitching overhead).
    """
    from ..preprocessing.cohort import preprocess_image, restore_to_input, save_like_input

    pid = str(patient_id)
    image_path = Path(image_path)
    if not 0.0 < float(threshold) < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold!r}")
    if not image_path.is_file():
        raise FileNotFoundError(f"case {pid!r}: image not found: {image_path}")
    patch3, stride3 = _inference_settings(config, patch, stride)
    fn = _TimedFn(_as_predict_fn(model))
    t_start = time.perf_counter()

    with _Timer() as t_pre:
        params = _preprocess_params(config)
        try:
            array, record, brain = preprocess_image(image_path, params, brain_mask_path, case=pid,
                                                    return_brain=True)
        except Exception as exc:  # noqa: BLE001 - re-raised naming the case and the file
            raise RuntimeError(f"case {pid!r}: preprocessing {image_path} failed: "
                               f"{type(exc).__name__}: {exc}") from exc
        array = np.asarray(array)
        if array.ndim != 3:
            raise ValueError(f"case {pid!r}: preprocessed {image_path} has shape {array.shape}, expected 3-D")
        if not np.all(np.isfinite(array)):
            raise ValueError(f"case {pid!r}: preprocessed {image_path} contains non-finite values")

    with _Timer() as t_model:
        prob = sliding_window_predict(array, fn, patch3, stride3, batch_size=batch_size, blend=blend,
                                      tta_flip=tta_flip, pad_value=0.0, progress=progress)
        if restrict_to_brain:
            prob[np.asarray(brain) == 0] = 0.0
    n_windows = int(np.prod([len(window_starts(max(n, p), p, s)) for n, p, s in zip(array.shape, patch3, stride3)]))

    lo, hi = float(prob.min()), float(prob.max())
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo < -1e-4 or hi > 1 + 1e-4:
        raise ValueError(f"case {pid!r}: the network returned values in [{lo:.4g}, {hi:.4g}] for {image_path}; "
                         "expected probabilities in [0, 1] (a sigmoid output, not logits)")

    with _Timer() as t_post:
        np.clip(prob, 0.0, 1.0, out=prob)
        prob_in = np.asarray(restore_to_input(prob, record, 1), dtype=np.float32)
        np.clip(prob_in, 0.0, 1.0, out=prob_in)
        mask_in = (prob_in >= np.float32(threshold)).astype(np.uint8)
        mask_path, prob_path = output_paths(out_dir, pid)
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        with atomic_path(prob_path) as tmp:
            save_like_input(prob_in, record, tmp, np.float32)
        with atomic_path(mask_path) as tmp:
            save_like_input(mask_in, record, tmp, np.uint8)

    total = time.perf_counter() - t_start
    return {
        "patient_id": pid,
        "preprocess_s": round(t_pre.seconds, 4),
        "model_s": round(t_model.seconds, 4),
        "postprocess_s": round(t_post.seconds, 4),
        "total_s": round(total, 4),
        "status": "ok",
        "error": "",
        "n_windows": n_windows,
        "input_shape": "x".join(str(int(n)) for n in prob_in.shape),
        "model_shape": "x".join(str(int(n)) for n in array.shape),
        "image": str(image_path),
        "network_s": round(fn.seconds, 4),
    }


# --------------------------------------------------------------------------- cohort
def _strip_image_suffix(name: str) -> str:
    for suf in IMAGE_SUFFIXES:
        if name.endswith(suf):
            name = name[: -len(suf)]
            break
    for suf in _ID_SUFFIXES:
        if name.endswith(suf) and len(name) > len(suf):
            return name[: -len(suf)]
    return name


def _cases_from_input(source: Any, splits: Sequence[str] | None) -> list[tuple[str, Path, Path | None]]:
    """``[(patient_id, image, brain_mask or None)]`` from a manifest DataFrame / csv or an image folder."""
    if isinstance(source, pd.DataFrame):
        df = source
    else:
        path = Path(source)
        if path.is_dir():
            images = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(IMAGE_SUFFIXES))
            if not images:
                raise FileNotFoundError(f"no NIfTI images (*.nii.gz, *.nii) in {path}")
            cases = [(_strip_image_suffix(p.name), p, None) for p in images]
            ids = [c[0] for c in cases]
            dup = sorted({i for i in ids if ids.count(i) > 1})
            if dup:
                raise ValueError(f"{path}: several images map to the same patient id(s) {dup}")
            return cases
        if not path.is_file():
            raise FileNotFoundError(f"input not found: {path} (expected a folder of NIfTI images or a manifest csv)")
        from ..io.manifest import load_manifest

        df = load_manifest(path)
    for col in ("patient_id", "image"):
        if col not in df.columns:
            raise ValueError(f"manifest has no {col!r} column (columns: {list(df.columns)})")
    if splits is not None:
        if "split" not in df.columns:
            raise ValueError("manifest has no 'split' column; pass splits=None to predict every row")
        df = df[df["split"].astype(str).isin(list(splits))]
    out = []
    for _, row in df.iterrows():
        brain = row.get("brain_mask") if "brain_mask" in df.columns else None
        brain = Path(brain) if isinstance(brain, (str, Path)) and str(brain).strip() else None
        out.append((str(row["patient_id"]), Path(row["image"]), brain))
    return out


def _read_timings(path: Path) -> dict[str, dict[str, Any]]:
    if not path.is_file():
        return {}
    try:
        text_cols = ("patient_id", "status", "error", "input_shape", "model_shape", "image")
        df = pd.read_csv(path, dtype={c: str for c in text_cols})
        for c in text_cols:
            if c in df.columns:
                df[c] = df[c].fillna("")
    except Exception as exc:  # noqa: BLE001 - a corrupt table only disables skipping
        log.warning("cannot read %s (%s); finished cases will be recomputed", path, exc)
        return {}
    if "patient_id" not in df.columns:
        return {}
    return {str(r["patient_id"]): dict(r) for r in df.to_dict("records")}


def _timings_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows as a DataFrame with the contract's columns first (missing ones added empty)."""
    df = pd.DataFrame(rows)
    for c in TIMING_COLUMNS:
        if c not in df.columns:
            df[c] = np.nan
    return df[list(TIMING_COLUMNS) + [c for c in df.columns if c not in TIMING_COLUMNS]]


def _is_finished(prev: Mapping[str, Any] | None, out_dir: Path, pid: str) -> bool:
    if prev is None or str(prev.get("status", "")) != "ok":
        return False
    return all(p.is_file() for p in output_paths(out_dir, pid))


def predict_cohort(
    manifest_df_or_folder: pd.DataFrame | PathLike,
    model_dir: PathLike | None,
    out_dir: PathLike,
    splits: Sequence[str] | None = ("test", "external"),
    force: bool = False,
    *,
    predict_fn: PredictFn | None = None,
    config: Mapping[str, Any] | None = None,
    patch: int | Sequence[int] | None = None,
    stride: int | Sequence[int] | None = None,
    batch_size: int = 1,
    blend: str = "mean",
    tta_flip: bool = False,
    threshold: float = 0.5,
    restrict_to_brain: bool = True,
    warmup: bool = True,
    progress: bool = True,
) -> pd.DataFrame:
    """Predict every case of a manifest (rows of ``splits``) or of a folder of NIfTI images.

    Writes per case ``out_dir/<pid>.nii.gz`` / ``<pid>_prob.nii.gz`` and, after every case,
    ``out_dir/timings.csv`` (rows of earlier runs for other patients are kept). A failing case is
    recorded with ``status='failed'`` and its error; the others complete. A case whose previous row
    is ``ok`` and whose two outputs exist is skipped (row kept) unless ``force``.

    Args:
        manifest_df_or_folder: manifest DataFrame, manifest csv path, or folder of ``*.nii.gz``
            (patient id = file name without ``.nii.gz`` and a trailing ``_0000`` / ``_t1c``;
            ``splits`` is ignored for folders).
        model_dir: training output folder (:func:`bmstudy.training.model.load_trained`); may be ``None``
            when ``predict_fn`` and ``config`` are given.
        splits: manifest splits to predict (``None``: every row).
        force: recompute finished cases.
        predict_fn, config: use this predict_fn / config instead of loading ``model_dir``.
        restrict_to_brain: zero the probabilities outside the brain mask (see :func:`predict_case`).
        warmup: run the network once on an empty batch before the first case, so graph tracing
            (tens of seconds for TensorFlow) is not charged to the first case's ``model_s``.
    Returns:
        The timing rows of this run's cases (also in ``timings.csv``).
    """
    out_dir = Path(out_dir)
    cases = _cases_from_input(manifest_df_or_folder, splits)
    if not cases:
        log.warning("no cases to predict (splits=%s)", splits)
    timings_path = out_dir / "timings.csv"
    previous = _read_timings(timings_path)
    todo = [c for c in cases if force or not _is_finished(previous.get(c[0]), out_dir, c[0])]
    log.info("%d case(s): %d to predict, %d already finished -> %s", len(cases), len(todo), len(cases) - len(todo), out_dir)

    fn = predict_fn
    if todo:
        if fn is None or config is None:
            if model_dir is None:
                raise ValueError("model_dir is required unless both predict_fn and config are given")
            if fn is None:
                fn, loaded_cfg = load_predictor(model_dir)
            else:  # a custom network with the training's recorded settings: read the config only
                loaded_cfg = _read_config(Path(model_dir))
            config = config if config is not None else loaded_cfg
        assert config is not None
        patch3, stride3 = _inference_settings(config, patch, stride)
        if warmup:
            t0 = time.perf_counter()
            _as_probs(_as_predict_fn(fn)(np.zeros((int(batch_size), *patch3, 1), np.float32)), int(batch_size), patch3)
            log.info("warm-up (graph setup) %.1f s for a batch of %d x %s", time.perf_counter() - t0, batch_size, patch3)

    rows: dict[str, dict[str, Any]] = dict(previous)
    done: list[str] = []
    todo_ids = {c[0] for c in todo}
    from tqdm.auto import tqdm

    for pid, image, brain in tqdm(cases, desc="predict", unit="case", disable=not progress):
        if pid not in todo_ids:
            log.info("case %s: finished earlier, skipped (force=True recomputes)", pid)
            done.append(pid)
            continue
        try:
            row = predict_case(image, fn, config, out_dir, pid, brain, patch=patch3, stride=stride3,
                               batch_size=batch_size, blend=blend, tta_flip=tta_flip, threshold=threshold,
                               restrict_to_brain=restrict_to_brain)
            log.info("case %s: ok, total %.1f s (preprocess %.1f, model %.1f, postprocess %.1f)", pid,
                     row["total_s"], row["preprocess_s"], row["model_s"], row["postprocess_s"])
        except Exception as exc:  # noqa: BLE001 - one bad case never stops the cohort
            msg = str(exc)
            if not msg.startswith(f"case {pid!r}"):
                msg = f"case {pid!r} ({image}): {type(exc).__name__}: {msg}"
            log.error("case %s failed: %s", pid, msg)
            row = {"patient_id": pid, "preprocess_s": np.nan, "model_s": np.nan, "postprocess_s": np.nan,
                   "total_s": np.nan, "status": "failed", "error": msg,
                   "n_windows": np.nan, "input_shape": "", "model_shape": "", "image": str(image),
                   "network_s": np.nan}
        rows.pop(pid, None)
        rows[pid] = row
        done.append(pid)
        atomic_to_csv(_timings_frame(list(rows.values())), timings_path)
    if cases and not timings_path.is_file():
        atomic_to_csv(_timings_frame(list(rows.values())), timings_path)
    n_failed = sum(str(rows[p].get("status")) == "failed" for p in done)
    if n_failed:
        log.warning("%d of %d case(s) failed; see %s", n_failed, len(done), timings_path)
    return _timings_frame([rows[p] for p in done]).reset_index(drop=True) if done else _timings_frame([])


# --------------------------------------------------------------------------- CLI
def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``bmstudy predict``."""
    parser.add_argument("-i", "--input", required=True,
                        help="folder of NIfTI images (*.nii.gz) or a data manifest csv")
    parser.add_argument("-o", "--output", required=True, help="output folder (masks, probabilities, timings.csv)")
    parser.add_argument("-m", "--model", required=True, help="training output folder (model_best.keras + train_config.json)")
    parser.add_argument("--splits", nargs="*", default=["test", "external"],
                        help="manifest splits to predict (default: test external; 'all' for every row)")
    parser.add_argument("--patch", type=int, nargs="+", default=None, help="window size (1 or 3 ints; default: the model config's)")
    parser.add_argument("--stride", type=int, nargs="+", default=None, help="window step (1 or 3 ints; default: the model config's)")
    parser.add_argument("--batch-size", type=int, default=1, help="windows per network call (default 1)")
    parser.add_argument("--blend", choices=BLENDS, default="mean", help="overlap blending (default mean, as the paper)")
    parser.add_argument("--tta", action="store_true", help="left-right flip test-time augmentation")
    parser.add_argument("--threshold", type=float, default=0.5, help="probability threshold (default 0.5)")
    parser.add_argument("--no-brain-restrict", action="store_true",
                        help="keep probabilities outside the brain mask (default: set them to 0)")
    parser.add_argument("--force", action="store_true", help="recompute cases that are already finished")


def _cli_window(values: list[int] | None) -> int | tuple[int, ...] | None:
    if values is None:
        return None
    if len(values) not in (1, 3):
        raise ValueError(f"--patch/--stride take 1 or 3 integers, got {values}")
    return values[0] if len(values) == 1 else tuple(values)


def cli_main(args: argparse.Namespace) -> int:
    """``bmstudy predict``: returns 0 when every case succeeded, 1 otherwise."""
    splits = None if args.splits in ([], ["all"]) else tuple(args.splits)
    df = predict_cohort(args.input, args.model, args.output, splits=splits, force=args.force,
                        patch=_cli_window(args.patch), stride=_cli_window(args.stride),
                        batch_size=args.batch_size, blend=args.blend, tta_flip=args.tta,
                        threshold=args.threshold, restrict_to_brain=not args.no_brain_restrict)
    n_failed = int((df["status"] == "failed").sum()) if len(df) else 0
    print(f"{len(df) - n_failed} case(s) ok, {n_failed} failed -> {Path(args.output) / 'timings.csv'}")
    return 1 if n_failed else 0
