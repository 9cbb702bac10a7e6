"""Small shared helpers of every stage: the package logger, atomic file writes and hashing.

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
import tempfile
from pathlib import Path
from typing import Any, Iterator

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

    A crash or exception leaves ``path`` untouched (old content or absent) and removes the temp file.
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
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name.split('.')[0]}.", suffix=f".tmp{suffix}", dir=path.parent)
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
        if tmp_path.exists():
            tmp_path.unlink()


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


def _json_default(obj: Any) -> Any:
    """JSON conversion of numpy scalars and arrays and of paths (``json.dumps(default=...)``)."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
