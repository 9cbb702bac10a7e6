"""Stage fingerprints: the hash of everything a stage's outputs depend on.

A stage's inputs (:func:`stage_inputs`) are its notebook source (cell types, sources and tags; outputs
ignored), its non-layout notebook parameters, the plan settings and sections it reads
(:attr:`Stage.plan_sections`), the data manifest's content hash (stages that take ``manifest``) and the
fingerprints of its upstream stages. :func:`fingerprint` hashes them; :func:`changed_inputs` says which
of them differ from the last execution (the reason a stage re-runs). New kinds of input (library code,
input files) are new keys of :func:`stage_inputs`.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

from ..plan import StudyPlan
from ..utils import PathLike
from .stages import PLAN_SECTIONS, Stage

__all__ = ["stable_hash", "notebook_source_hash", "plan_inputs", "stage_inputs", "fingerprint", "input_digest",
           "changed_inputs"]


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
                 manifest_hash: str | None, upstream: Mapping[str, str]) -> dict[str, Any]:
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
        ``{"notebook": h, "params": h, "plan": {section: h}, "manifest": h, "upstream": {stage: h}}``.
    """
    return {
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
        Empty when ``before`` is unknown or equal.
    """
    if not before:
        return []
    out = [k for k in ("notebook", "params", "manifest") if before.get(k) != now.get(k)]
    for group, label in (("plan", "plan.{}"), ("upstream", "upstream {}")):
        old, new = before.get(group) or {}, now.get(group) or {}
        out += [label.format(k) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return out
