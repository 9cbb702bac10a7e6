"""Training on ``tf.distribute``: the strategy named by ``TrainConfig.strategy``, the global batch, chief-only writing.

``TrainConfig.strategy`` (:data:`STRATEGIES`):

- ``default``: TensorFlow's default strategy (one device: the first GPU, else the CPU).
- ``mirrored``: ``tf.distribute.MirroredStrategy`` over all visible GPUs; without a GPU over the
  logical CPU devices (one unless ``BMSTUDY_CPU_DEVICES`` splits the CPU, see below).
- ``multi_worker``: ``tf.distribute.MultiWorkerMirroredStrategy`` over the machines of the
  ``TF_CONFIG`` environment variable (every GPU of every worker, or one CPU per worker). Only the
  chief (task ``chief``, else ``worker`` 0) writes into the run folder; every other worker writes its
  checkpoints and logs into a private temporary folder that is deleted at the end. The run folder
  must be the same (shared) folder on every machine for a resume to find the checkpoint: all workers
  check that they start from the same epoch and stop with an error otherwise.
- ``auto``: ``mirrored`` when more than one GPU is visible, else ``default``.

``TrainConfig.batch_size`` is the batch of ONE replica: the global batch (the ``tf.data`` batch that
the strategy splits across replicas) is ``batch_size x replicas``; it is logged and recorded in
``train_config.json`` (``distribution``). A checkpoint is resumed only with the global batch it was
trained with (the patch stream continues at sample ``iterations x global batch``).

``BMSTUDY_CPU_DEVICES=N`` splits the CPU into ``N`` logical devices
(``tf.config.set_logical_device_configuration``) when the strategy is made, which must be before
TensorFlow is first used in the process: ``mirrored`` then trains on ``N`` CPU replicas (tests, no GPU).

TensorFlow is imported only inside functions.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from ..plan import TrainConfig
from ..utils import get_logger

__all__ = ["STRATEGIES", "CPU_DEVICES_ENV", "Distribution", "configure_cpu_devices", "make_strategy",
           "distribution", "is_chief", "global_config", "check_resume", "check_same_start", "writable_dir",
           "tf_config", "free_ports"]

log = get_logger("bmstudy.training.distribute")

#: Values of ``TrainConfig.strategy``.
STRATEGIES = ("auto", "default", "mirrored", "multi_worker")

#: Environment variable: number of logical CPU devices to split the CPU into.
CPU_DEVICES_ENV = "BMSTUDY_CPU_DEVICES"

#: Files of a run folder a non-chief worker copies into its temporary folder to resume like the chief.
_RESUME_FILES = ("checkpoint", "model_best.keras", "training_log.csv", "train_config.json")


@dataclasses.dataclass(frozen=True)
class Distribution:
    """A strategy and what a training run needs to know about it.

    Attributes
    ----------
    strategy : tf.distribute.Strategy
        The strategy (enter ``strategy.scope()`` to build the model).
    name : str
        The strategy used: ``default``, ``mirrored`` or ``multi_worker`` (``auto`` resolved).
    requested : str
        ``TrainConfig.strategy`` as given.
    replicas : int
        Replicas in sync (all workers together).
    per_replica_batch : int
        ``TrainConfig.batch_size``.
    workers : int
        Machines (1 unless ``multi_worker``).
    task_type, task_id : str or None, int or None
        This process's task in ``TF_CONFIG`` (``None`` outside ``multi_worker``).
    chief : bool
        Whether this process writes the run folder.
    devices : tuple of str
        This worker's replica devices.
    """

    strategy: Any
    name: str
    requested: str
    replicas: int
    per_replica_batch: int
    workers: int = 1
    task_type: str | None = None
    task_id: int | None = None
    chief: bool = True
    devices: tuple[str, ...] = ()

    @property
    def global_batch(self) -> int:
        """Per-replica batch x replicas: the batch of the ``tf.data`` stream."""
        return self.per_replica_batch * self.replicas

    def record(self) -> dict[str, Any]:
        """The ``train_config.json`` entries: ``distribution`` (all fields) and top-level ``global_batch``."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "strategy"}
        d["devices"] = list(self.devices)
        d["global_batch"] = self.global_batch
        return {"distribution": d, "global_batch": self.global_batch}

    def describe(self) -> str:
        """One log line: strategy, replicas, per-replica and global batch, devices."""
        where = f" on {self.workers} worker(s), this is {self.task_type}:{self.task_id}" if self.workers > 1 else ""
        return (f"strategy {self.name} (requested {self.requested}){where}: {self.replicas} replica(s) x "
                f"per-replica batch {self.per_replica_batch} = global batch {self.global_batch}; "
                f"devices {list(self.devices)}")


def configure_cpu_devices(n: int | None = None) -> int | None:
    """Split the CPU into ``n`` logical devices (``BMSTUDY_CPU_DEVICES`` when ``n`` is None).

    Parameters
    ----------
    n : int or None, default=None
        Logical CPU devices; ``None`` reads :data:`CPU_DEVICES_ENV` (unset or empty: do nothing).

    Returns
    -------
    int or None
        The number of logical CPU devices configured, ``None`` when nothing was asked.

    Raises
    ------
    ValueError
        If the number is not an integer >= 1.
    RuntimeError
        If TensorFlow was already initialised with another split (the message says to set the
        variable before TensorFlow is used).
    """
    if n is None:
        raw = os.environ.get(CPU_DEVICES_ENV, "").strip()
        if not raw:
            return None
        try:
            n = int(raw)
        except ValueError:
            raise ValueError(f"{CPU_DEVICES_ENV}={raw!r}: expected an integer >= 1") from None
    if n < 1:
        raise ValueError(f"{CPU_DEVICES_ENV}: expected an integer >= 1, got {n}")
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
    except RuntimeError as exc:  # runtime already initialised: fine if it has the asked split
        have = len(tf.config.list_logical_devices("CPU"))
        if have != n:
            raise RuntimeError(f"{CPU_DEVICES_ENV}={n}: TensorFlow is already initialised with {have} logical CPU "
                               f"device(s); set {CPU_DEVICES_ENV} before TensorFlow is first used ({exc})") from exc
    return n


def make_strategy(name: str) -> tuple[Any, str]:
    """The ``tf.distribute`` strategy called ``name`` (one of :data:`STRATEGIES`).

    Applies ``BMSTUDY_CPU_DEVICES`` first (:func:`configure_cpu_devices`).

    Parameters
    ----------
    name : str
        ``auto``, ``default``, ``mirrored`` or ``multi_worker``.

    Returns
    -------
    (strategy, resolved name) : tuple
        The strategy and the name actually used (``auto`` resolved).

    Raises
    ------
    ValueError
        If ``name`` is unknown, or ``TF_CONFIG`` is not valid JSON.
    """
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose from {STRATEGIES}")
    configure_cpu_devices()
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if name == "auto":
        name = "mirrored" if len(gpus) > 1 else "default"
        if _tf_config_workers() > 1:
            log.warning("TF_CONFIG names several workers but strategy is 'auto' (one machine): "
                        "set strategy=multi_worker to train on all of them")
    if name == "default":
        return tf.distribute.get_strategy(), name
    if name == "mirrored":
        if gpus:
            return tf.distribute.MirroredStrategy(), name
        cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(cpus, cross_device_ops=tf.distribute.ReductionToOneDevice()), name
    if not os.environ.get("TF_CONFIG"):
        log.warning("strategy multi_worker without TF_CONFIG: training on this machine only")
    _tf_config_workers()  # validates the JSON with a clear message
    _patch_keras_multi_worker_mean()
    return tf.distribute.MultiWorkerMirroredStrategy(), name


def _patch_keras_multi_worker_mean() -> None:
    """Let Keras 3's ``fit`` average scalar step metrics across workers.

    Keras 3.3's TensorFlow trainer reduces every step output with ``strategy.reduce("MEAN", v, axis=0)``
    under MultiWorkerMirroredStrategy, which fails on the scalar loss/metrics ("Invalid reduction
    dimension 0 for input with 0 dimensions"). Scalars are reduced with ``axis=None`` (the mean over
    replicas) instead; everything else goes to Keras' own function. Applied once, only for ``multi_worker``.
    """
    try:
        from keras.src.backend.tensorflow import trainer as keras_trainer
    except ImportError:  # another Keras layout: leave it alone
        return
    original = keras_trainer.reduce_per_replica
    if getattr(original, "_bmstudy_scalar_mean", False):
        return
    import tensorflow as tf

    def reduce_per_replica(values: Any, strategy: Any, reduction: str) -> Any:
        if reduction not in ("auto", "mean") or not keras_trainer._collective_all_reduce_multi_worker(strategy):
            return original(values, strategy, reduction)

        def one(v: Any) -> Any:
            local = strategy.experimental_local_results(v)[0]
            if getattr(local, "shape", None) is not None and local.shape.rank == 0:
                return strategy.reduce("MEAN", v, axis=None)
            return original(v, strategy, reduction)

        return tf.nest.map_structure(one, values)

    reduce_per_replica._bmstudy_scalar_mean = True  # type: ignore[attr-defined]
    keras_trainer.reduce_per_replica = reduce_per_replica


def _tf_config_workers() -> int:
    """Number of tasks (chief + workers) in ``TF_CONFIG`` (0 when unset)."""
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        return 0
    try:
        cluster = json.loads(raw).get("cluster", {})
    except (json.JSONDecodeError, AttributeError) as exc:
        raise ValueError(f"TF_CONFIG is not a JSON object with a 'cluster' entry: {raw[:200]!r}") from exc
    return sum(len(cluster.get(job, [])) for job in ("chief", "worker"))


def is_chief(task_type: str | None, task_id: int | None, jobs: Sequence[str]) -> bool:
    """Whether a task writes the run folder: ``chief``, else ``worker`` 0 when the cluster has no chief.

    Parameters
    ----------
    task_type : str or None
        ``TF_CONFIG``'s ``task.type`` (``None``: not multi-worker, so chief).
    task_id : int or None
        ``TF_CONFIG``'s ``task.index``.
    jobs : sequence of str
        The cluster's job names.

    Returns
    -------
    bool
    """
    if task_type is None or task_type == "chief":
        return True
    return task_type == "worker" and int(task_id or 0) == 0 and "chief" not in jobs


def distribution(config: TrainConfig) -> Distribution:
    """Make the strategy of ``config.strategy`` and describe it (logged).

    Parameters
    ----------
    config : TrainConfig
        ``strategy`` and ``batch_size`` (per replica) are used.

    Returns
    -------
    Distribution
    """
    strategy, name = make_strategy(config.strategy)
    devices = _replica_devices(strategy)
    task_type = task_id = None
    workers, jobs = 1, ()
    resolver = getattr(strategy, "cluster_resolver", None) if name == "multi_worker" else None
    if resolver is not None and resolver.task_type is not None:
        task_type, task_id = str(resolver.task_type), int(resolver.task_id or 0)
        spec = resolver.cluster_spec().as_dict()
        jobs = tuple(spec)
        workers = max(1, sum(len(spec.get(j, [])) for j in ("chief", "worker")))
    dist = Distribution(strategy=strategy, name=name, requested=config.strategy,
                        replicas=int(strategy.num_replicas_in_sync), per_replica_batch=config.batch_size,
                        workers=workers, task_type=task_type, task_id=task_id,
                        chief=is_chief(task_type, task_id, jobs), devices=devices)
    log.info(dist.describe())
    return dist


def _replica_devices(strategy: Any) -> tuple[str, ...]:
    """This worker's replica devices (the default strategy: the first GPU, else the CPU)."""
    try:
        return tuple(strategy.extended.worker_devices)
    except RuntimeError:  # the default strategy has no worker_devices
        import tensorflow as tf

        return ("/device:GPU:0" if tf.config.list_physical_devices("GPU") else "/device:CPU:0",)


def global_config(config: TrainConfig, dist: Distribution) -> TrainConfig:
    """``config`` as the input pipeline and ``model.fit`` see it under ``dist``.

    ``batch_size`` becomes the global batch; ``val_patches_per_case`` is rounded up to a multiple of
    the replicas, so that every replica gets at least one validation patch of the last (partial)
    validation batch (Keras 3 fails on a replica with an empty batch).

    Parameters
    ----------
    config : TrainConfig
        The run's config (``batch_size`` per replica).
    dist : Distribution
        The run's distribution.

    Returns
    -------
    TrainConfig
        ``config`` itself with one replica, else a copy.
    """
    if dist.replicas == 1:
        return config
    val = -(-config.val_patches_per_case // dist.replicas) * dist.replicas
    if val != config.val_patches_per_case:
        log.info("val_patches_per_case %d -> %d (a multiple of the %d replicas)", config.val_patches_per_case, val,
                 dist.replicas)
    return dataclasses.replace(config, batch_size=dist.global_batch, val_patches_per_case=val)


def check_resume(out_dir: Path, state: Mapping[str, Any] | None, dist: Distribution) -> None:
    """Refuse to resume a checkpoint trained with another global batch.

    Parameters
    ----------
    out_dir : pathlib.Path
        The run folder (its ``train_config.json`` records the global batch of the checkpoint).
    state : mapping or None
        The checkpoint state being resumed (``None``: a new run, nothing to check).
    dist : Distribution
        The distribution of the run about to start.

    Raises
    ------
    ValueError
        If the recorded global batch differs (records without one are taken as single-replica).
    """
    path = out_dir / "train_config.json"
    if state is None or not path.is_file():
        return
    record = json.loads(path.read_text(encoding="utf-8"))
    old = record.get("global_batch", record.get("config", {}).get("batch_size"))
    if old is not None and int(old) != dist.global_batch:
        raise ValueError(f"{out_dir}: the checkpoint was trained with global batch {old}, this run would use "
                         f"{dist.global_batch} ({dist.replicas} replica(s) x {dist.per_replica_batch}); use the "
                         "same number of replicas, a new out_dir or resume=False")


def check_same_start(dist: Distribution, epoch: int) -> None:
    """All workers of a ``multi_worker`` run must resume from the same epoch (one all-reduce).

    Parameters
    ----------
    dist : Distribution
        The run's distribution (nothing is checked with one worker).
    epoch : int
        The epoch this worker resumes from (0 for a new run).

    Raises
    ------
    RuntimeError
        On every worker, if the workers' epochs differ (e.g. the run folder is not shared).
    """
    if dist.workers <= 1:
        return
    import tensorflow as tf

    def values() -> Any:
        e = tf.constant(float(epoch), tf.float64)
        return tf.stack([tf.constant(1.0, tf.float64), e, e * e])

    n, s, ss = (float(v) for v in dist.strategy.reduce("SUM", dist.strategy.run(values), axis=None).numpy())
    if abs(n * ss - s * s) > 1e-6:  # Cauchy-Schwarz equality iff all epochs are equal
        raise RuntimeError(f"workers resume from different epochs (this one, {dist.task_type}:{dist.task_id}, "
                           f"from {epoch}; mean {s / n:.2f}): the run folder must be the same shared folder "
                           "on every machine")


@contextlib.contextmanager
def writable_dir(dist: Distribution, out_dir: Path) -> Iterator[Path]:
    """The folder this process writes the run into: ``out_dir`` on the chief, a temporary copy elsewhere.

    A non-chief worker gets a fresh temporary folder holding copies (hard links where possible) of
    ``out_dir``'s checkpoint, best model, CSV log and config, so it resumes exactly like the chief;
    the folder is deleted when the block ends.

    Parameters
    ----------
    dist : Distribution
        The run's distribution.
    out_dir : pathlib.Path
        The run folder.

    Yields
    ------
    pathlib.Path
    """
    if dist.chief:
        yield out_dir
        return
    tmp = Path(tempfile.mkdtemp(prefix=f"bmstudy-{dist.task_type}{dist.task_id}-"))
    log.info("%s:%s is not the chief: writing into %s (deleted afterwards), not %s", dist.task_type,
             dist.task_id, tmp, out_dir)
    try:
        for name in _RESUME_FILES:
            src = out_dir / name
            if src.is_dir():
                shutil.copytree(src, tmp / name, copy_function=_link_or_copy)
            elif src.is_file():
                shutil.copy2(src, tmp / name)  # appended to (CSV log): a real copy
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _link_or_copy(src: str, dst: str) -> None:
    """Hard-link ``src`` to ``dst`` (the writers replace files atomically, never write into them), else copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def tf_config(hosts: Sequence[str], index: int, task_type: str = "worker") -> str:
    """The ``TF_CONFIG`` JSON of task ``index`` in a cluster of ``worker`` tasks at ``hosts``.

    Parameters
    ----------
    hosts : sequence of str
        ``host:port`` of every worker, the chief (worker 0) first; the same list on every machine.
    index : int
        This machine's position in ``hosts``.
    task_type : str, default="worker"
        The task type.

    Returns
    -------
    str
        e.g. ``{"cluster": {"worker": ["a:12345", "b:12345"]}, "task": {"type": "worker", "index": 1}}``.
    """
    if not 0 <= index < len(hosts):
        raise ValueError(f"index {index} outside the {len(hosts)} host(s) {list(hosts)}")
    return json.dumps({"cluster": {"worker": list(hosts)}, "task": {"type": task_type, "index": int(index)}})


def free_ports(n: int, host: str = "localhost") -> list[int]:
    """``n`` distinct TCP ports that were free on ``host`` a moment ago (for local multi-worker runs)."""
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports
