"""One writer per folder: :func:`folder_lock` (a lock file naming its holder; dead holders are taken over).

Used by every per-case stage for its output folder (``bmstudy preprocess``, ``bmstudy predict``) and by
``bmstudy run`` for the run folder. The lock file ``<folder>/.bmstudy.lock`` records the holder's PID,
its kernel start tick (so a reused PID is not mistaken for the holder), host, start time and command.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Iterator

from ..utils import PathLike, get_logger, pid_alive, process_start_tick

__all__ = ["LOCK_NAME", "LockError", "acquire_lock", "release_lock", "folder_lock"]

#: File name of the lock inside a locked folder.
LOCK_NAME = ".bmstudy.lock"


class LockError(RuntimeError):
    """Another live process holds a folder's lock; the message names its PID and start time."""


_HELD: dict[str, int] = {}  # resolved lock file -> nesting depth held by this process


def _lock_record(what: str) -> dict[str, Any]:
    import socket
    import sys
    from datetime import datetime, timezone

    return {"pid": os.getpid(), "proc_start": process_start_tick(os.getpid()), "host": socket.gethostname(),
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "what": what,
            "command": " ".join(sys.argv)[:500]}


def _try_create(lock: Path, record: dict[str, Any]) -> bool:
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(record, indent=2) + "\n")
    return True


def _read_lock(lock: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads(lock.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # half-written or garbage: treated as held by a dead process


def _holder_alive(holder: dict[str, Any]) -> bool:
    import socket

    if holder.get("host") not in (None, socket.gethostname()):
        return True  # another machine's process: cannot check, never steal
    try:
        return pid_alive(int(holder.get("pid", -1)), holder.get("proc_start"))
    except (TypeError, ValueError):
        return False


def acquire_lock(folder: PathLike, what: str = "output folder") -> Path:
    """Take the lock of ``folder`` (created) for this process; see :func:`folder_lock`.

    Parameters
    ----------
    folder : str or PathLike
        The folder.
    what : str, default="output folder"
        What the folder is, for messages and the lock record.

    Returns
    -------
    pathlib.Path
        The lock file (``folder/.bmstudy.lock``).

    Raises
    ------
    LockError
        When a live process holds it (naming its PID, host, start time and command).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = (folder / LOCK_NAME).resolve()
    if _HELD.get(str(lock)):
        _HELD[str(lock)] += 1
        return lock
    record = _lock_record(what)
    for _ in range(20):
        if _try_create(lock, record):
            _HELD[str(lock)] = 1
            return lock
        holder = _read_lock(lock)
        if holder is None:
            continue  # released meanwhile
        if holder and _holder_alive(holder):
            raise LockError(f"{what} {folder} is in use by PID {holder.get('pid')} on {holder.get('host')} "
                            f"since {holder.get('started')} ({holder.get('command', '')}); "
                            f"wait for it to finish, or remove {lock} if that process is gone")
        stale = lock.with_name(f"{LOCK_NAME}.stale.{os.getpid()}")
        try:
            os.rename(lock, stale)  # only one taker wins the rename
        except FileNotFoundError:
            continue
        stale.unlink(missing_ok=True)
        get_logger("bmstudy.io.locks").warning(
            "%s %s: taking over the lock of PID %s (started %s), which is no longer running", what, folder,
            holder.get("pid", "?"), holder.get("started", "?"))
    raise LockError(f"{what} {folder}: could not take the lock {lock}")


def release_lock(folder: PathLike) -> None:
    """Release this process's lock of ``folder`` (the outermost :func:`acquire_lock` removes the file).

    Parameters
    ----------
    folder : str or PathLike
        The folder.
    """
    lock = (Path(folder) / LOCK_NAME).resolve()
    depth = _HELD.get(str(lock), 0)
    if depth > 1:
        _HELD[str(lock)] = depth - 1
        return
    _HELD.pop(str(lock), None)
    holder = _read_lock(lock)
    if holder and holder.get("pid") == os.getpid():
        lock.unlink(missing_ok=True)


@contextlib.contextmanager
def folder_lock(folder: PathLike, what: str = "output folder") -> Iterator[Path]:
    """Hold the lock of ``folder`` for the block: one writer per folder at a time.

    The lock is the file ``folder/.bmstudy.lock`` (created exclusively) recording the PID, its
    start tick, host, start time and command. A second process fails at once with
    :class:`LockError` naming the holder; a lock whose process is dead (or whose PID was reused) is
    taken over with a warning. Re-entrant within one process.

    Parameters
    ----------
    folder : str or PathLike
        The folder (created).
    what : str, default="output folder"
        What it is (``"preprocessing output folder"``, ``"run folder"``), for messages.

    Yields
    ------
    pathlib.Path
        The lock file.

    Raises
    ------
    LockError
        When another live process holds the lock.
    """
    lock = acquire_lock(folder, what)
    try:
        yield lock
    finally:
        release_lock(folder)


