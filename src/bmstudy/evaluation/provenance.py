"""What produced an evaluation: the code hash, the inputs' content hashes (cached by size and mtime).

``evaluate_cohort`` records, per case, the SHA-256 of its reference, prediction and brain-mask files
(``inputs_sha256`` in ``metrics.csv``), the hash of the evaluation code (``eval_code_hash``:
:func:`bmstudy.utils.source_hash` of :data:`CODE_MODULES`) and of the parameters
(``eval_params_hash``). ``evaluate_params.json`` keeps every input's digest with its size and
``mtime_ns`` (:class:`HashCache`), so a re-run hashes only files whose size or mtime changed and
recomputes exactly when a prediction, a reference, the parameters or the code changed (a file that
is only touched keeps its digest and does not trigger a recomputation).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..utils import PathLike, file_sha256, source_hash

__all__ = ["CODE_MODULES", "code_hash", "HashCache", "digest_of"]

#: The modules whose source decides the metrics (a change in any of them recomputes).
CODE_MODULES: tuple[str, ...] = (
    "bmstudy.evaluation.voxel", "bmstudy.evaluation.lesions", "bmstudy.evaluation.diameters",
    "bmstudy.evaluation.brats", "bmstudy.evaluation.surface", "bmstudy.evaluation.froc",
    "bmstudy.evaluation.histograms", "bmstudy.evaluation.case", "bmstudy.evaluation.evaluate",
    "bmstudy.io.volumes", "bmstudy.io.binary",
)


def code_hash() -> str:
    """:func:`bmstudy.utils.source_hash` of :data:`CODE_MODULES` (64 hex digits)."""
    return source_hash(*CODE_MODULES)


def digest_of(parts: Iterable[str]) -> str:
    """SHA-256 over a sequence of strings (order kept)."""
    h = hashlib.sha256()
    for p in parts:
        h.update(str(p).encode())
        h.update(b"\n")
    return h.hexdigest()


class HashCache:
    """Content hashes of files and folders, reused while a file's size and ``mtime_ns`` are unchanged.

    Parameters
    ----------
    stored : mapping, optional
        ``{path: [size, mtime_ns, sha256]}`` from a previous :meth:`to_dict`.
    """

    def __init__(self, stored: Mapping[str, Any] | None = None) -> None:
        self._entries: dict[str, tuple[int, int, str]] = {}
        for k, v in (stored or {}).items():
            try:
                self._entries[str(k)] = (int(v[0]), int(v[1]), str(v[2]))
            except (TypeError, ValueError, IndexError):
                continue

    def _file(self, path: Path) -> str:
        st = os.stat(path)
        key = str(path)
        hit = self._entries.get(key)
        if hit is not None and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            return hit[2]
        sha = file_sha256(path)
        self._entries[key] = (int(st.st_size), int(st.st_mtime_ns), sha)
        return sha

    def sha256(self, path: PathLike) -> str:
        """Digest of a file, of a folder (its files' names and digests, e.g. a DICOM series) or ``'missing'``."""
        p = Path(path)
        if p.is_file():
            return self._file(p)
        if p.is_dir():
            files = sorted(q for q in p.rglob("*") if q.is_file())
            return digest_of(f"{q.relative_to(p)}\0{self._file(q)}" for q in files)
        return "missing"

    def to_dict(self) -> dict[str, list[Any]]:
        """``{path: [size, mtime_ns, sha256]}`` (JSON-ready)."""
        return {k: [v[0], v[1], v[2]] for k, v in sorted(self._entries.items())}
