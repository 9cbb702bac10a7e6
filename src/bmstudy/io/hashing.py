"""Content hashes of input files, remembered by path + size + mtime so re-runs do not re-read gigabytes.

:class:`HashCache` hashes files (and DICOM folders) once and keeps ``(size, mtime_ns, sha256)`` per
resolved path, in memory or in a JSON file; :func:`content_sha256` is the process-wide in-memory one.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

from ..utils import PathLike, atomic_write_json, file_sha256

__all__ = ["HashCache", "content_sha256", "tree_sha256"]


class HashCache:
    """SHA-256 of files, remembered by ``(resolved path, size, mtime_ns)`` (optionally in a JSON file).

    A re-run over hundreds of cases re-reads only the files whose size or modification time changed;
    replacing a file's content changes its ``mtime_ns`` (even at the same size), so the hash is
    recomputed. A directory (a DICOM series) hashes its files' names and contents in name order.

    Parameters
    ----------
    path : str, PathLike or None, default=None
        JSON file the cache is loaded from and :meth:`save`\\ d to (None: in memory only).
    entries : mapping, optional
        Entries of an earlier :meth:`to_dict` kept elsewhere (e.g. inside another JSON record).
    """

    def __init__(self, path: PathLike | None = None, *, entries: Mapping[str, Any] | None = None) -> None:
        self.path = None if path is None else Path(path)
        stored: Mapping[str, Any] = entries or {}
        if self.path is not None and self.path.is_file():
            try:
                stored = dict(json.loads(self.path.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                stored = {}
        self._entries: dict[str, dict[str, Any]] = {str(k): dict(v) for k, v in stored.items() if isinstance(v, dict)}
        self._dirty = False

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """The entries ``{resolved path: {size, mtime_ns, sha256}}`` (JSON-ready; ``entries=`` reads them back)."""
        return {k: dict(v) for k, v in sorted(self._entries.items())}

    def sha256(self, file: PathLike) -> str:
        """The content hash of ``file`` (a file or a folder), from the cache when size and mtime match.

        Parameters
        ----------
        file : str or PathLike
            The file or folder.

        Returns
        -------
        str
            64 hex digits.
        """
        p = Path(file).resolve()
        size, mtime = _size_mtime(p)
        key = str(p)
        hit = self._entries.get(key)
        if hit and hit.get("size") == size and hit.get("mtime_ns") == mtime:
            return str(hit["sha256"])
        digest = tree_sha256(p) if p.is_dir() else file_sha256(p)
        self._entries[key] = {"size": size, "mtime_ns": mtime, "sha256": digest}
        self._dirty = True
        return digest

    def save(self) -> None:
        """Write the cache file (atomically) when it has one and something changed."""
        if self.path is not None and self._dirty:
            atomic_write_json(self.path, self._entries)
            self._dirty = False


def _size_mtime(p: Path) -> tuple[int, int]:
    if p.is_dir():
        stats = [f.stat() for f in p.rglob("*") if f.is_file()]
        return int(sum(s.st_size for s in stats)), int(max((s.st_mtime_ns for s in stats), default=0))
    st = p.stat()
    return int(st.st_size), int(st.st_mtime_ns)


def tree_sha256(folder: PathLike) -> str:
    """SHA-256 over a folder's files (relative names and contents, in name order).

    Parameters
    ----------
    folder : str or PathLike
        The folder (e.g. a DICOM series).

    Returns
    -------
    str
        64 hex digits.
    """
    folder = Path(folder)
    h = hashlib.sha256()
    for f in sorted(f for f in folder.rglob("*") if f.is_file()):
        h.update(f.relative_to(folder).as_posix().encode())
        h.update(file_sha256(f).encode())
    return h.hexdigest()


_PROCESS_CACHE = HashCache()


def content_sha256(path: PathLike) -> str:
    """SHA-256 of a file's (or folder's) content, remembered in this process by path + size + mtime.

    Parameters
    ----------
    path : str or PathLike
        The file or folder.

    Returns
    -------
    str
        64 hex digits.
    """
    return _PROCESS_CACHE.sha256(path)

