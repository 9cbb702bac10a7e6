"""Compute precision of the network: the Keras policies a run may ask for, and ``auto``.

``auto`` takes ``mixed_bfloat16`` on a CPU that computes bfloat16 natively (AVX512-BF16 or AMX-BF16:
oneDNN then runs bfloat16 convolutions, measured 1.4x faster training steps and 1.8x faster inference
windows than float32 on the 2-core study machine; ``benchmarks/train_step.py --bf16-cpu``,
``benchmarks/inference.py --variants tf.function mixed_bfloat16``) and ``float32`` everywhere else
(on a CPU without native bfloat16 it is emulated, hence slower; on a GPU, ``mixed_float16`` is an
explicit choice). Weights stay float32 under every mixed policy; the network's sigmoid output is float32.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["PRECISIONS", "KERAS_POLICIES", "native_bfloat16", "resolve_precision", "resolve_here"]

#: Keras dtype policies a stage can run its network under.
KERAS_POLICIES: tuple[str, ...] = ("float32", "mixed_float16", "mixed_bfloat16")
#: What a plan may ask for: a policy, or ``auto`` (:func:`resolve_precision`).
PRECISIONS: tuple[str, ...] = KERAS_POLICIES + ("auto",)
_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def native_bfloat16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether the CPU advertises native bfloat16 arithmetic (``avx512_bf16`` or ``amx_bf16`` flag).

    Parameters
    ----------
    cpuinfo : path of Linux's ``/proc/cpuinfo`` (tests pass a file); unreadable -> ``False``.
    """
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.partition(":")[2].split())
            return any(f in flags for f in _BF16_FLAGS)
    return False


def resolve_precision(requested: str, gpu: bool, bf16_native: bool | None = None) -> str:
    """The Keras policy to run under for ``requested`` on this machine.

    Parameters
    ----------
    requested : one of :data:`PRECISIONS`.
    gpu : whether the network runs on a GPU.
    bf16_native : the CPU computes bfloat16 natively; ``None``: :func:`native_bfloat16`.

    Returns
    -------
    str
        One of :data:`KERAS_POLICIES`: ``requested`` itself, except ``auto`` (``mixed_bfloat16`` on a
        CPU with native bfloat16, else ``float32``) and ``mixed_float16`` without a GPU (``float32``:
        float16 has no fast CPU kernels).

    Raises
    ------
    ValueError
        For an unknown precision.
    """
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}; got {requested!r}")
    if requested == "auto":
        if gpu:
            return "float32"
        return "mixed_bfloat16" if (native_bfloat16() if bf16_native is None else bf16_native) else "float32"
    if requested == "mixed_float16" and not gpu:
        return "float32"
    return requested


def resolve_here(requested: str) -> str:
    """:func:`resolve_precision` on this process's devices (TensorFlow is imported only for ``auto``
    and ``mixed_float16``, which depend on whether a GPU is visible)."""
    if requested not in ("auto", "mixed_float16"):  # no device question: validate and return
        return resolve_precision(requested, gpu=False)
    import tensorflow as tf

    return resolve_precision(requested, bool(tf.config.list_physical_devices("GPU")))
