"""Small shared helpers of every stage: the package logger, atomic file writes, hashing, safe ids, folder locks.

Atomic writes (:func:`atomic_path` and the writers built on it) write to a temporary file in the
destination folder and rename it onto the destination, so a crash never leaves a half-written file.
Imports nothing from the rest of the package (the bottom of the dependency order).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

#: A file-system path as accepted by every bmstudy function.
PathLike = str | os.PathLike


def get_logger(name: str = "bmstudy") -> logging.Logger:
    """A package logger; the ``bmstudy`` root logger gets one ``time level name: message`` handler per process.

    Parameters
    ----------
    name : str, default="bmstudy"
        Logger name (``bmstudy.<package>.<module>`` by convention).

    Returns
    -------
    logging.Logger
        The logger; its level comes from the environment variable ``BMSTUDY_LOGLEVEL`` (default
        ``INFO``), set on the root logger when the handler is first added.
    """
    logger = logging.getLogger(name)
    root = logging.getLogger("bmstudy")
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        root.addHandler(handler)
        root.setLevel(os.environ.get("BMSTUDY_LOGLEVEL", "INFO"))
        root.propagate = False
    return logger


@contextlib.contextmanager
def atomic_path(path: PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path in the destination folder; rename it onto ``path`` on success.

    An exception (or ``KeyboardInterrupt``) leaves ``path`` untouched (old content or absent) and
    removes the temp file, also when the writer made it a folder. The temp file's name
    (``.<name>.<pid>.<random>.tmp<suffix>``) records the writing process, so temp files left by a
    killed process (SIGKILL runs no clean-up) are found and removed by :func:`clean_stale_temps`.
    The destination folder is created. The renamed file gets the usual umask permissions.

    Parameters
    ----------
    path : str or PathLike
        The destination.
    suffix : str or None, default=None
        Suffix of the temporary file; ``None`` means the destination's full suffix (e.g.
        ``.nii.gz``), so writers that infer the format from the name keep working.

    Yields
    ------
    pathlib.Path
        The temporary path to write to (it exists, empty, when the block starts).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix is None:
        suffix = "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():  # mkstemp creates 0600; give the result the usual umask permissions
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    finally:
        _remove(tmp_path)


def temp_prefix(path: PathLike) -> str:
    """The name prefix of this process's temp files for ``path``: ``.<name without suffixes>.<pid>.``.

    Parameters
    ----------
    path : str or PathLike
        The destination.

    Returns
    -------
    str
        The prefix (for ``tempfile.mkstemp`` / ``mkdtemp``; :func:`clean_stale_temps` recognises it).
    """
    return f".{Path(path).name.split('.')[0]}.{os.getpid()}."


_TEMP_NAME = re.compile(r"^\.[^/]*\.(\d+)\.[A-Za-z0-9_]{8}\.tmp")


def clean_stale_temps(folder: PathLike, recursive: bool = True) -> list[Path]:
    """Remove the temp files (and temp folders) of atomic writes whose writing process is dead.

    Parameters
    ----------
    folder : str or PathLike
        Where to look (a missing folder is fine).
    recursive : bool, default=True
        Also look in sub-folders.

    Returns
    -------
    list of pathlib.Path
        What was removed (logged at WARNING).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = folder.rglob(".*.tmp*") if recursive else folder.glob(".*.tmp*")
    removed = []
    for p in sorted(found):
        m = _TEMP_NAME.match(p.name)
        if m is None or pid_alive(int(m.group(1))):
            continue
        _remove(p)
        removed.append(p)
    if removed:
        get_logger("bmstudy.utils").warning("removed %d temp file(s) left by dead processes in %s: %s", len(removed),
                                            folder, ", ".join(p.name for p in removed[:5]))
    return removed


def _remove(p: Path) -> None:
    """Remove a file or folder if present (errors ignored: best-effort clean-up)."""
    import shutil

    try:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    except OSError:
        pass


def atomic_write_text(path: PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (UTF-8).

    Parameters
    ----------
    path : str or PathLike
        The destination.
    text : str
        The content.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_write_json(path: PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON (sorted keys, trailing newline) atomically.

    Parameters
    ----------
    path : str or PathLike
        The destination.
    obj : JSON-able object
        May also hold numpy scalars and arrays and :class:`pathlib.Path` values (converted).

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    TypeError
        If ``obj`` holds a value that cannot be converted to JSON.
    """
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def atomic_save_npy(path: PathLike, array: np.ndarray) -> Path:
    """Save one array as ``.npy`` atomically (no pickling).

    Parameters
    ----------
    path : str or PathLike
        The destination.
    array : ndarray
        The array (object arrays are refused by ``numpy.save(allow_pickle=False)``).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, array, allow_pickle=False)
    return Path(path)


def atomic_to_csv(df: Any, path: PathLike, **kwargs: Any) -> Path:
    """``DataFrame.to_csv`` atomically.

    Parameters
    ----------
    df : pandas.DataFrame
        The table.
    path : str or PathLike
        The destination.
    **kwargs
        Passed to ``DataFrame.to_csv``; ``index`` defaults to ``False``.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    kwargs.setdefault("index", False)
    with atomic_path(path) as tmp:
        df.to_csv(tmp, **kwargs)
    return Path(path)


def file_sha256(path: PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file's bytes.

    Parameters
    ----------
    path : str or PathLike
        The file.
    chunk : int, default=1 << 20
        Read size in bytes (1 MiB).

    Returns
    -------
    str
        64 hex digits.
    """
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def params_hash(params: dict[str, Any]) -> str:
    """Stable short hash of a JSON-able parameter dict (key order does not matter).

    Parameters
    ----------
    params : dict
        The parameters (numpy values and paths allowed, as in :func:`atomic_write_json`).

    Returns
    -------
    str
        The first 16 hex digits of the SHA-256 of the sorted-key JSON text.
    """
    text = json.dumps(params, sort_keys=True, default=_json_default)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- safe ids and paths
#: A patient id: starts with a letter or digit, then letters, digits, ``.``, ``_``, ``-`` (no ``..``).
SAFE_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_SAFE_ID = re.compile(SAFE_ID_PATTERN)


def id_problem(value: Any) -> str | None:
    """Why ``value`` is not a safe patient id, or None when it is one.

    Parameters
    ----------
    value : object
        The id as read (``str`` expected).

    Returns
    -------
    str or None
        A short reason (``"empty"``, ``"contains '..'"``, ``"must match ..."``) or None.
    """
    if not isinstance(value, str) or value == "":
        return "empty" if value in ("", None) else f"not a string ({type(value).__name__})"
    if ".." in value:
        return "contains '..'"
    if not _SAFE_ID.fullmatch(value):
        return f"must match {SAFE_ID_PATTERN} (letters, digits, '.', '_', '-'; no separators or spaces)"
    return None


def check_id(value: Any, what: str = "patient_id") -> str:
    """Return ``value`` when it is a safe id (:func:`id_problem`), else raise.

    Parameters
    ----------
    value : object
        The id.
    what : str, default="patient_id"
        Its name in the message.

    Returns
    -------
    str
        ``value``.

    Raises
    ------
    ValueError
        Naming the id and why it is refused.
    """
    problem = id_problem(value)
    if problem is not None:
        raise ValueError(f"unsafe {what} {value!r}: {problem}")
    return value


def duplicate_ids(ids: Iterable[str]) -> list[list[str]]:
    """Groups of ids that name the same file on a case-insensitive file system.

    Parameters
    ----------
    ids : iterable of str
        The ids.

    Returns
    -------
    list of list of str
        Each group (in first-seen order) of two or more ids equal after ``str.casefold``.
    """
    groups: dict[str, list[str]] = {}
    for i in ids:
        groups.setdefault(str(i).casefold(), []).append(str(i))
    return [g for g in groups.values() if len(g) > 1]


def safe_join(folder: PathLike, *parts: str) -> Path:
    """``folder / part / ...``, refusing any result outside ``folder``.

    Every part that comes from data (a patient id, a file name built from one) goes through here,
    so ``../evil``, ``a/b`` or ``/abs/path`` can never write or delete outside the output folder.

    Parameters
    ----------
    folder : str or PathLike
        The folder the result must stay inside.
    *parts : str
        Path components (each a single name: no separators or NUL, not ``.`` or ``..``, not empty).

    Returns
    -------
    pathlib.Path
        ``Path(folder, *parts)`` (not resolved).

    Raises
    ------
    ValueError
        Naming the offending part when a part is empty, ``.``/``..`` or holds a separator (so no
        absolute part either), or when the resolved result (symbolic links followed) leaves ``folder``.
    """
    base = Path(folder)
    for part in parts:
        s = str(part)
        if s in ("", ".", "..") or "/" in s or "\\" in s or "\x00" in s:
            raise ValueError(f"unsafe name {s!r} for a path under {base}: one file name without '..' or separators")
    out = base.joinpath(*map(str, parts))
    root = base.resolve()
    target = out.resolve()
    if target != root and root not in target.parents:
        raise ValueError(f"unsafe name {'/'.join(map(str, parts))!r}: {target} is outside {root}")
    return out


# ----------------------------------------------------------------------------- content and code hashes
def source_hash(*modules: Any) -> str:
    """SHA-256 of the source files of Python modules (what produced an output).

    Parameters
    ----------
    *modules : str or module
        Module names (``"bmstudy.preprocessing.cohort"``) or module objects; a package stands for
        its ``__init__.py`` only. Order does not matter.

    Returns
    -------
    str
        64 hex digits over ``(module name, sha256 of its source file)`` in name order.

    Raises
    ------
    ValueError
        When a module has no source file.
    """
    import importlib

    entries = []
    for m in modules:
        mod = importlib.import_module(m) if isinstance(m, str) else m
        src = getattr(mod, "__file__", None)
        if not src or not Path(src).is_file():
            raise ValueError(f"module {mod.__name__} has no source file")
        entries.append((mod.__name__, _cached_file_sha256(str(src))))
    h = hashlib.sha256()
    for name, digest in sorted(set(entries)):
        h.update(f"{name}\0{digest}\n".encode())
    return h.hexdigest()


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def _cached_file_sha256(path: str) -> str:
    """:func:`file_sha256` remembered per process by ``(path, size, mtime_ns)``."""
    st = os.stat(path)
    key = (path, st.st_size, st.st_mtime_ns)
    return _SHA_CACHE[key] if key in _SHA_CACHE else _SHA_CACHE.setdefault(key, file_sha256(path))


# ----------------------------------------------------------------------------- processes
def process_start_tick(pid: int) -> str | None:
    """The kernel's start tick of a process (``/proc/<pid>/stat`` field 22): tells a reused PID apart.

    Parameters
    ----------
    pid : int
        The process id.

    Returns
    -------
    str or None
        The start tick, or None where ``/proc`` does not have it (not Linux, or no such process).
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def pid_alive(pid: int, proc_start: str | None = None) -> bool:
    """Whether process ``pid`` runs (and, when ``proc_start`` is given, is the same process, not a reused PID).

    Parameters
    ----------
    pid : int
        The process id.
    proc_start : str or None, default=None
        The start tick recorded with the PID (Linux); ignored where unknown.

    Returns
    -------
    bool
    """
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except (OverflowError, ValueError):
        return False
    now = process_start_tick(int(pid))
    if now is None:
        return True
    return (proc_start is None or now == proc_start) and not _is_zombie(int(pid))


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return False


def _json_default(obj: Any) -> Any:
    """JSON conversion of numpy scalars and arrays and of paths (``json.dumps(default=...)``)."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
