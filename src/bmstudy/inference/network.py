"""The trained network as a predict_fn: Keras wrapper, loading a training folder, warm-up.

A predict_fn maps a batch (B, px, py, pz, 1) float32 to probabilities (B, px, py, pz[, 1]); any
callable works (tests and custom networks), a ``keras.Model`` is wrapped by :func:`make_predict_fn`.
Reads ``<model_dir>/train_config.json`` and the model through :func:`bmstudy.training.model.load_trained`
(the only place TensorFlow is imported, lazily).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..utils import PathLike, get_logger
from ..precision import KERAS_POLICIES, resolve_here
from .sliding_window import PredictFn, as_probabilities

__all__ = ["PRECISIONS", "TimedFn", "KerasPredictFn", "make_predict_fn", "auto_batch_size", "with_precision",
           "gpu_free_bytes", "as_predict_fn", "load_predictor", "read_config", "resolve_model", "warmup"]

log = get_logger("bmstudy.inference.network")


class TimedFn:
    """Wrap a predict_fn and accumulate the seconds spent inside it (the network's own time)."""

    def __init__(self, fn: PredictFn) -> None:
        self.fn = fn
        self.seconds = 0.0
        self.calls = 0

    @property
    def batch_size(self) -> int:
        """The wrapped predict_fn's preferred batch size (1 when it states none)."""
        return int(getattr(self.fn, "batch_size", 1) or 1)

    def __call__(self, batch: np.ndarray) -> Any:
        t0 = time.perf_counter()
        out = self.fn(batch)
        out = np.asarray(out.numpy() if hasattr(out, "numpy") else out)  # force evaluation inside the timer
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        return out


#: Inference precisions: float32, or Keras mixed precision (float16 / bfloat16 compute, float32 output).
PRECISIONS: tuple[str, ...] = KERAS_POLICIES
#: Most windows per call chosen automatically (27 windows per 0.833 mm brain: 4 calls at 8).
MAX_AUTO_BATCH = 8
#: Device memory budgeted per window voxel for the automatic batch size (float32 activations of the
#: ResNet-34 U-Net at inference, with headroom; halved under mixed precision). An estimate, not a
#: measurement on a GPU: a batch that does not fit is halved at run time (:class:`KerasPredictFn`).
BYTES_PER_VOXEL = 1024


def gpu_free_bytes() -> int | None:
    """Free memory of the first visible GPU in bytes (``nvidia-smi``), or None when there is none / unknown."""
    import os
    import shutil
    import subprocess

    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1") or shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.free", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20, check=True).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    idx = int(visible.split(",")[0]) if visible.split(",")[0].strip().isdigit() else 0
    try:
        return int(float(out[min(idx, len(out) - 1)]) * 2**20)
    except (IndexError, ValueError):
        return None


def auto_batch_size(patch3: tuple[int, int, int], precision: str = "float32", *, on_gpu: bool | None = None,
                    free_bytes: int | None = None) -> int:
    """Windows per network call: 1 on CPU; on a GPU as many as half its free memory holds (at most 8).

    Parameters
    ----------
    patch3 : tuple of 3 int
        Window size.
    precision : str, default='float32'
        One of :data:`PRECISIONS` (mixed precision budgets half the memory per window).
    on_gpu : bool or None, default=None
        Whether TensorFlow runs on a GPU (None: ask TensorFlow).
    free_bytes : int or None, default=None
        Free device memory (None: :func:`gpu_free_bytes`).

    Returns
    -------
    int
        In ``[1, MAX_AUTO_BATCH]``.
    """
    if on_gpu is None:
        import tensorflow as tf

        on_gpu = bool(tf.config.list_logical_devices("GPU"))
    if not on_gpu:
        return 1
    free = gpu_free_bytes() if free_bytes is None else int(free_bytes)
    if free is None:
        return 1
    per_window = int(np.prod(patch3)) * BYTES_PER_VOXEL // (1 if precision == "float32" else 2)
    return int(max(1, min(MAX_AUTO_BATCH, (free // 2) // per_window)))


def with_precision(model: Any, precision: str) -> Any:
    """``model`` itself for float32, else a clone with the Keras mixed-precision policy and the same weights.

    Raises
    ------
    ValueError
        For an unknown precision, or a model Keras cannot clone (the message says so).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "float32":
        return model
    import keras

    def clone_layer(layer: Any) -> Any:
        if isinstance(layer, keras.Model):  # nested functional model (the encoder)
            return keras.models.clone_model(layer, clone_function=clone_layer)
        cfg = layer.get_config()
        cfg["dtype"] = precision
        return layer.__class__.from_config(cfg)

    try:
        clone = keras.models.clone_model(model, clone_function=clone_layer)
        clone.set_weights(model.get_weights())
    except Exception as exc:  # noqa: BLE001  any Keras failure: say which model and policy
        raise ValueError(f"cannot run model {getattr(model, 'name', '?')!r} in {precision}: {exc}") from exc
    return clone


class KerasPredictFn:
    """A Keras model as a predict_fn: one ``tf.function`` with a fixed input signature, batched windows.

    The graph takes (B, px, py, pz, 1) float32 with the batch dimension free and the window fixed
    (the model's, else the first batch's: one graph per window size, with the static shapes that
    ``predict_on_batch`` also traces with), repeats the channel when the model wants C > 1, runs the model in inference mode
    and returns float32 (mixed precision computes in float16/bfloat16). With ``jit_compile`` the
    graph is XLA-compiled; XLA compiles per concrete shape, so a short last batch is padded to the
    largest batch seen. A batch that runs out of device memory is split in halves (and ``batch_size``
    halved) instead of failing the case.

    Parameters
    ----------
    model : keras.Model
        The trained network.
    batch_size : int or None, default=None
        Preferred windows per call, read by :func:`~bmstudy.inference.sliding_window.sliding_window_predict`
        when it is called with ``batch_size=None`` (None: :func:`auto_batch_size`, 1 on CPU).
    precision : str, default='float32'
        One of :data:`PRECISIONS`, or ``'auto'`` (:func:`bmstudy.precision.resolve_precision`; the
        resolved policy is the attribute ``precision``).
    jit_compile : bool, default=False
        XLA-compile the graph.
    """

    def __init__(self, model: Any, batch_size: int | None = None, precision: str = "float32",
                 jit_compile: bool = False) -> None:
        import tensorflow as tf

        if not hasattr(model, "predict_on_batch"):
            raise TypeError(f"expected a keras.Model, got {type(model).__name__}")
        if precision == "auto":  # bfloat16 on a CPU that has it natively (bmstudy.precision)
            precision = resolve_here("auto")
        self.model = with_precision(model, precision)
        self.precision, self.jit_compile = precision, bool(jit_compile)
        in_shape = getattr(model, "input_shape", None)
        channels = int(in_shape[-1]) if in_shape is not None and in_shape[-1] is not None else 1
        spatial = tuple(in_shape[1:4]) if in_shape is not None and len(in_shape) == 5 else (None,) * 3
        self.channels, self._spatial, self._graphs = channels, spatial, {}
        self._oom = tf.errors.ResourceExhaustedError
        self._largest = 0
        if batch_size is None:
            patch = tuple(int(s) for s in spatial) if None not in spatial else (128, 128, 128)
            batch_size = auto_batch_size(patch, precision)  # type: ignore[arg-type]
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        self.batch_size = int(batch_size)

    def _graph(self, spatial: tuple[int, ...]) -> Any:
        """The ``tf.function`` for windows of ``spatial`` (signature ``(None, *spatial, 1)``), made once."""
        if spatial not in self._graphs:
            import tensorflow as tf

            net, channels = self.model, self.channels

            @tf.function(input_signature=[tf.TensorSpec((None, *spatial, 1), tf.float32)],
                         jit_compile=self.jit_compile)
            def run(x: Any) -> Any:
                if channels > 1:
                    x = tf.repeat(x, channels, axis=-1)
                return tf.cast(net(x, training=False), tf.float32)

            self._graphs[spatial] = run
        return self._graphs[spatial]

    def _run(self, batch: np.ndarray) -> Any:
        """One network call on a (B, px, py, pz, 1) float32 batch."""
        return self._graph(tuple(int(n) for n in batch.shape[1:4]))(batch)

    def _call(self, batch: np.ndarray) -> np.ndarray:
        n = batch.shape[0]
        self._largest = max(self._largest, n)
        if self.jit_compile and n < self._largest:  # one XLA compilation per shape: pad the last batch
            batch = np.concatenate([batch, np.zeros((self._largest - n, *batch.shape[1:]), batch.dtype)])
        return np.asarray(self._run(np.ascontiguousarray(batch, dtype=np.float32)))[:n]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        try:
            return self._call(batch)
        except self._oom:
            if batch.shape[0] <= 1:
                raise
            half = (batch.shape[0] + 1) // 2
            self.batch_size, self._largest = max(1, half), 0
            log.warning("out of device memory at %d windows per call: splitting, batch_size now %d",
                        batch.shape[0], self.batch_size)
            return np.concatenate([self(batch[:half]), self(batch[half:])])


def make_predict_fn(model: Any, *, batch_size: int | None = None, precision: str = "float32",
                    jit_compile: bool = False, compiled: bool = True) -> PredictFn:
    """A predict_fn for a Keras model (inference mode, numpy out).

    A model whose input has C > 1 channels gets the single image channel repeated C times.

    Parameters
    ----------
    model : keras.Model
        The trained network.
    batch_size : int or None, default=None
        Preferred windows per call (attribute ``batch_size`` of the result; None: automatic, 1 on CPU).
    precision : {'float32', 'mixed_float16', 'mixed_bfloat16', 'auto'}, default='float32'
        Compute precision (mixed: a clone of the model under Keras' mixed-precision policy; ``auto``:
        ``mixed_bfloat16`` on a CPU with native bfloat16, else float32).
    jit_compile : bool, default=False
        XLA-compile the graph.
    compiled : bool, default=True
        :class:`KerasPredictFn` (one ``tf.function``); False: the plain ``predict_on_batch`` wrapper of
        earlier versions (float32 only; kept to compare).

    Returns
    -------
    callable
        Batch (B, px, py, pz, 1) float32 -> float32 probabilities, with a ``batch_size`` attribute.

    Raises
    ------
    TypeError
        If ``model`` has no ``predict_on_batch``.
    ValueError
        For an unknown precision, or precision/jit_compile with ``compiled=False``.
    """
    if not hasattr(model, "predict_on_batch"):
        raise TypeError(f"expected a keras.Model, got {type(model).__name__}")
    if compiled:
        return KerasPredictFn(model, batch_size=batch_size, precision=precision, jit_compile=jit_compile)
    if precision != "float32" or jit_compile:
        raise ValueError("precision and jit_compile need compiled=True")
    in_shape = getattr(model, "input_shape", None)
    channels = int(in_shape[-1]) if in_shape is not None and in_shape[-1] is not None else 1

    def predict_fn(batch: np.ndarray) -> np.ndarray:
        x = batch if channels == 1 else np.repeat(batch, channels, axis=-1)
        return np.asarray(model.predict_on_batch(x), dtype=np.float32)

    predict_fn.batch_size = int(batch_size or 1)  # type: ignore[attr-defined]
    return predict_fn


def as_predict_fn(model: Any) -> PredictFn:
    """``model`` as a predict_fn: a Keras model is wrapped (:func:`make_predict_fn`), a callable kept.

    Raises
    ------
    TypeError
        If ``model`` is neither.
    """
    if hasattr(model, "predict_on_batch"):
        return make_predict_fn(model)
    if callable(model):
        return model
    raise TypeError(f"model must be a keras.Model or a predict_fn callable, got {type(model).__name__}")


def load_predictor(model_dir: PathLike, which: str = "best", **options: Any) -> tuple[PredictFn, dict[str, Any]]:
    """The predict_fn and training config of a training output folder.

    Parameters
    ----------
    model_dir : path-like
        Training output folder (``model_best.keras`` + ``train_config.json``).
    which : {'best', 'last'}, default='best'
        Which checkpoint (see :func:`bmstudy.training.model.load_trained`).
    **options
        :func:`make_predict_fn` keywords (``batch_size``, ``precision``, ``jit_compile``).

    Returns
    -------
    (predict_fn, config) : tuple
        The network wrapped by :func:`make_predict_fn` and the recorded config.
    """
    from ..training.model import load_trained

    model, config = load_trained(model_dir, which=which)
    return make_predict_fn(model, **options), dict(config)


def read_config(model_dir: Path) -> dict[str, Any]:
    """The ``train_config.json`` of a training folder (without loading the model).

    Raises
    ------
    FileNotFoundError
        If the folder has no ``train_config.json``.
    ValueError
        If the file is not valid JSON.
    """
    path = model_dir / "train_config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {model_dir} is not a finished bmstudy training folder")
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: invalid JSON ({exc})") from exc


def resolve_model(model_dir: PathLike | None, predict_fn: PredictFn | None,
                  config: Mapping[str, Any] | None, options: Mapping[str, Any] | None = None
                  ) -> tuple[PredictFn, Mapping[str, Any]]:
    """The network and config: the given ones, else loaded from ``model_dir``.

    Parameters
    ----------
    model_dir : path-like or None
        Training output folder; needed unless both ``predict_fn`` and ``config`` are given.
    predict_fn : callable or None
        A network to use instead of the folder's model (its config is still read from the folder).
    config : mapping or None
        A training config to use instead of the folder's.
    options : mapping or None, default=None
        :func:`make_predict_fn` keywords for a model loaded from the folder (``batch_size``,
        ``precision``, ``jit_compile``; e.g. from :class:`bmstudy.plan.InferenceParams`).

    Returns
    -------
    (predict_fn, config) : tuple

    Raises
    ------
    ValueError
        If ``model_dir`` is needed and None.
    """
    fn = predict_fn
    if fn is None or config is None:
        if model_dir is None:
            raise ValueError("model_dir is required unless both predict_fn and config are given")
        if fn is None:
            fn, loaded_cfg = load_predictor(model_dir, **dict(options or {}))
        else:  # a custom network with the training's recorded settings: read the config only
            loaded_cfg = read_config(Path(model_dir))
        config = config if config is not None else loaded_cfg
    return fn, config


def warmup(fn: PredictFn, batch_size: int | None, patch3: tuple[int, int, int]) -> None:
    """Run ``fn`` once on a zero batch (graph tracing is then not charged to the first case).

    ``batch_size=None`` takes ``fn.batch_size`` (else 1), as the sliding window does.
    """
    batch_size = batch_size or getattr(fn, "batch_size", None) or 1
    t0 = time.perf_counter()
    as_probabilities(as_predict_fn(fn)(np.zeros((int(batch_size), *patch3, 1), np.float32)), int(batch_size), patch3)
    log.info("warm-up (graph setup) %.1f s for a batch of %d x %s", time.perf_counter() - t0, batch_size, patch3)
