"""Run-to-run determinism of training on one machine: what is switched on, and whether it held.

``tf.keras.utils.set_random_seed`` + ``tf.config.experimental.enable_op_determinism()`` are not
enough on a CPU with oneDNN: measured on the 2-core CI machine (tiny profile, 3 epochs x 3 steps,
``benchmarks/determinism.py``), 4 of 4 runs with one seed gave 4 different ``training_log.csv``
(with or without whole-volume validation and precise BatchNorm, also with one intra-op thread),
while with ONE inter-op thread every run was byte-identical. Independent ops that TensorFlow runs
concurrently in its inter-op pool share the intra-op (oneDNN) threads, so how a convolution's
reduction is split, and therefore its float rounding, depends on what ran beside it.

So a deterministic run (``TrainConfig.deterministic``, the default) also sets
``tf.config.threading.set_inter_op_parallelism_threads(1)``. That must happen before TensorFlow's
runtime is initialised in the process; when it is too late (a notebook or a test that already used
TensorFlow), the run trains anyway, logs a warning and is recorded as not deterministic. Multi-replica
strategies (``mirrored``, ``multi_worker``) keep the default inter-op pool: their collective ops
wait on each other and one inter-op thread would serialise (or stall) them, so they are recorded as
op-deterministic only. bfloat16 training on the CPU asks for the single inter-op thread too, whether
or not the run is deterministic (:func:`cpu_bfloat16_policy`, used by
:mod:`bmstudy.training.loop`): with the default pool, concurrent bfloat16 gradient kernels gave NaN
weights. TensorFlow is imported only inside functions.
"""
from __future__ import annotations

import os
from typing import Any

from ..utils import get_logger

log = get_logger(__name__)

#: TensorFlow's own environment variable for the inter-op pool size (read when the runtime starts).
INTEROP_ENV = "TF_NUM_INTEROP_THREADS"

#: Strategies that run on one replica, where one inter-op thread is safe.
_SINGLE_REPLICA = ("default", "auto")


def inter_op_threads() -> int:
    """The inter-op pool size TensorFlow is (or will be) configured with; 0 = TensorFlow's default."""
    import tensorflow as tf

    n = int(tf.config.threading.get_inter_op_parallelism_threads())
    if n == 0:
        try:
            n = int(os.environ.get(INTEROP_ENV, "0") or 0)
        except ValueError:
            n = 0
    return n


def single_replica(strategy: str) -> bool:
    """Whether ``strategy`` (``TrainConfig.strategy``) trains one replica: ``default``, or ``auto`` with
    at most one visible GPU."""
    import tensorflow as tf

    if strategy not in _SINGLE_REPLICA:
        return False
    return strategy == "default" or len(tf.config.list_physical_devices("GPU")) <= 1


def single_inter_op_pool() -> bool:
    """Ask for ONE inter-op thread; whether the pool has one thread now (``False`` when TensorFlow's
    runtime already started with another size in this process)."""
    import tensorflow as tf

    if inter_op_threads() != 1:
        try:
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:  # the runtime is already initialised in this process
            return False
    return inter_op_threads() == 1


def configure_determinism(deterministic: bool, strategy: str) -> dict[str, Any]:
    """Switch on what makes training repeatable; call before TensorFlow's runtime is first used.

    Parameters
    ----------
    deterministic : bool
        ``TrainConfig.deterministic``. ``False`` changes nothing.
    strategy : str
        ``TrainConfig.strategy``. ``auto`` counts as one replica unless several GPUs are visible.

    Returns
    -------
    dict
        ``op_determinism`` (op determinism switched on), ``inter_op_threads`` (the pool size now, 0 =
        TensorFlow's default) and ``deterministic``: whether the run is expected to repeat exactly on
        this machine (op determinism AND one inter-op thread), for ``train_config.json``.
    """
    import tensorflow as tf

    if not deterministic:
        return {"op_determinism": False, "inter_op_threads": inter_op_threads(), "deterministic": False}
    tf.config.experimental.enable_op_determinism()
    single = single_replica(strategy)
    if single and not single_inter_op_pool():
        log.warning("deterministic training asked, but TensorFlow was already initialised with %d inter-op "
                    "thread(s); this run may not repeat exactly. Set %s=1 or train in a fresh process.",
                    inter_op_threads(), INTEROP_ENV)
    threads = inter_op_threads()
    ok = bool(single and threads == 1)
    if not single:
        log.info("strategy %s: op determinism on, inter-op pool left at its default (several replicas)", strategy)
    return {"op_determinism": True, "inter_op_threads": threads, "deterministic": ok}


def cpu_bfloat16_policy(requested: str, strategy: str) -> str:
    """The policy of a bfloat16 training on the CPU: ``mixed_bfloat16`` after making TensorFlow's inter-op
    pool one thread, which it needs, or ``float32`` for ``auto`` where that is impossible.

    Parameters
    ----------
    requested : str
        ``TrainConfig.precision`` as asked for (``auto`` or ``mixed_bfloat16``).
    strategy : str
        ``TrainConfig.strategy``.

    Returns
    -------
    str
        ``"mixed_bfloat16"`` or ``"float32"`` (``auto`` only, with a warning).

    Raises
    ------
    RuntimeError
        For an explicit ``mixed_bfloat16`` when the pool cannot be one thread (the message says what to do).

    Notes
    -----
    With TensorFlow's default inter-op pool (TF 2.17, oneDNN, 2-core CPU) 1 of 4 tiny bfloat16
    trainings in one process ended its second step with NaN weights in the first decoder convolution
    (float32: 0 of 6; bfloat16 with one inter-op thread: 0 of 6): concurrent bfloat16 gradient kernels
    are not safe there. Multi-replica strategies need the default pool, so they train in float32.
    Call before TensorFlow's runtime starts (as :func:`configure_determinism`).
    """
    if single_replica(strategy) and single_inter_op_pool():
        return "mixed_bfloat16"
    why = (f"bfloat16 training on the CPU needs one TensorFlow inter-op thread (with the default pool, "
           f"concurrent bfloat16 gradient kernels produced NaN weights), but this process has "
           f"{inter_op_threads() or 'the default number of'} inter-op thread(s) and strategy {strategy!r}")
    if requested == "auto":
        log.warning("%s: training in float32", why)
        return "float32"
    raise RuntimeError(f"{why}. Set {INTEROP_ENV}=1 before TensorFlow starts, train in a fresh process, "
                       "or choose precision='float32'/'auto'")
