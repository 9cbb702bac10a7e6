"""Stage fingerprints: the hash of everything a stage's outputs depend on.

A stage's inputs (:func:`stage_inputs`) are its notebook source (cell types, sources and tags; outputs
ignored), its non-layout notebook parameters, the plan settings and sections it reads
(:attr:`Stage.plan_sections`), the data manifest's content hash and the content hash of every file the
manifest names (stages that take ``manifest``), the versions of the pinned packages, the source of the
``bmstudy`` modules its kernel loaded at its last execution and the fingerprints of its upstream stages.
:func:`fingerprint` hashes them; :func:`changed_inputs` says which of them differ from the last
execution (the reason a stage re-runs).

Library code: the runner appends one hidden cell (:func:`module_record_cell`) to every stage notebook
that writes ``{module: {"file", "sha256"}}`` of every ``bmstudy.*`` module in the kernel's
``sys.modules`` to ``<stage>/`` :data:`MODULE_RECORD`; the next invocation re-hashes those files
(:func:`source_hashes`), so a changed line in a module a stage loaded re-runs that stage and its
dependents, and a module it never loaded does not. Input files are hashed through
:class:`bmstudy.io.hashing.HashCache` (by path + size + mtime_ns), so a re-run does not re-read them.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

from ..plan import StudyPlan
from ..utils import PathLike, get_logger
from .stages import PLAN_SECTIONS, Stage

__all__ = ["MODULE_RECORD", "MODULE_RECORD_TAG", "stable_hash", "notebook_source_hash", "plan_inputs", "stage_inputs",
           "fingerprint", "input_digest", "changed_inputs", "module_record_cell", "read_module_record",
           "source_hashes", "manifest_files", "input_file_hashes"]

log = get_logger("bmstudy.study.fingerprint")

#: File (in the stage folder) where the hidden last cell records the ``bmstudy`` modules the kernel loaded.
MODULE_RECORD = ".bmstudy_modules.json"
#: Tags of that cell: hidden in the book, recognisable in the executed notebook.
MODULE_RECORD_TAG = "bmstudy-module-record"

#: Code of the hidden last cell; ``{path!r}`` is the record file. It imports nothing from bmstudy
#: (the record must list what the notebook loaded, not what recording needs).
_RECORD_CODE = """\
def _bmstudy_record_modules(path={path!r}):
    import hashlib, json, os, sys
    out = {{}}
    for name, mod in sorted(sys.modules.items()):
        if name != "bmstudy" and not name.startswith("bmstudy."):
            continue
        file = getattr(mod, "__file__", None)
        if not file or not os.path.isfile(file):
            continue
        with open(file, "rb") as fh:
            out[name] = {{"file": os.path.abspath(file), "sha256": hashlib.sha256(fh.read()).hexdigest()}}
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(out, fh, indent=1, sort_keys=True)
    os.replace(tmp, path)
_bmstudy_record_modules()
del _bmstudy_record_modules"""


def stable_hash(obj: Any) -> str:
    """SHA-256 of ``obj`` as sorted-key JSON (non-JSON values through ``str``).

    Parameters
    ----------
    obj : object
        JSON-like data.

    Returns
    -------
    str
        64 hex digits.
    """
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def notebook_source_hash(path: PathLike) -> str:
    """Hash of a notebook's cell types, sources and tags (outputs and execution counts ignored).

    Parameters
    ----------
    path : path-like
        The notebook.

    Returns
    -------
    str
        64 hex digits.
    """
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    cells = [
        [c.cell_type, c.source, sorted(c.get("metadata", {}).get("tags", []))] for c in nb.cells
    ]
    return hashlib.sha256(json.dumps(cells, sort_keys=True).encode()).hexdigest()


def plan_inputs(plan: StudyPlan, stage: Stage) -> dict[str, Any]:
    """The parts of the plan a stage reads, JSON-ready.

    Parameters
    ----------
    plan : StudyPlan
        The run's plan.
    stage : Stage
        The stage (its :attr:`~Stage.plan_sections`).

    Returns
    -------
    dict
        ``{name: value}`` for settings, ``{name: section dict}`` for sections.
    """
    return {name: plan.section(name) if name in PLAN_SECTIONS else getattr(plan, name)
            for name in stage.plan_sections}


def stage_inputs(stage: Stage, *, notebook_hash: str, parameters: Mapping[str, Any], plan: StudyPlan,
                 manifest_hash: str | None, upstream: Mapping[str, str], src: Mapping[str, str] | None = None,
                 packages: Mapping[str, Any] | None = None, files: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Everything a stage's outputs depend on.

    Parameters
    ----------
    stage : Stage
        The stage.
    notebook_hash : str
        :func:`notebook_source_hash` of its notebook.
    parameters : mapping
        Its non-layout notebook parameters.
    plan : StudyPlan
        The run's plan (only the stage's plan sections count).
    manifest_hash : str or None
        The data manifest's SHA-256 when the stage takes ``manifest``, else ``None``.
    upstream : mapping
        ``{stage name: fingerprint}`` of the stages it depends on.
    src : mapping, optional
        ``{"bmstudy/x/y.py": sha256}`` of the modules the stage loaded (:func:`source_hashes`).
    packages : mapping, optional
        ``{distribution: version}`` of the pinned packages.
    files : mapping, optional
        ``{path: sha256}`` of the input files the manifest names (:func:`input_file_hashes`).

    Returns
    -------
    dict
        JSON-ready; :func:`fingerprint` hashes it.
    """
    return {
        "notebook": notebook_hash,
        "params": dict(parameters),
        "plan": plan_inputs(plan, stage),
        "manifest": manifest_hash,
        "upstream": dict(upstream),
        "src": dict(src or {}),
        "packages": dict(packages or {}),
        "files": dict(files or {}),
    }


def fingerprint(inputs: Mapping[str, Any]) -> str:
    """The fingerprint of a stage: :func:`stable_hash` of its :func:`stage_inputs`.

    Parameters
    ----------
    inputs : mapping
        From :func:`stage_inputs`.

    Returns
    -------
    str
        64 hex digits.
    """
    return stable_hash(dict(inputs))


def input_digest(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """Short per-input hashes (recorded in ``provenance.json`` to explain a later re-run).

    Parameters
    ----------
    inputs : mapping
        From :func:`stage_inputs`.

    Returns
    -------
    dict
        ``{"notebook": h, "params": h, "plan": {section: h}, "manifest": h, "upstream": {stage: h},
        "src": {module file: h}, "packages": {name: version}, "files": {path: h}}``.
    """
    return {
        "src": {k: str(v)[:16] for k, v in (inputs.get("src") or {}).items()},
        "packages": dict(inputs.get("packages") or {}),
        "files": {k: str(v)[:16] for k, v in (inputs.get("files") or {}).items()},
        "notebook": str(inputs.get("notebook"))[:16],
        "params": stable_hash(inputs.get("params"))[:16],
        "plan": {k: stable_hash(v)[:16] for k, v in (inputs.get("plan") or {}).items()},
        "manifest": (inputs.get("manifest") or None) and str(inputs["manifest"])[:16],
        "upstream": {k: str(v)[:16] for k, v in (inputs.get("upstream") or {}).items()},
    }


def changed_inputs(before: Mapping[str, Any] | None, now: Mapping[str, Any]) -> list[str]:
    """What differs between two :func:`input_digest` records, e.g. ``["plan.train", "upstream 02_b"]``.

    Parameters
    ----------
    before : mapping or None
        The digest recorded at the last execution (``None``: unknown).
    now : mapping
        The current digest.

    Returns
    -------
    list of str
        Empty when ``before`` is unknown or equal. Library code, packages and input files are
        self-describing entries: ``"src changed: bmstudy/evaluation/lesions.py"``,
        ``"packages changed: numpy 1.26.4 -> 2.0.0"``, ``"3 input files changed"``.
    """
    if not before:
        return []
    out = [k for k in ("notebook", "params", "manifest") if before.get(k) != now.get(k)]
    for group, label in (("plan", "plan.{}"), ("upstream", "upstream {}")):
        old, new = before.get(group) or {}, now.get(group) or {}
        out += [label.format(k) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return out + _changed_groups(before, now)


def _changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    return [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def _changed_groups(before: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """The library-code, package and input-file entries of :func:`changed_inputs`."""
    out = []
    src = [k for k in _changed(before.get("src") or {}, now.get("src") or {}) if k in (before.get("src") or {})]
    if src:
        more = f" (+{len(src) - 5} more)" if len(src) > 5 else ""
        out.append("src changed: " + ", ".join(src[:5]) + more)
    old_p, new_p = before.get("packages") or {}, now.get("packages") or {}
    pk = _changed(old_p, new_p) if old_p else []
    if pk:
        out.append("packages changed: " + ", ".join(f"{k} {old_p.get(k)} -> {new_p.get(k)}" for k in pk))
    old_f, new_f = before.get("files") or {}, now.get("files") or {}
    nf = len(_changed(old_f, new_f))
    if nf:
        out.append(f"{nf} input file{'s' if nf != 1 else ''} changed")
    return out


# ----------------------------------------------------------------------------- library code
def module_record_cell(out_dir: PathLike) -> Any:
    """The hidden last cell the runner appends: records the kernel's ``bmstudy`` modules in ``out_dir``.

    Parameters
    ----------
    out_dir : path-like
        The stage's output folder (the record is ``out_dir/`` :data:`MODULE_RECORD`).

    Returns
    -------
    nbformat.NotebookNode
        A code cell tagged ``remove-cell`` and :data:`MODULE_RECORD_TAG`.
    """
    import nbformat

    code = _RECORD_CODE.format(path=str(Path(out_dir) / MODULE_RECORD))
    return nbformat.v4.new_code_cell(code, metadata={"tags": ["remove-cell", MODULE_RECORD_TAG]})


def _display_name(module: str, file: str) -> str:
    """``bmstudy.evaluation.lesions`` -> ``bmstudy/evaluation/lesions.py`` (``/__init__.py`` for packages)."""
    tail = "/__init__.py" if Path(file).name == "__init__.py" else ".py"
    return module.replace(".", "/") + tail


def read_module_record(out_dir: PathLike) -> dict[str, str]:
    """The modules a stage's kernel loaded: ``{"bmstudy/x/y.py": absolute file}`` (empty when unrecorded).

    Parameters
    ----------
    out_dir : path-like
        The stage's output folder.

    Returns
    -------
    dict
    """
    path = Path(out_dir) / MODULE_RECORD
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {_display_name(m, v["file"]): str(v["file"]) for m, v in sorted(rec.items())
            if isinstance(v, dict) and v.get("file")}


def source_hashes(files: Mapping[str, str], cache: Any = None) -> dict[str, str]:
    """Current SHA-256 of recorded module files (``"missing"`` for a deleted one).

    Parameters
    ----------
    files : mapping
        ``{display name: absolute file}`` from :func:`read_module_record`.
    cache : bmstudy.io.hashing.HashCache, optional
        Hash cache (default: the process-wide one).

    Returns
    -------
    dict
        ``{display name: sha256}``.
    """
    from ..io.hashing import content_sha256

    sha = cache.sha256 if cache is not None else content_sha256
    out = {}
    for name, file in files.items():
        try:
            out[name] = sha(file)
        except OSError:
            out[name] = "missing"
    return out


# ----------------------------------------------------------------------------- input files
def manifest_files(manifest: PathLike) -> list[Path]:
    """The files a data manifest names (``image``, ``mask``, ``brain_mask``), relative paths against its folder.

    Parameters
    ----------
    manifest : path-like
        The manifest CSV (read as plain CSV: validation is the cohort stage's job).

    Returns
    -------
    list of Path
        Resolved paths, sorted, duplicates removed; empty when the file does not parse.
    """
    import pandas as pd

    from ..io.manifest import PATH_COLUMNS

    manifest = Path(manifest)
    try:
        df = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as exc:
        log.warning("cannot read %s for input hashes (%s)", manifest, exc)
        return []
    base = manifest.parent.resolve()
    found: set[Path] = set()
    for col in PATH_COLUMNS:
        for value in df.get(col, []):
            if str(value).strip():
                p = Path(str(value).strip()).expanduser()
                found.add(p if p.is_absolute() else (base / p))
    return sorted(found)


def input_file_hashes(manifest: PathLike | None, cache_file: PathLike | None = None,
                      save: bool = True) -> dict[str, str]:
    """``{path: sha256}`` of every file the manifest names (``"missing"`` when absent).

    Parameters
    ----------
    manifest : path-like or None
        The data manifest (None: no input files).
    cache_file : path-like, optional
        JSON hash cache keyed by path + size + mtime_ns (:class:`bmstudy.io.hashing.HashCache`), so
        unchanged files are not re-read.
    save : bool
        Update ``cache_file`` (``False`` for a dry run, which writes nothing).

    Returns
    -------
    dict
    """
    if manifest is None:
        return {}
    from ..io.hashing import HashCache

    cache = HashCache(cache_file)
    out = {}
    for f in manifest_files(manifest):
        try:
            out[str(f)] = cache.sha256(f)
        except OSError:
            out[str(f)] = "missing"
    try:
        if save:
            cache.save()
    except OSError as exc:
        log.warning("cannot save the input hash cache %s (%s)", cache_file, exc)
    return out
