"""Skull-stripping backends: brain masks for canonical (RAS+) volumes.

Backends (``PreprocessParams.skull_strip``):

``'mask'``
    Use a provided brain mask (the manifest's ``brain_mask`` column; the synthetic cohort has one).
``'none'``
    No stripping: every voxel counts as brain.
``'deepbet'``
    Offline default that ships its weights: deepbet 1.0.2 (Fisch et al. 2024, MIT licence; torch
    CPU). Install with ``pip install torch==2.13.0`` FIRST (CPU wheel), then ``pip install deepbet==1.0.2``.
``'synthstrip'``
    The paper's choice (FreeSurfer SynthStrip). Uses ``mri_synthstrip`` on PATH, or the
    ``nipreps-synthstrip`` port with the model file ``synthstrip.1.pt`` given via the ``model_path``
    argument or the ``BMSTUDY_SYNTHSTRIP_MODEL`` environment variable. No package ships the model.
``'auto'``
    The provided brain mask if there is one, else ``deepbet`` if importable, else an error.

All functions take and return arrays on the same canonical grid; masks are uint8 {0, 1}.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..io.volumes import VolumeError, read_volume, write_volume
from ..utils import PathLike, get_logger

log = get_logger(__name__)

from ..plan import SKULL_STRIP_BACKENDS as BACKENDS
SYNTHSTRIP_ENV = "BMSTUDY_SYNTHSTRIP_MODEL"
SYNTHSTRIP_HELP = (
    "SynthStrip needs either the FreeSurfer binary `mri_synthstrip` on PATH, or `pip install "
    "nipreps-synthstrip` plus the model file synthstrip.1.pt (shipped with FreeSurfer >= 7.3 in "
    "$FREESURFER_HOME/models/synthstrip.1.pt, or inside the freesurfer/synthstrip container). Put the "
    f"file anywhere and point to it with the environment variable {SYNTHSTRIP_ENV}=/path/to/synthstrip.1.pt "
    "(or PreprocessParams(synthstrip_model=...) / `bmstudy preprocess --synthstrip-model`). "
    "No weights are downloaded at run time."
)


class SkullStripError(RuntimeError):
    """A skull-stripping backend is unavailable or failed."""


def deepbet_available() -> bool:
    """Whether deepbet (and torch) can be imported.

    Returns
    -------
    bool
    """
    try:
        import deepbet.bet  # noqa: F401
    except Exception:
        return False
    return True


def resolve_backend(backend: str, has_brain_mask: bool) -> str:
    """Map ``'auto'`` to a concrete backend and validate the name.

    Parameters
    ----------
    backend : str
        One of :data:`BACKENDS`.
    has_brain_mask : bool
        Whether the case has a provided brain mask.

    Returns
    -------
    str
        ``backend`` itself, or for ``'auto'``: ``'mask'`` when a brain mask is given, else ``'deepbet'``
        when it is importable.

    Raises
    ------
    ValueError
        For an unknown backend name.
    SkullStripError
        For ``'auto'`` with neither a brain mask nor deepbet.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown skull-strip backend {backend!r}; choose one of {BACKENDS}")
    if backend != "auto":
        return backend
    if has_brain_mask:
        return "mask"
    if deepbet_available():
        return "deepbet"
    raise SkullStripError(
        "skull_strip='auto' found neither a brain mask nor deepbet; pass a brain mask, choose "
        "skull_strip='none', or install the offline stripper: pip install torch==2.13.0 deepbet==1.0.2")


def brain_mask(image: np.ndarray, affine: np.ndarray, backend: str, *, brain_mask_path: PathLike | None = None,
               case: str | None = None, synthstrip_model: PathLike | None = None, threads: int | None = None) -> np.ndarray:
    """Brain mask (uint8, same grid as ``image``) from the chosen backend.

    Parameters
    ----------
    image : ndarray
        Canonical RAS+ volume (as from :func:`bmstudy.io.read_volume`).
    affine : ndarray of shape (4, 4)
        Its affine.
    backend : str
        One of :data:`BACKENDS` (``'auto'`` resolved by :func:`resolve_backend`).
    brain_mask_path : str or Path, optional
        The provided mask for ``'mask'``; only read and binarised (> 0) here, the caller checks alignment.
    case : str, optional
        Patient id, named in errors.
    synthstrip_model : str or Path, optional
        SynthStrip model file (else ``$BMSTUDY_SYNTHSTRIP_MODEL``).
    threads : int, optional
        torch threads for deepbet.

    Returns
    -------
    ndarray of uint8
        ``image``'s shape; all ones for ``'none'``.

    Raises
    ------
    SkullStripError
        When the backend cannot run (no mask for ``'mask'``, tool or model missing).
    VolumeError
        For a provided mask of another shape, or an empty brain mask.
    """
    backend = resolve_backend(backend, brain_mask_path is not None)
    if backend == "none":
        return np.ones(image.shape, dtype=np.uint8)
    if backend == "mask":
        if brain_mask_path is None:
            raise SkullStripError(f"case {case!r}: skull_strip='mask' needs a brain mask (manifest column 'brain_mask')")
        vol = read_volume(brain_mask_path, case=case, kind="mask")
        if vol.data.shape != image.shape:
            raise VolumeError(f"brain mask shape {vol.data.shape} differs from image {image.shape}", case=case,
                              path=brain_mask_path)
        mask = (vol.data > 0).astype(np.uint8)
    elif backend == "deepbet":
        mask = deepbet_mask(image, threads=threads)
    else:
        mask = synthstrip_mask(image, affine, model_path=synthstrip_model)
    if not mask.any():
        raise VolumeError(f"empty brain mask from backend {backend!r}", case=case, path=brain_mask_path)
    return mask


_DEEPBET_CACHE: dict[str, Any] = {}


def deepbet_mask(image: np.ndarray, threshold: float = 0.5, threads: int | None = None) -> np.ndarray:
    """deepbet brain mask for a canonical RAS+ volume (CPU; the model is loaded once per process).

    Parameters
    ----------
    image : ndarray
        Canonical RAS+ volume.
    threshold : float, default=0.5
        Probability threshold.
    threads : int, optional
        torch threads.

    Returns
    -------
    ndarray of uint8

    Raises
    ------
    SkullStripError
        When torch or deepbet cannot be imported (the message says how to install them).
    """
    try:
        import torch
        from deepbet.bet import BrainExtraction
    except ImportError as exc:
        raise SkullStripError(
            f"skull_strip='deepbet' needs torch and deepbet ({exc}); install with "
            "`pip install torch==2.13.0` (CPU wheel) then `pip install deepbet==1.0.2`") from exc
    if threads:
        torch.set_num_threads(int(threads))
    bet = _DEEPBET_CACHE.get("bet")
    if bet is None:
        with warnings.catch_warnings():  # torch.jit.load deprecation inside deepbet
            warnings.simplefilter("ignore", DeprecationWarning)
            bet = _DEEPBET_CACHE["bet"] = BrainExtraction(no_gpu=True)
    prob = bet.run_model(np.ascontiguousarray(image, dtype=np.float32).copy())
    mask = bet.postprocess(prob > threshold, 0)
    return np.asarray(mask, dtype=np.uint8)


def synthstrip_command(model_path: PathLike | None = None) -> list[str]:
    """The command prefix that runs SynthStrip.

    ``mri_synthstrip`` (FreeSurfer) when on ``PATH``, else the nipreps port with ``--model``.

    Parameters
    ----------
    model_path : str or Path, optional
        The ``synthstrip.1.pt`` model for the nipreps port (else ``$BMSTUDY_SYNTHSTRIP_MODEL``).

    Returns
    -------
    list of str

    Raises
    ------
    SkullStripError
        Saying exactly what is missing (command, model setting or model file).
    """
    binary = shutil.which("mri_synthstrip")
    if binary:
        return [binary]
    model = model_path or os.environ.get(SYNTHSTRIP_ENV)
    if not model:
        raise SkullStripError(f"SynthStrip model not configured. {SYNTHSTRIP_HELP}")
    if not Path(model).is_file():
        raise SkullStripError(f"SynthStrip model file {str(model)!r} does not exist. {SYNTHSTRIP_HELP}")
    port = shutil.which("synthstrip") or shutil.which("nipreps-synthstrip")
    if not port:
        raise SkullStripError(f"the nipreps-synthstrip command is not installed. {SYNTHSTRIP_HELP}")
    return [port, "--model", str(model)]


def synthstrip_mask(image: np.ndarray, affine: np.ndarray, model_path: PathLike | None = None,
                    timeout_s: float = 3600.0) -> np.ndarray:
    """SynthStrip brain mask (runs the external command on a temporary NIfTI).

    Parameters
    ----------
    image : ndarray
        Canonical RAS+ volume.
    affine : ndarray of shape (4, 4)
        Its affine.
    model_path : str or Path, optional
        See :func:`synthstrip_command`.
    timeout_s : float, default=3600.0
        Limit for the external command.

    Returns
    -------
    ndarray of uint8

    Raises
    ------
    SkullStripError
        When the command is missing, fails, or returns another shape.
    """
    cmd = synthstrip_command(model_path)
    with tempfile.TemporaryDirectory(prefix="bmstudy_synthstrip_") as tmp:
        src, dst = Path(tmp) / "image.nii.gz", Path(tmp) / "mask.nii.gz"
        write_volume(image.astype(np.float32), affine, src)
        proc = subprocess.run([*cmd, "-i", str(src), "-m", str(dst)], capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=timeout_s)
        if proc.returncode != 0 or not dst.exists():
            raise SkullStripError(f"SynthStrip failed ({' '.join(cmd)}), exit {proc.returncode}: {proc.stderr[-2000:]}")
        vol = read_volume(dst, kind="mask")
    if vol.data.shape != image.shape:
        raise SkullStripError(f"SynthStrip returned shape {vol.data.shape}, expected {image.shape}")
    return (vol.data > 0).astype(np.uint8)
