"""Build the study report (Jupyter Book 1.x, fully offline) from the executed notebooks of a run.

``build_book(run_dir)`` stages a book source under ``book/_build/src``: the static pages of ``book/``
(``_config.yml``, ``intro.md``, ``deviations.md``, the ``_toc.yml`` template), the run's executed
notebooks as chapters (parameter cells tagged ``remove-cell``, widget outputs dropped), a generated
pipeline diagram, a results summary page and the rendered ``provenance.json``; then it runs
``jupyter-book build`` with ``execute_notebooks: off``. The HTML lands in ``book/_build/html`` and is
checked for remote (CDN) scripts and stylesheets so that it opens from ``file://`` without a network.

Notebooks put what belongs on the results page into ``<stage>/summary/`` with :func:`publish_table`
and :func:`publish_figure`; the summary page shows those items in stage order.
"""
from __future__ import annotations

import argparse
import html
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..utils import PathLike, atomic_write_json, atomic_write_text, get_logger

log = get_logger("bmstudy.reporting.book")

SUMMARY_DIR = "summary"
#: Stage keys whose published items lead the results page (Table 2 first); the others follow in stage order.
RESULTS_FIRST: tuple[str, ...] = ("metrics", "subgroups", "timing")
STUDY_PART_CAPTION = "Study notebooks"
#: Output MIME types dropped from chapters: they need JavaScript from a CDN (ipywidgets, plotly...).
REMOTE_MIME_PREFIXES: tuple[str, ...] = ("application/vnd.jupyter.widget", "application/vnd.plotly",
                                         "application/javascript", "application/vnd.bokehjs")
HIDDEN_CELL_TAGS: frozenset[str] = frozenset({"parameters", "injected-parameters"})
_STAGE_NB = re.compile(r"^\d\d_[A-Za-z0-9_]+\.ipynb$")

#: One-line descriptions of the study stages, for the pipeline diagram.
STAGE_DESCRIPTIONS: dict[str, str] = {
    "01_cohort": "manifest or synthetic\ncohort; systematic\nsplit; Table 1",
    "02_preprocessing": "alignment check,\nresample, skull strip,\nZ-score, QC",
    "03_training": "3D U-Net\n(ResNet-34 encoder)\ntraining curves",
    "04_inference": "sliding window\npredictions,\ntimings",
    "05_metrics": "per-patient metrics,\nTable 2, Figure 3,\nlesion-wise detection",
    "06_subgroups": "subgroups (Figure 4):\nMann-Whitney, DeLong,\npatient-level tests",
    "07_timing": "model vs manual\ntime (Table 3)",
}


# ----------------------------------------------------------------------------- notebook side
def _slug(name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")
    if not slug:
        raise ValueError(f"summary item name {name!r} has no usable characters")
    return slug


def publish_table(df: Any, out_dir: PathLike, name: str, caption: str, *, html_text: str | None = None) -> Path:
    """Save a table for the book's results page: ``out_dir/summary/<name>.csv`` (+ ``.html``, ``.json``).

    ``html_text`` is the rendered table (e.g. ``bmstudy.reporting.tables.to_html``); by default the DataFrame's
    own HTML. Returns the CSV path.
    """
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"publish_table({name!r}): expected a DataFrame, got {type(df).__name__}")
    folder = Path(out_dir) / SUMMARY_DIR
    stem = _slug(name)
    from ..utils import atomic_to_csv

    csv = atomic_to_csv(df, folder / f"{stem}.csv")
    atomic_write_text(folder / f"{stem}.html", html_text if html_text is not None else df.to_html(index=False))
    atomic_write_json(folder / f"{stem}.json", {"kind": "table", "caption": caption, "order": time.time()})
    return csv


def publish_figure(fig: Any, out_dir: PathLike, name: str, caption: str, dpi: int = 110) -> Path:
    """Save a matplotlib figure for the book's results page: ``out_dir/summary/<name>.png`` (+ ``.json``)."""
    from ..utils import atomic_path

    if not hasattr(fig, "savefig"):
        raise TypeError(f"publish_figure({name!r}): expected a matplotlib Figure, got {type(fig).__name__}")
    folder = Path(out_dir) / SUMMARY_DIR
    stem = _slug(name)
    png = folder / f"{stem}.png"
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    atomic_write_json(folder / f"{stem}.json", {"kind": "figure", "caption": caption, "order": time.time()})
    return png


def show_table(df: Any, caption: str, out_dir: PathLike, name: str | None = None, precision: int = 3) -> None:
    """Display a publication-style table in a notebook; with ``name`` also publish it for the book."""
    from IPython.display import HTML, display

    from ..reporting.tables import to_html

    text = to_html(df, caption, precision=precision)
    display(HTML(text))
    if name:
        publish_table(df, out_dir, name, caption, html_text=text)


def show_figure(fig: Any, caption: str, out_dir: PathLike, name: str | None = None) -> None:
    """Display a matplotlib figure in a notebook, publish it with ``name``, then close it."""
    import matplotlib.pyplot as plt
    from IPython.display import display

    display(fig)
    if name:
        publish_figure(fig, out_dir, name, caption)
    plt.close(fig)


def notebook_reporter(out_dir: PathLike) -> tuple[Any, Any]:
    """``(show_table, show_figure)`` bound to a stage's output folder, for the study notebooks."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    def table(df: Any, caption: str, name: str | None = None, precision: int = 3) -> None:
        show_table(df, caption, out, name, precision)

    def figure(fig: Any, caption: str, name: str | None = None) -> None:
        show_figure(fig, caption, out, name)

    return table, figure


# ----------------------------------------------------------------------------- staging helpers
def executed_notebooks(run_dir: PathLike) -> list[Path]:
    """The run's executed stage notebooks (``NN_name.ipynb``), in stage order."""
    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"run folder {run} not found")
    return sorted(p for p in run.iterdir() if p.is_file() and _STAGE_NB.match(p.name))


def prepare_chapter(src: PathLike, dest: PathLike) -> Path:
    """Copy an executed notebook for the book: hide parameter cells, drop outputs needing remote JS."""
    import nbformat

    nb = nbformat.read(str(src), as_version=4)
    for cell in nb.cells:
        tags = list(cell.get("metadata", {}).get("tags", []))
        if HIDDEN_CELL_TAGS.intersection(tags) and "remove-cell" not in tags:
            cell.setdefault("metadata", {})["tags"] = tags + ["remove-cell"]
        if cell.cell_type == "code":
            kept = []
            for out in cell.get("outputs", []):
                data = out.get("data")
                if data:
                    for mime in [m for m in data if m.startswith(REMOTE_MIME_PREFIXES)]:
                        del data[mime]
                    if not data:
                        continue
                kept.append(out)
            cell["outputs"] = kept
    nb.metadata.pop("widgets", None)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(dest, nbformat.writes(nb))
    return dest


def _notebook_title(path: Path) -> str:
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return path.stem


def draw_pipeline_diagram(path: PathLike, stages: Sequence[Any] | None = None) -> Path:
    """Draw the stage graph (boxes = notebooks, arrows = which outputs each reads) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    if stages is None:
        from ..study.runner import STAGES as stages  # noqa: N811
    names = [s.name for s in stages]
    n = len(names)
    fig, ax = plt.subplots(figsize=(max(8.0, 2.1 * n), 3.6))
    w, h, gap = 1.7, 1.5, 0.45
    xs = {nm: i * (w + gap) for i, nm in enumerate(names)}
    for s in stages:
        x = xs[s.name]
        ax.add_patch(FancyBboxPatch((x, 0), w, h, boxstyle="round,pad=0.04", fc="#e8f0fb", ec="#2b5797", lw=1.4))
        ax.text(x + w / 2, h - 0.22, s.name, ha="center", va="center", fontsize=9.5, weight="bold")
        ax.text(x + w / 2, h / 2 - 0.18, STAGE_DESCRIPTIONS.get(s.name, ""), ha="center", va="center", fontsize=7.6)
    for s in stages:
        for d in s.depends:
            i, j = names.index(d), names.index(s.name)
            if j == i + 1:
                a = FancyArrowPatch((xs[d] + w + 0.04, h / 2), (xs[s.name] - 0.04, h / 2),
                                    arrowstyle="-|>", mutation_scale=14, color="#2b5797", lw=1.3)
            else:
                a = FancyArrowPatch((xs[d] + w / 2, h + 0.05), (xs[s.name] + w / 2, h + 0.05),
                                    connectionstyle=f"arc3,rad=-{min(0.12 + 0.04 * (j - i), 0.35):.2f}",
                                    arrowstyle="-|>", mutation_scale=11, color="#8a8a8a", lw=0.9)
            ax.add_patch(a)
    ax.text(0, -0.35, "papermill executes each notebook into runs/<name>/<stage>/; "
            "grey arcs: a stage also reads an earlier stage's outputs (e.g. the study manifest)",
            fontsize=8, color="#444444", va="top")
    ax.set_xlim(-0.2, n * (w + gap))
    ax.set_ylim(-0.7, h + 1.3)
    ax.axis("off")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    from ..utils import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return path


def _paper_table2_html() -> str:
    """The paper's Table 2 as HTML (median (Q1, Q3)), for runs that published no comparison table."""
    import pandas as pd

    from ..reporting.tables import METRIC_LABELS, paper_table2

    t = paper_table2()
    t["value"] = [f"{m:.3f} ({a:.3f}, {b:.3f})" for m, a, b in t[["median", "q1", "q3"]].to_numpy()]
    wide = t.pivot(index="metric", columns="split", values="value").reindex(t["metric"].unique())
    wide.index = [METRIC_LABELS.get(m, m) for m in wide.index]
    wide = wide.rename(columns={"test": "Testing set, paper (N = 91)", "external": "Validation set, paper (N = 172)"})
    return pd.DataFrame(wide).to_html()


def summary_items(run_dir: PathLike) -> list[dict[str, Any]]:
    """Tables and figures published under ``<stage>/summary/``: :data:`RESULTS_FIRST` stages first, then
    the others in stage order; within a stage in publication order."""
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
    """Provenance of one published table/figure (HTML): its file, stage execution and code version."""
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
        parts.append(f"commit {code(str(git['commit'])[:10])}" + _dirty_suffix(git))
    return "<p class=\"bm-source\"><small>Source: " + ", ".join(parts) + ".</small></p>"


def results_page(run_dir: PathLike, src_dir: PathLike) -> str:
    """Markdown of the results summary page; copies the published figures under ``src_dir/summary``."""
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
    return "\n".join(lines)


def provenance_page(run_dir: PathLike) -> str:
    """Markdown rendering of ``run_dir/provenance.json``."""
    path = Path(run_dir) / "provenance.json"
    lines = ["# Provenance", ""]
    if not path.is_file():
        return "\n".join(lines + [f"*No provenance.json in `{run_dir}`.*", ""])
    prov = json.loads(path.read_text(encoding="utf-8"))
    git = prov.get("git") or {}
    man = prov.get("manifest") or {}
    rows = [("Run", prov.get("run")), ("Profile", prov.get("profile")),
            ("Git commit (last invocation)", f"{git.get('commit')}" + _dirty_suffix(git)),
            ("Python", prov.get("python")), ("Platform", prov.get("platform")),
            ("Data manifest", man.get("path") or man.get("source")), ("Manifest SHA-256", man.get("sha256")),
            ("User parameters", json.dumps(prov.get("user_parameters") or {})),
            ("Last updated", prov.get("updated"))]
    lines += [_kv_table(rows), "", "## Stages", "",
              "<table class=\"bm-prov\"><thead><tr><th>stage</th><th>status</th><th>last action</th>"
              "<th>started (UTC)</th><th>finished (UTC)</th><th>seconds</th><th>fingerprint</th><th>commit</th></tr></thead><tbody>"]
    for name, st in (prov.get("stages") or {}).items():
        sgit = st.get("git") or {}
        cells = [name, st.get("status"), st.get("last_action"), st.get("started"), st.get("finished"),
                 st.get("seconds"), str(st.get("fingerprint", ""))[:12],
                 str(sgit.get("commit") or "")[:10] + _dirty_suffix(sgit)]
        lines.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    lines += ["</tbody></table>", "", "## Parameters per stage", ""]
    for name, st in (prov.get("stages") or {}).items():
        lines += [f"**{name}**", "", "```json", json.dumps(st.get("parameters", {}), indent=2, sort_keys=True),
                  "```", ""]
    lines += ["## Package versions", "", _kv_table(sorted((prov.get("packages") or {}).items())), ""]
    return "\n".join(lines)


def _dirty_suffix(git: Mapping[str, Any]) -> str:
    """' (uncommitted changes)' when a provenance ``git`` record says the tree was dirty."""
    return " (uncommitted changes)" if git.get("dirty") else ""


def _kv_table(rows: Sequence[tuple[Any, Any]]) -> str:
    body = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f"<table class=\"bm-kv\"><tbody>{body}</tbody></table>"


def remote_assets(html_dir: PathLike) -> list[tuple[Path, str]]:
    """``(file, url)`` of every ``<script src>`` / ``<link href>`` in the HTML that points off-site."""
    pat = re.compile(r"<(?:script|link)\b[^>]*?(?:src|href)\s*=\s*[\"']((?:https?:)?//[^\"']+)[\"']", re.I)
    hits: list[tuple[Path, str]] = []
    for page in Path(html_dir).rglob("*.html"):
        for url in pat.findall(page.read_text(encoding="utf-8", errors="replace")):
            hits.append((page, url))
    return hits


_THEBE_TAGS = re.compile(
    r"[ \t]*<script[^>]*>\s*const THEBE_JS_URL = [^<]*</script>\n?"
    r"|[ \t]*<script[^>]*src=\"[^\"]*sphinx-thebe\.js[^\"]*\"[^>]*>\s*</script>\n?"
    r"|[ \t]*<link[^>]*href=\"[^\"]*sphinx-thebe\.css[^\"]*\"[^>]*/?>\n?")


def strip_thebe(html_dir: PathLike) -> int:
    """Remove sphinx-thebe's loader (it names a CDN URL; live code is off in this book). Returns pages changed."""
    changed = 0
    for page in Path(html_dir).rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        new = _THEBE_TAGS.sub("", text)
        if new != text:
            page.write_text(new, encoding="utf-8")
            changed += 1
    return changed


def _write_toc(template: Path, dest: Path, chapters: Sequence[str]) -> None:
    import yaml

    toc = yaml.safe_load(template.read_text(encoding="utf-8"))
    parts = toc.get("parts") or []
    study = [p for p in parts if p.get("caption") == STUDY_PART_CAPTION]
    if not study:
        raise ValueError(f"{template}: no part captioned {STUDY_PART_CAPTION!r} to fill with the notebooks")
    if chapters:
        study[0]["chapters"] = [{"file": c} for c in chapters]
    else:
        toc["parts"] = [p for p in parts if p is not study[0]]
    atomic_write_text(dest, yaml.safe_dump(toc, sort_keys=False))


def _jupyter_book_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "jupyter-book"
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("jupyter-book")
    if found:
        return [found]
    return [sys.executable, "-m", "jupyter_book.cli.main"]


# ----------------------------------------------------------------------------- main entry
def build_book(run_dir: PathLike, book_dir: PathLike = "book", *, quiet: bool = True,
               check_offline: bool = True, timeout: float = 900) -> Path:
    """Build the HTML report of ``run_dir`` into ``book_dir/_build/html``; return ``index.html``.

    Raises ``FileNotFoundError`` if the run or the static book sources are missing, ``RuntimeError``
    if ``jupyter-book`` fails (its output tail in the message) or the HTML references remote assets.
    """
    run = Path(run_dir).resolve()
    book = Path(book_dir).resolve()
    for required in ("_config.yml", "_toc.yml", "intro.md"):
        if not (book / required).is_file():
            raise FileNotFoundError(f"book source {book / required} not found")
    notebooks = executed_notebooks(run)
    build = book / "_build"
    src = build / "src"
    if src.exists():
        shutil.rmtree(src)
    src.mkdir(parents=True)
    for item in book.iterdir():
        if item.name.startswith((".", "_build")) or item.name == "_toc.yml":
            continue
        if item.is_dir():
            shutil.copytree(item, src / item.name)
        else:
            shutil.copy2(item, src / item.name)
    chapters = []
    for nb in notebooks:
        prepare_chapter(nb, src / "chapters" / nb.name)
        chapters.append(f"chapters/{nb.stem}")
    _write_toc(book / "_toc.yml", src / "_toc.yml", chapters)
    draw_pipeline_diagram(src / "pipeline.png")
    atomic_write_text(src / "results.md", results_page(run, src))
    atomic_write_text(src / "provenance.md", provenance_page(run))
    if not (src / "deviations.md").is_file():
        atomic_write_text(src / "deviations.md", "# Deviations from the paper\n\n*Not written.*\n")

    html_dir = build / "html"
    if html_dir.exists():
        shutil.rmtree(html_dir)  # a stale page of an earlier run must not survive
    cmd = _jupyter_book_cmd() + ["build", str(src), "--path-output", str(book), "--all"]
    if quiet:
        cmd.append("-q")
    log.info("building the book: %s", " ".join(cmd))
    env = {**os.environ, "PYTHONUTF8": "1"}  # Sphinx and its extensions read/print UTF-8 whatever the locale
    proc = subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=timeout,
                          env=env)
    index = html_dir / "index.html"
    if proc.returncode != 0 or not index.is_file():
        tail = (proc.stdout + proc.stderr)[-4000:]
        raise RuntimeError(f"jupyter-book build of {src} failed (exit {proc.returncode}):\n{tail}")
    strip_thebe(html_dir)
    if check_offline:
        remote = remote_assets(html_dir)
        if remote:
            listing = "; ".join(f"{p.relative_to(html_dir)}: {u}" for p, u in remote[:10])
            raise RuntimeError(f"the built book loads {len(remote)} remote asset(s), it would not work offline: {listing}")
    log.info("book built: %s", index)
    return index


# ----------------------------------------------------------------------------- CLI: bmstudy book
def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", nargs="?", default="runs/default", help="run folder (default: runs/default)")
    parser.add_argument("--book-dir", default="book", help="book sources; HTML goes to BOOK_DIR/_build/html")
    parser.add_argument("--verbose", action="store_true", help="show jupyter-book's output")


def cli_main(args: argparse.Namespace) -> int:
    index = build_book(args.run_dir, book_dir=args.book_dir, quiet=not args.verbose)
    print(f"HTML report: {index}")
    return 0
