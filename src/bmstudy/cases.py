"""The one per-case loop of every cohort stage (synthesis, preprocessing, inference, evaluation).

:func:`run_cases` runs a function over cases, serially or in worker processes, with a progress bar;
an exception in one case becomes that case's ``failed`` row (naming the case and, when the exception
carries one, the file) and never stops the others. Cases already finished are skipped when the caller
says so (``is_finished``), and the status table is written atomically when ``status_path`` is given.

Status rows are plain dicts with at least ``patient_id``, ``status`` (``ok`` | ``excluded`` |
``failed`` | ``skipped``) and ``reason``; the function may return any further columns.
"""
from __future__ import annotations

import multiprocessing as mp
import sys
import traceback
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import pandas as pd

from .executors import current_executor
from .utils import PathLike, atomic_to_csv, duplicate_ids, get_logger

__all__ = ["STATUSES", "EXIT_OK", "EXIT_PARTIAL", "EXIT_FAILED", "CaseError", "CaseResult", "run_cases",
           "status_counts", "failure_row", "exit_code", "broken_pool_hint"]

log = get_logger("bmstudy.cases")

#: Status values of a per-case row.
STATUSES: tuple[str, ...] = ("ok", "excluded", "failed", "skipped")
#: Exit codes of every ``bmstudy`` command: all cases ok (or nothing to do) / some cases excluded or
#: failed while others completed / the command failed (no case completed, or an error before any case).
EXIT_OK, EXIT_PARTIAL, EXIT_FAILED = 0, 3, 1


class CaseError(RuntimeError):
    """An error of one case, naming the patient and the file concerned.

    Raise it from a per-case function to choose the row's status and the file shown in its reason
    (see :func:`failure_row`).

    Parameters
    ----------
    message : str
        What went wrong.
    case : str or None, default=None
        The patient id (stored as ``case``).
    path : str, PathLike or None, default=None
        The file concerned (stored as ``path``, a :class:`pathlib.Path`).
    status : str, default="failed"
        The status of the case's row (``failed`` or ``excluded``).
    """

    def __init__(self, message: str, case: str | None = None, path: PathLike | None = None,
                 status: str = "failed") -> None:
        super().__init__(message)
        self.case = case
        self.path = None if path is None else Path(path)
        self.status = status


@dataclass(frozen=True)
class CaseResult:
    """Outcome of :func:`run_cases`: one status row per case, in input order.

    Attributes
    ----------
    rows : list of dict
        The status rows (``patient_id``, ``status``, ``reason``, ``cached`` and the function's columns).
    """

    rows: list[dict[str, Any]]

    @property
    def table(self) -> pd.DataFrame:
        """pandas.DataFrame: the status rows as a table."""
        return pd.DataFrame(self.rows)

    def counts(self) -> dict[str, int]:
        """Number of cases per status.

        Returns
        -------
        dict of str to int
            As :func:`status_counts`.
        """
        return status_counts(self.rows)


def status_counts(rows: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Number of cases per status.

    Parameters
    ----------
    rows : iterable of mapping
        Status rows; a row without ``status`` counts as ``failed``.

    Returns
    -------
    dict of str to int
        ``{status: count}`` for the statuses present, those of :data:`STATUSES` first (in that order),
        then any others sorted.
    """
    counts: dict[str, int] = {}
    for r in rows:
        s = str(r.get("status", "failed"))
        counts[s] = counts.get(s, 0) + 1
    return {k: counts[k] for k in [*STATUSES, *sorted(set(counts) - set(STATUSES))] if k in counts}


def exit_code(rows: Iterable[Mapping[str, Any]]) -> int:
    """The exit code of a per-case command from its status rows (one convention for every command).

    Parameters
    ----------
    rows : iterable of mapping
        Status rows (``status`` column; a row without one counts as ``failed``); a
        :class:`pandas.DataFrame` is accepted too.

    Returns
    -------
    int
        :data:`EXIT_OK` (0) when every case is ``ok`` or ``skipped`` (also for no cases),
        :data:`EXIT_PARTIAL` (3) when some are ``excluded`` / ``failed`` and at least one is ``ok``
        or ``skipped``, :data:`EXIT_FAILED` (1) when none is.
    """
    if isinstance(rows, pd.DataFrame):
        rows = rows.to_dict("records")
    counts = status_counts(rows)
    good = counts.get("ok", 0) + counts.get("skipped", 0)
    bad = sum(counts.values()) - good
    if not bad:
        return EXIT_OK
    return EXIT_PARTIAL if good else EXIT_FAILED


def failure_row(case_id: str, exc: BaseException, status: str | None = None) -> dict[str, Any]:
    """The status row of a case whose function raised ``exc``.

    Parameters
    ----------
    case_id : str
        The case's id (prefixed to the message unless already in it).
    exc : BaseException
        The exception; its ``status`` (a :class:`CaseError`'s) and ``path`` or ``filename`` attributes
        are used when present (the file is appended to the message unless already in it).
    status : str or None, default=None
        The row's status; ``None`` means ``exc.status`` if set, else ``failed``.

    Returns
    -------
    dict
        ``patient_id``, ``status`` and ``reason`` (the message; prefixed with the exception's type
        name unless the status is ``excluded``).
    """
    status = status or getattr(exc, "status", None) or "failed"
    path = getattr(exc, "path", None) or getattr(exc, "filename", None)
    msg = str(exc) or type(exc).__name__
    if case_id not in msg:
        msg = f"{case_id}: {msg}"
    if path and str(path) not in msg:
        msg = f"{msg} ({path})"
    reason = msg if status == "excluded" else f"{type(exc).__name__}: {msg}"
    return {"patient_id": case_id, "status": status, "reason": reason}


def _mp_context() -> Any:
    """The process start method for worker pools: ``spawn`` inside a Jupyter kernel or once TensorFlow or
    torch is loaded (forking a process that runs their threads, or a kernel, can deadlock), else the default."""
    return mp.get_context("spawn") if {"tensorflow", "torch", "ipykernel"} & set(sys.modules) else None


def broken_pool_hint(pool: Any) -> str:
    """What to try when a worker pool broke: the spawn start method's ``__main__`` guard, memory, ``n_jobs=1``."""
    ctx = getattr(pool, "_mp_context", None)
    method = ctx.get_start_method() if ctx is not None else mp.get_start_method(allow_none=True)
    hint = "(a worker process died: killed for memory, or it crashed; n_jobs=1 runs the cases in this process"
    if method == "spawn":
        hint += ("; workers are started with 'spawn' (TensorFlow, torch or a Jupyter kernel is loaded), "
                 "so a script must call this under `if __name__ == \"__main__\":`")
    return hint + ")"


def _call(fn: Callable[..., Mapping[str, Any]], case_id: str, case: Any, kwargs: Mapping[str, Any],
          excluded: tuple[type[BaseException], ...]) -> dict[str, Any]:
    """``fn(case, **kwargs)`` as a status row; exceptions become :func:`failure_row` rows."""
    try:
        row = dict(fn(case, **kwargs))
    except excluded as exc:
        return failure_row(case_id, exc, "excluded")
    except Exception as exc:  # noqa: BLE001  one bad case never loses the others
        log.debug("case %s failed:\n%s", case_id, traceback.format_exc())
        return failure_row(case_id, exc)
    row.setdefault("patient_id", case_id)
    row.setdefault("status", "ok")
    row.setdefault("reason", "")
    return row


def _case_ids(cases: Sequence[Any], case_id: Callable[[Any], str] | None) -> list[str]:
    """The id of every case (default ``case["patient_id"]``); ``ValueError`` on duplicates."""
    ident = case_id or (lambda c: str(c["patient_id"]))
    ids = [ident(c) for c in cases]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise ValueError(f"duplicate case ids: {dup[:10]}")
    same = duplicate_ids(ids)
    if same:
        raise ValueError(f"case ids that differ only in letter case name the same files on some file systems: "
                         f"{same[:10]}")
    return ids


def _finished_and_todo(ids: list[str], cases: Sequence[Any], is_finished: Callable[[Any], Mapping[str, Any] | None] | None
                       ) -> tuple[dict[str, dict[str, Any]], list[tuple[str, Any]]]:
    """``(rows of finished cases, marked cached=True; (id, case) pairs still to run)``."""
    rows: dict[str, dict[str, Any]] = {}
    todo = []
    for cid, case in zip(ids, cases):
        prev = is_finished(case) if is_finished else None
        if prev is not None:
            rows[cid] = {**dict(prev), "patient_id": cid, "cached": True}
        else:
            todo.append((cid, case))
    return rows, todo


def _run_todo(fn: Callable[..., Mapping[str, Any]], todo: list[tuple[str, Any]], kwargs: Mapping[str, Any],
              excluded: tuple[type[BaseException], ...], n_jobs: int, executor: Executor | None,
              bar: Any) -> dict[str, dict[str, Any]]:
    """Status rows of the cases to run, serially or in a pool; ``bar`` advances once per case."""
    rows: dict[str, dict[str, Any]] = {}
    if executor is None and (int(n_jobs) <= 1 or len(todo) <= 1):
        for cid, case in todo:
            rows[cid] = _call(fn, cid, case, kwargs, excluded)
            bar.update(1)
        return rows
    own = executor is None
    pool = executor or ProcessPoolExecutor(max_workers=min(int(n_jobs), len(todo)), mp_context=_mp_context())
    try:
        futures = {pool.submit(_call, fn, cid, case, kwargs, excluded): cid for cid, case in todo}
        for fut in as_completed(futures):
            cid = futures[fut]
            try:
                rows[cid] = fut.result()
            except BrokenProcessPool as exc:  # a worker died: killed for memory, or could not start
                rows[cid] = failure_row(cid, RuntimeError(f"{exc} {broken_pool_hint(pool)}"))
            except Exception as exc:  # noqa: BLE001
                rows[cid] = failure_row(cid, exc)
            bar.update(1)
    finally:
        if own:
            pool.shutdown()
    return rows


def _write_status(rows: list[dict[str, Any]], status_path: PathLike, columns: Sequence[str] | None) -> None:
    """Write the status table atomically, ``columns`` first (added empty when missing)."""
    table = pd.DataFrame(rows)
    if columns is not None:
        for col in columns:
            if col not in table.columns:
                table[col] = None
        table = table[list(columns) + [c for c in table.columns if c not in columns]]
    atomic_to_csv(table, status_path)


def run_cases(
    fn: Callable[..., Mapping[str, Any]],
    cases: Sequence[Any],
    *,
    case_id: Callable[[Any], str] | None = None,
    kwargs: Mapping[str, Any] | None = None,
    is_finished: Callable[[Any], Mapping[str, Any] | None] | None = None,
    n_jobs: int = 1,
    executor: Executor | None = None,
    excluded: tuple[type[BaseException], ...] = (),
    status_path: PathLike | None = None,
    columns: Sequence[str] | None = None,
    desc: str = "cases",
    progress: bool = True,
) -> CaseResult:
    """Run ``fn(case, **kwargs)`` for every case; one status row per case, in input order.

    Parameters
    ----------
    fn : callable
        Picklable function returning the case's status row (a mapping; ``patient_id``, ``status``
        and ``reason`` default to the case id, ``ok`` and ``""``).
    cases : sequence
        The cases (manifest rows as dicts, plans, ...).
    case_id : callable or None, default=None
        Maps a case to its id; ``None`` means ``case["patient_id"]``.
    kwargs : mapping or None, default=None
        Keyword arguments passed to every call.
    is_finished : callable or None, default=None
        Returns the recorded row of a case that needs no work (it is kept, with ``cached=True``),
        or ``None`` to run it.
    n_jobs : int, default=1
        Worker processes when ``executor`` is None (1: run in this process).
    executor : concurrent.futures.Executor or None, default=None
        An executor to submit to instead (e.g. a Dask client's); not shut down here.
    excluded : tuple of exception types, default=()
        Exceptions that mean "bad input" (status ``excluded``) rather than ``failed``.
    status_path : str, PathLike or None, default=None
        Where the status table is written (CSV, atomically), or None.
    columns : sequence of str or None, default=None
        Leading column order of the written table (missing columns are added empty).
    desc : str, default="cases"
        Progress-bar label.
    progress : bool, default=True
        Show the progress bar.

    Returns
    -------
    CaseResult
        One row per case, in the order of ``cases``; every row has ``cached``.

    Raises
    ------
    ValueError
        If ``n_jobs < 1`` or two cases have the same id.
    """
    from tqdm.auto import tqdm

    if int(n_jobs) < 1:
        raise ValueError(f"n_jobs must be >= 1, got {n_jobs}")
    ids = _case_ids(cases, case_id)
    kwargs = dict(kwargs or {})
    rows, todo = _finished_and_todo(ids, cases, is_finished)
    if executor is None:  # a use_executor block / set_default_executor (--dask-scheduler), else local
        executor = current_executor()
    bar = tqdm(total=len(cases), initial=len(cases) - len(todo), desc=desc, unit="case", disable=not progress)
    try:
        rows.update(_run_todo(fn, todo, kwargs, excluded, n_jobs, executor, bar))
    finally:
        bar.close()
    ordered = [rows[i] for i in ids]
    for r in ordered:
        r.setdefault("cached", False)
    if status_path is not None:
        _write_status(ordered, status_path, columns)
    bad = [r for r in ordered if r.get("status") in ("failed", "excluded")]
    for r in bad[:20]:
        log.warning("%s %s: %s", r["patient_id"], r["status"], r.get("reason", ""))
    return CaseResult(ordered)
