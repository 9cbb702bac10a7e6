"""Executors for the per-case loop: local process pools by default, or a Dask cluster.

:func:`bmstudy.cases.run_cases` submits cases to a :class:`concurrent.futures.Executor`. This module
makes one from a scheduler address (:func:`make_executor`) and lets a whole stage run on it without
threading it through every call: inside ``with use_executor(...)``, :func:`current_executor` returns it
and ``run_cases`` uses it when no executor is passed.

* ``dask_scheduler=None``: no executor (``run_cases`` keeps its local process pool of ``n_jobs``);
* ``"local"``: a :class:`distributed.LocalCluster` of ``n_jobs`` single-threaded worker processes, closed
  with the executor;
* ``"tcp://HOST:PORT"`` (any address a :class:`distributed.Client` takes): an existing cluster; only the
  client is closed.

Per-case outputs are idempotent (each case writes its own files atomically and ``is_finished`` skips
finished ones), so a case whose worker is lost is simply run again: the Dask scheduler reschedules a
lost worker's tasks (up to ``distributed.scheduler.allowed-failures``, default 3), and ``retries``
re-runs a task that raised outside the per-case function. The workers must import the same bmstudy
(same environment) and see the same file system paths as the client.

dask / distributed are imported lazily, only when a Dask scheduler is asked for.
"""
from __future__ import annotations

import atexit
import contextlib
import contextvars
import sys
from concurrent.futures import Executor, Future
from typing import Any, Callable, Iterator

from .utils import get_logger

__all__ = ["DaskExecutor", "make_executor", "use_executor", "current_executor", "set_default_executor", "LOCAL"]

log = get_logger("bmstudy.executors")

#: The ``dask_scheduler`` value that starts a LocalCluster.
LOCAL = "local"

_UNSET: Any = object()
_CURRENT: contextvars.ContextVar[Any] = contextvars.ContextVar("bmstudy_executor", default=_UNSET)
_DEFAULT: dict[str, Any] = {"executor": None, "owned": False}


class DaskExecutor(Executor):
    """A :class:`concurrent.futures.Executor` on a Dask client (``Client.get_executor``) that owns the client.

    Parameters
    ----------
    client : distributed.Client
        The connected client.
    cluster : distributed.LocalCluster or None, default=None
        A cluster started for this executor (closed by :meth:`shutdown`), or None for an external one.
    retries : int, default=2
        Dask retries of a task that raised (the per-case function itself never raises: its errors
        become ``failed`` rows).

    Attributes
    ----------
    client : distributed.Client
    address : str
        The scheduler address.
    """

    def __init__(self, client: Any, cluster: Any = None, retries: int = 2) -> None:
        self.client = client
        self.cluster = cluster
        self.address = str(client.scheduler.address)
        self._inner = client.get_executor(pure=False, retries=int(retries))
        self._closed = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:  # type: ignore[override]
        """Submit ``fn(*args, **kwargs)`` to the cluster; a :class:`concurrent.futures.Future`."""
        return self._inner.submit(fn, *args, **kwargs)

    def n_workers(self) -> int:
        """Number of workers currently connected to the scheduler."""
        return len(self.client.scheduler_info().get("workers", {}))

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop submitting, wait for (or cancel) running cases, close the client and an owned cluster."""
        if self._closed:
            return
        self._closed = True
        try:
            self._inner.shutdown(wait=wait and not cancel_futures)
        finally:
            self.client.close()
            if self.cluster is not None:
                self.cluster.close()

    def __repr__(self) -> str:
        return f"DaskExecutor({self.address!r}, local={self.cluster is not None})"


def make_executor(dask_scheduler: str | None, n_jobs: int = 1, *, retries: int = 2,
                  timeout: float = 30.0, **cluster_kwargs: Any) -> Executor | None:
    """The executor of a ``dask_scheduler`` setting (``None``, ``"local"`` or a scheduler address).

    Parameters
    ----------
    dask_scheduler : str or None
        ``None`` or ``""``: no executor (local process pool in ``run_cases``); ``"local"``: a new
        LocalCluster; otherwise the address of a running scheduler, e.g. ``tcp://10.0.0.5:8786``.
    n_jobs : int, default=1
        Workers of a LocalCluster (single-threaded processes); ignored for an external scheduler.
    retries : int, default=2
        Dask task retries (see :class:`DaskExecutor`).
    timeout : float, default=30.0
        Seconds to wait for the scheduler.
    **cluster_kwargs
        Passed to :class:`distributed.LocalCluster` (e.g. ``processes=False``, ``memory_limit``).

    Returns
    -------
    concurrent.futures.Executor or None
        A :class:`DaskExecutor` (call ``shutdown()`` or use :func:`use_executor`), or None.

    Raises
    ------
    ImportError
        When a Dask scheduler is asked for and dask.distributed is not installed.
    OSError
        When the scheduler cannot be reached within ``timeout`` (the message names the address).
    ValueError
        For ``n_jobs < 1``.
    """
    if int(n_jobs) < 1:
        raise ValueError(f"n_jobs must be >= 1, got {n_jobs}")
    if not dask_scheduler:
        return None
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:  # pragma: no cover - dask is a dependency
        raise ImportError(f"dask_scheduler={dask_scheduler!r} needs dask.distributed: "
                          "pip install dask==2026.8.0 distributed==2026.8.0") from exc
    cluster = None
    if str(dask_scheduler).lower() == LOCAL:
        opts = {"n_workers": int(n_jobs), "threads_per_worker": 1, "dashboard_address": None, **cluster_kwargs}
        cluster = LocalCluster(**opts)
        address: Any = cluster
    else:
        address = str(dask_scheduler)
    try:
        client = Client(address, timeout=timeout)
    except (OSError, TimeoutError) as exc:
        if cluster is not None:
            cluster.close()
        raise OSError(f"cannot reach the Dask scheduler {dask_scheduler!r} within {timeout:g} s: {exc}") from exc
    ex = DaskExecutor(client, cluster, retries=retries)
    log.info("Dask executor on %s (%d workers)", ex.address, ex.n_workers())
    return ex


def current_executor() -> Executor | None:
    """The executor of the innermost active :func:`use_executor`, else the process default, else None.

    :func:`bmstudy.cases.run_cases` consults it when called without ``executor=``.
    """
    if _in_dask_worker():  # a case running on a worker runs its inner loops locally (no tasks from tasks)
        return None
    ex = _CURRENT.get()
    return _DEFAULT["executor"] if ex is _UNSET else ex


def _in_dask_worker() -> bool:
    """Whether this code runs inside a Dask worker task."""
    if "distributed" not in sys.modules:
        return False
    try:
        sys.modules["distributed"].get_worker()
    except (ValueError, AttributeError):
        return False
    return True


def set_default_executor(executor: Executor | str | None, n_jobs: int = 1, **kwargs: Any) -> Executor | None:
    """Set the process-wide executor (used outside any :func:`use_executor` block), e.g. in a notebook.

    A notebook kernel may run each cell in its own context, so a ``with use_executor(...)`` block
    cannot span cells; ``notebook_setup`` can call this once with the plan's ``dask_scheduler``.
    The previous default is shut down if it was made here; one made from a string is shut down at
    exit.

    Parameters
    ----------
    executor : Executor, str or None
        As for :func:`use_executor` (None clears the default).
    n_jobs : int, default=1
        Workers of a ``"local"`` cluster.
    **kwargs
        Passed to :func:`make_executor`.

    Returns
    -------
    concurrent.futures.Executor or None
        The new default.
    """
    old, owned = _DEFAULT["executor"], _DEFAULT["owned"]
    own = isinstance(executor, str)
    ex = make_executor(executor, n_jobs, **kwargs) if own else executor
    _DEFAULT.update(executor=ex, owned=own and ex is not None)
    if owned and old is not None and old is not ex:
        old.shutdown()
    if own and ex is not None:
        atexit.register(ex.shutdown)
    return ex


@contextlib.contextmanager
def use_executor(executor: Executor | str | None, n_jobs: int = 1, **kwargs: Any) -> Iterator[Executor | None]:
    """Make ``executor`` the :func:`current_executor` inside the block.

    Parameters
    ----------
    executor : Executor, str or None
        An executor (kept open: the caller owns it), a ``dask_scheduler`` value for
        :func:`make_executor` (the executor made here is shut down at the end of the block), or None
        (no executor: the block runs the local default, even inside an outer ``use_executor``).
    n_jobs : int, default=1
        Workers of a ``"local"`` cluster.
    **kwargs
        Passed to :func:`make_executor`.

    Yields
    ------
    concurrent.futures.Executor or None
        The executor in use.
    """
    own = isinstance(executor, str)
    ex = make_executor(executor, n_jobs, **kwargs) if own else executor
    token = _CURRENT.set(ex)  # type: ignore[arg-type]
    try:
        yield ex  # type: ignore[misc]
    finally:
        _CURRENT.reset(token)
        if own and ex is not None:
            ex.shutdown()
