"""Failure accounting of a run: each stage's per-case status table summarised (ok / excluded / failed).

Stages with per-case work write a status table (:attr:`~bmstudy.study.stages.Stage.status_table`):
``01_cohort/synthetic/synth_status.csv`` (when the cohort is synthesised), ``02_preprocessing/
preprocess_report.csv``, ``04_inference/timings.csv`` and ``05_metrics/metrics.csv``, each with a
``status`` column and a ``reason`` (or ``error``) column. :func:`run_summary` counts them per stage,
with the first reasons; the runner prints it (:func:`format_summary`), stores it in
``provenance.json`` (``case_summary``) and the book's results page shows it. A run whose summary has
excluded or failed cases exits 3.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..utils import PathLike, get_logger

log = get_logger("bmstudy.study.accounting")

__all__ = ["BAD_STATUSES", "N_REASONS", "table_summary", "run_summary", "has_problems", "format_summary"]

#: Statuses that count as a case not completed.
BAD_STATUSES: tuple[str, ...] = ("excluded", "failed")
#: How many reasons of not-completed cases each stage's summary keeps.
N_REASONS = 3


def table_summary(path: PathLike) -> dict[str, Any]:
    """Counts per status and the first reasons of one status table.

    Parameters
    ----------
    path : path-like
        A CSV with ``status`` and optionally ``patient_id`` and ``reason`` / ``error`` columns.

    Returns
    -------
    dict
        ``{"table": file name, "n": rows, "counts": {status: n}, "reasons": ["ID: reason", ...]}``; a
        table without a ``status`` column counts every row as ``ok``.
    """
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    counts: dict[str, int] = {}
    reasons: list[str] = []
    for row in rows:
        status = (row.get("status") or "ok").strip() or "ok"
        counts[status] = counts.get(status, 0) + 1
        if status in BAD_STATUSES and len(reasons) < N_REASONS:
            why = (row.get("reason") or row.get("error") or "").strip() or "(no reason recorded)"
            pid = (row.get("patient_id") or "").strip()
            reasons.append(why if not pid or pid in why else f"{pid}: {why}")
    return {"table": path.name, "n": len(rows), "counts": counts, "reasons": reasons}


def run_summary(run_dir: PathLike, stages: Sequence[Any]) -> dict[str, dict[str, Any]]:
    """:func:`table_summary` of every stage of ``run_dir`` that has a status table.

    Parameters
    ----------
    run_dir : path-like
        The run folder.
    stages : sequence of Stage
        The stage list (their ``status_table``).

    Returns
    -------
    dict
        ``{stage name: summary}`` in stage order; stages without a (readable) table are left out.
    """
    out: dict[str, dict[str, Any]] = {}
    for s in stages:
        rel = getattr(s, "status_table", "")
        path = Path(run_dir) / s.name / rel if rel else None
        if path is None or not path.is_file():
            continue
        try:
            out[s.name] = {**table_summary(path), "table": f"{s.name}/{rel}"}
        except (OSError, ValueError, csv.Error) as exc:
            log.warning("stage %s: unreadable status table %s (%s)", s.name, path, exc)
    return out


def has_problems(summary: Mapping[str, Mapping[str, Any]]) -> bool:
    """Whether any stage of a :func:`run_summary` has excluded or failed cases.

    Parameters
    ----------
    summary : mapping
        From :func:`run_summary`.

    Returns
    -------
    bool
    """
    return any(s.get("counts", {}).get(b, 0) for s in summary.values() for b in BAD_STATUSES)


def format_summary(summary: Mapping[str, Mapping[str, Any]]) -> str:
    """The summary as text, one line per stage plus indented reasons.

    Parameters
    ----------
    summary : mapping
        From :func:`run_summary`.

    Returns
    -------
    str
        E.g. ``02_preprocessing: 23 ok, 2 excluded (02_preprocessing/preprocess_report.csv)``.
    """
    if not summary:
        return "cases: no stage wrote a status table"
    lines = ["cases per stage:"]
    for name, s in summary.items():
        counts = ", ".join(f"{n} {k}" for k, n in s.get("counts", {}).items()) or "no cases"
        lines.append(f"  {name}: {counts} ({s.get('table')})")
        lines += [f"      {r}" for r in s.get("reasons", [])]
    return "\n".join(lines)
