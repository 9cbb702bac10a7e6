"""What produced an evaluation: the code hash, the inputs' content hashes (cached by size and mtime).

``evaluate_cohort`` records, per case, the SHA-256 of its reference, prediction and brain-mask files
(``inputs_sha256`` in ``metrics.csv``), the hash of the evaluation code (``eval_code_hash``:
:func:`bmstudy.utils.source_hash` of :data:`CODE_MODULES`) and of the parameters
(``eval_params_hash``). ``evaluate_params.json`` keeps every input's digest with its size and
``mtime_ns`` (:class:`bmstudy.io.hashing.HashCache`), so a re-run hashes only files whose size or mtime changed and
recomputes exactly when a prediction, a reference, the parameters or the code changed (a file that
is only touched keeps its digest and does not trigger a recomputation).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable

from ..io.hashing import HashCache
from ..utils import PathLike, source_hash

__all__ = ["CODE_MODULES", "code_hash", "input_sha256", "digest_of"]

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


def input_sha256(cache: HashCache, path: PathLike) -> str:
    """Content digest of an evaluation input through ``cache`` (:class:`bmstudy.io.hashing.HashCache`),
    or ``'missing'`` when the file does not exist (a missing prediction is a failed case, still recorded)."""
    p = Path(path)
    return cache.sha256(p) if p.exists() else "missing"
