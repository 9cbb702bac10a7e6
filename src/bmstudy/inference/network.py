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
from .sliding_window import PredictFn, as_probabilities

__all__ = ["TimedFn", "make_predict_fn", "as_predict_fn", "load_predictor", "read_config", "resolve_model", "warmup"]

log = get_logger("bmstudy.inference.network")


class TimedFn:
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

    Parameters
    ----------
    model : keras.Model
        The trained network.

    Returns
    -------
    callable
        Batch (B, px, py, pz, 1) float32 -> float32 probabilities.

    Raises
    ------
    TypeError
        If ``model`` has no ``predict_on_batch``.
    """
    if not hasattr(model, "predict_on_batch"):
        raise TypeError(f"expected a keras.Model, got {type(model).__name__}")
    in_shape = getattr(model, "input_shape", None)
    channels = int(in_shape[-1]) if in_shape is not None and in_shape[-1] is not None else 1

    def predict_fn(batch: np.ndarray) -> np.ndarray:
        x = batch if channels == 1 else np.repeat(batch, channels, axis=-1)
        return np.asarray(model.predict_on_batch(x), dtype=np.float32)

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


def load_predictor(model_dir: PathLike, which: str = "best") -> tuple[PredictFn, dict[str, Any]]:
    """The predict_fn and training config of a training output folder.

    Parameters
    ----------
    model_dir : path-like
        Training output folder (``model_best.keras`` + ``train_config.json``).
    which : {'best', 'last'}, default='best'
        Which checkpoint (see :func:`bmstudy.training.model.load_trained`).

    Returns
    -------
    (predict_fn, config) : tuple
        The network wrapped by :func:`make_predict_fn` and the recorded config.
    """
    from ..training.model import load_trained

    model, config = load_trained(model_dir, which=which)
    return make_predict_fn(model), dict(config)


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
                  config: Mapping[str, Any] | None) -> tuple[PredictFn, Mapping[str, Any]]:
    """The network and config: the given ones, else loaded from ``model_dir``.

    Parameters
    ----------
    model_dir : path-like or None
        Training output folder; needed unless both ``predict_fn`` and ``config`` are given.
    predict_fn : callable or None
        A network to use instead of the folder's model (its config is still read from the folder).
    config : mapping or None
        A training config to use instead of the folder's.

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
            fn, loaded_cfg = load_predictor(model_dir)
        else:  # a custom network with the training's recorded settings: read the config only
            loaded_cfg = read_config(Path(model_dir))
        config = config if config is not None else loaded_cfg
    return fn, config


def warmup(fn: PredictFn, batch_size: int, patch3: tuple[int, int, int]) -> None:
    """Run ``fn`` once on a zero batch (graph tracing is then not charged to the first case)."""
    t0 = time.perf_counter()
    as_probabilities(as_predict_fn(fn)(np.zeros((int(batch_size), *patch3, 1), np.float32)), int(batch_size), patch3)
    log.info("warm-up (graph setup) %.1f s for a batch of %d x %s", time.perf_counter() - t0, batch_size, patch3)
