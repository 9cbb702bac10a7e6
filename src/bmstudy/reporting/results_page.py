"""The book's results summary page: the tables and figures the stage notebooks published.

Stage notebooks publish items under ``<stage>/summary/`` (:mod:`.publish`); :func:`results_page` lists
them, :data:`RESULTS_FIRST` stages first (Table 2 leads), each with a source line naming its file, the
stage execution and the commit. A run without a Table 2 comparison shows the paper's Table 2.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any, Mapping

from ..utils import PathLike, get_logger
from .provenance_page import PathDisplay, dirty_suffix
from .publish import SUMMARY_DIR

log = get_logger("bmstudy.reporting.results_page")

__all__ = ["RESULTS_FIRST", "summary_items", "source_line", "case_summary_section", "results_page"]

#: Stage keys whose published items lead the results page (Table 2 first); the others follow in stage order.
RESULTS_FIRST: tuple[str, ...] = ("metrics", "subgroups", "timing")


def _notebook_title(path: Path) -> str:
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return path.stem


def _paper_table2_html() -> str:
    """The paper's Table 2 as HTML (median (Q1, Q3)), for runs that published no comparison table."""
    import pandas as pd

    from .tables import METRIC_LABELS, paper_table2

    t = paper_table2()
    t["value"] = [f"{m:.3f} ({a:.3f}, {b:.3f})" for m, a, b in t[["median", "q1", "q3"]].to_numpy()]
    wide = t.pivot(index="metric", columns="split", values="value").reindex(t["metric"].unique())
    wide.index = [METRIC_LABELS.get(m, m) for m in wide.index]
    wide = wide.rename(columns={"test": "Testing set, paper (N = 91)", "external": "Validation set, paper (N = 172)"})
    return pd.DataFrame(wide).to_html()


def summary_items(run_dir: PathLike) -> list[dict[str, Any]]:
    """Tables and figures published under ``<stage>/summary/``.

    Parameters
    ----------
    run_dir : path-like
        The run folder.

    Returns
    -------
    list of dict
        ``{"stage", "name", "kind", "order", "caption", "path"}``: :data:`RESULTS_FIRST` stages first, then
        the others in stage order; within a stage in publication order.
    """
    run = Path(run_dir)
    items: list[dict[str, Any]] = []
    for stage_dir in sorted(p for p in run.iterdir() if p.is_dir() and re.match(r"^\d\d_", p.name)):
        folder = stage_dir / SUMMARY_DIR
        if not folder.is_dir():
            continue
        for meta_path in sorted(folder.glob("*.json")):
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            stem = meta_path.stem
            kind = meta.get("kind")
            path = folder / (f"{stem}.png" if kind == "figure" else f"{stem}.html")
            if kind not in ("table", "figure") or not path.is_file():
                log.warning("summary item %s: missing %s; skipped", meta_path, path.name)
                continue
            items.append({"stage": stage_dir.name, "name": stem, "kind": kind, "order": float(meta.get("order", 0)),
                          "caption": str(meta.get("caption", stem)), "path": path})
    def rank(stage: str) -> tuple[int, str]:
        key = stage.partition("_")[2]
        return (RESULTS_FIRST.index(key), stage) if key in RESULTS_FIRST else (len(RESULTS_FIRST), stage)

    return sorted(items, key=lambda it: (rank(it["stage"]), it["order"], it["name"]))


def source_line(item: Mapping[str, Any], provenance: Mapping[str, Any]) -> str:
    """Provenance of one published table/figure: its file, stage execution and code version.

    Parameters
    ----------
    item : mapping
        One of :func:`summary_items`.
    provenance : mapping
        The run's ``provenance.json``.

    Returns
    -------
    str
        An HTML paragraph (paths relative to the run folder).
    """
    from html import escape

    def code(text: Any) -> str:
        return f"<code>{escape(str(text))}</code>"

    stage = item["stage"]
    entry = (provenance.get("stages") or {}).get(stage, {})
    git = entry.get("git") or provenance.get("git") or {}  # the commit the stage executed with
    data = f"{stage}/{SUMMARY_DIR}/{item['path'].stem}{'.csv' if item['kind'] == 'table' else '.png'}"
    parts = [f"file {code(data)}", f"notebook {code(stage + '.ipynb')}"]
    if entry.get("finished"):
        parts.append(f"executed {escape(str(entry['finished']))}")
    if entry.get("fingerprint"):
        parts.append(f"inputs fingerprint {code(str(entry['fingerprint'])[:12])}")
    if git.get("commit"):
        parts.append(f"commit {code(str(git['commit'])[:10])}" + dirty_suffix(git))
    return "<p class=\"bm-source\"><small>Source: " + ", ".join(parts) + ".</small></p>"


def case_summary_section(provenance: Mapping[str, Any]) -> list[str]:
    """Markdown lines of the "Cases per stage" section: ok / excluded / failed per stage with the first reasons.

    Parameters
    ----------
    provenance : mapping
        The run's ``provenance.json`` (its ``case_summary``, :func:`bmstudy.study.accounting.run_summary`).

    Returns
    -------
    list of str
        Empty when the run recorded no summary.
    """
    from html import escape

    summary = provenance.get("case_summary") or {}
    if not summary:
        return []
    rows = []
    for stage, s in summary.items():
        counts = s.get("counts") or {}
        other = {k: v for k, v in counts.items() if k not in ("ok", "excluded", "failed")}
        reasons = "<br>".join(escape(str(r)) for r in s.get("reasons") or []) or "&ndash;"
        extra = ", ".join(f"{v} {escape(k)}" for k, v in other.items())
        rows.append(f"<tr><td><code>{escape(stage)}</code></td><td>{s.get('n', 0)}</td><td>{counts.get('ok', 0)}</td>"
                    f"<td>{counts.get('excluded', 0)}</td><td>{counts.get('failed', 0)}</td>"
                    f"<td>{extra or '&ndash;'}</td><td>{reasons}</td></tr>")
    bad = sum((s.get("counts") or {}).get(k, 0) for s in summary.values() for k in ("excluded", "failed"))
    note = (f"**{bad} case(s) were excluded or failed** in some stage; the tables below count only the cases "
            "that completed." if bad else "Every case completed in every stage.")
    head = ("<tr><th>stage</th><th>cases</th><th>ok</th><th>excluded</th><th>failed</th><th>other</th>"
            "<th>first reasons</th></tr>")
    return ["## Cases per stage", "", note + " From each stage's status table (`provenance.json`, "
            "`case_summary`).", "", "<div class=\"bm-table\">", "",
            f"<table class=\"dataframe\"><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>", "", "</div>",
            ""]


def results_page(run_dir: PathLike, src_dir: PathLike) -> str:
    """Markdown of the results summary page; copies the published figures under ``src_dir/summary``.

    Parameters
    ----------
    run_dir : path-like
        The run folder.
    src_dir : path-like
        The staged book source.

    Returns
    -------
    str
        The page; the run's and the repository's absolute paths are shown relative to them.
    """
    run, src = Path(run_dir), Path(src_dir)
    lines = ["# Results summary", "",
             f"Run `{run.name}`. Each table and figure below comes from the chapter named in its caption; "
             "the paper's published numbers are shown beside ours where the paper reports them.", ""]
    items = summary_items(run)
    prov: dict[str, Any] = {}
    if (run / "provenance.json").is_file():
        try:
            prov = json.loads((run / "provenance.json").read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            log.warning("unreadable %s: results page without provenance lines", run / "provenance.json")
    lines += case_summary_section(prov)
    if not any(it["stage"].endswith("metrics") and "table2" in it["name"] for it in items):
        lines += ["## The paper's Table 2", "",
                  "This run published no Table 2 comparison (the metrics stage did not run or failed); "
                  "the paper's numbers, median (Q1, Q3):", "", "<div class=\"bm-table\">",
                  _paper_table2_html(), "</div>", ""]
    current = None
    for it in items:
        if it["stage"] != current:
            current = it["stage"]
            chapter = run / f"{current}.ipynb"
            title = _notebook_title(chapter) if chapter.is_file() else current
            ref = (f"{{doc}}`chapters/{current}`" if chapter.is_file() else f"`{current}` (no executed notebook)")
            lines += [f"## {title}", "", f"From chapter {ref}.", ""]
        if it["kind"] == "table":
            body = it["path"].read_text(encoding="utf-8").strip()
            if "<caption" not in body:  # the rendered table carries no caption of its own
                lines += [f"**{it['caption']}**", ""]
            lines += ["<div class=\"bm-table\">", "", body, "", "</div>", ""]
        else:
            rel = Path(SUMMARY_DIR) / it["stage"] / it["path"].name
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(it["path"], src / rel)
            lines += ["```{figure} " + rel.as_posix(), f":alt: {it['caption']}", ":width: 720px", "",
                      it["caption"], "```", ""]
        lines += [source_line(it, prov), ""]
    if not items:
        lines += ["*No stage of this run published summary tables or figures.*", ""]
    return PathDisplay.for_run(run, prov).text("\n".join(lines))
