"""Build the study report (Jupyter Book 1.x, fully offline) from the executed notebooks of a run.

``build_book(run_dir)`` stages a book source under ``book/_build/src``: the static pages of ``book/``
(``_config.yml``, ``intro.md``, ``deviations.md``, the ``_toc.yml`` template), the run's executed
notebooks as chapters (parameter cells tagged ``remove-cell``, widget outputs dropped), a generated
pipeline diagram (from :data:`bmstudy.study.stages.STAGES`), a results summary page and the provenance
page (:mod:`.provenance_page`: ``provenance.json`` and the run's ``plan.json``); then it runs
``jupyter-book build`` with ``execute_notebooks: off``. The HTML lands in ``book/_build/html`` and is
checked for remote (CDN) scripts and stylesheets so that it opens from ``file://`` without a network.
The published pages show paths relative to the run folder or the repository, never this machine's
absolute paths (:class:`~bmstudy.reporting.provenance_page.PathDisplay`).

Notebooks put what belongs on the results page into ``<stage>/summary/`` with :func:`publish_table`
and :func:`publish_figure` (:mod:`.publish`); the summary page (:mod:`.results_page`) shows those items
in stage order. Those names are re-exported here.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Sequence

from ..study.stages import STAGES
from ..utils import PathLike, atomic_write_text, get_logger
from .provenance_page import REPO_ROOT, PathDisplay
from .publish import (SUMMARY_DIR, notebook_reporter, publish_figure, publish_table,  # noqa: F401 (re-exported)
                      show_figure, show_table)
from .provenance_page import provenance_page as _provenance_page
from .results_page import RESULTS_FIRST, results_page, source_line, summary_items  # noqa: F401 (re-exported)

log = get_logger("bmstudy.reporting.book")

STUDY_PART_CAPTION = "Study notebooks"
#: Output MIME types dropped from chapters: they need JavaScript from a CDN (ipywidgets, plotly...).
REMOTE_MIME_PREFIXES: tuple[str, ...] = ("application/vnd.jupyter.widget", "application/vnd.plotly",
                                         "application/javascript", "application/vnd.bokehjs")
HIDDEN_CELL_TAGS: frozenset[str] = frozenset({"parameters", "injected-parameters", "bmstudy-module-record"})
_STAGE_NB = re.compile(r"^\d\d_[A-Za-z0-9_]+\.ipynb$")

#: One-line descriptions of the study stages (:attr:`bmstudy.study.stages.Stage.description`).
STAGE_DESCRIPTIONS: dict[str, str] = {s.name: s.description for s in STAGES}
DIAGRAM_LINE_CHARS = 22  # the diagram wraps each description to lines of at most this many characters


# ----------------------------------------------------------------------------- staging helpers
def executed_notebooks(run_dir: PathLike) -> list[Path]:
    """The run's executed stage notebooks (``NN_name.ipynb``), in stage order.

    Parameters
    ----------
    run_dir : path-like
        The run folder.

    Returns
    -------
    list of Path
        Failed (``.failed.ipynb``) and running notebooks are not included.

    Raises
    ------
    FileNotFoundError
        When the run folder does not exist.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"run folder {run} not found")
    return sorted(p for p in run.iterdir() if p.is_file() and _STAGE_NB.match(p.name))


def _scrub_paths(obj: Any, show: PathDisplay) -> Any:
    """:meth:`PathDisplay.text` applied to every string of a notebook node (images left alone)."""
    if isinstance(obj, str):
        return show.text(obj)
    if isinstance(obj, list):
        return [_scrub_paths(v, show) for v in obj]
    if isinstance(obj, dict):
        for k in list(obj):
            if not str(k).startswith("image/"):
                obj[k] = _scrub_paths(obj[k], show)
    return obj


def prepare_chapter(src: PathLike, dest: PathLike, show: PathDisplay | None = None) -> Path:
    """Copy an executed notebook for the book.

    Parameter cells are hidden, outputs needing remote JavaScript dropped and, with ``show``, the run's
    and the repository's absolute paths rewritten (sources, outputs and metadata).

    Parameters
    ----------
    src, dest : path-like
        The executed notebook; the chapter to write.
    show : PathDisplay, optional
        The run's path display rule.

    Returns
    -------
    Path
        ``dest``.
    """
    import nbformat

    nb = nbformat.read(str(src), as_version=4)
    if show is not None:
        _scrub_paths(nb, show)  # in place
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


def draw_pipeline_diagram(path: PathLike, stages: Sequence[Any] | None = None) -> Path:
    """Draw the stage graph (boxes = notebooks, arrows = which outputs each reads) as a PNG.

    Parameters
    ----------
    path : path-like
        The PNG to write.
    stages : sequence of Stage, optional
        Default :data:`bmstudy.study.stages.STAGES`; each box shows the stage's ``description``.

    Returns
    -------
    Path
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    stages = STAGES if stages is None else stages
    names = [s.name for s in stages]
    n = len(names)
    fig, ax = plt.subplots(figsize=(max(8.0, 2.1 * n), 3.6))
    w, h, gap = 1.7, 1.5, 0.45
    xs = {nm: i * (w + gap) for i, nm in enumerate(names)}
    for s in stages:
        x = xs[s.name]
        ax.add_patch(FancyBboxPatch((x, 0), w, h, boxstyle="round,pad=0.04", fc="#e8f0fb", ec="#2b5797", lw=1.4))
        ax.text(x + w / 2, h - 0.22, s.name, ha="center", va="center", fontsize=9.5, weight="bold")
        label = textwrap.fill(getattr(s, "description", "") or STAGE_DESCRIPTIONS.get(s.name, ""), DIAGRAM_LINE_CHARS)
        ax.text(x + w / 2, h / 2 - 0.18, label, ha="center", va="center", fontsize=7.6)
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


def _read_provenance(run: Path) -> dict[str, Any]:
    """``run/provenance.json``, or ``{}`` when absent or unreadable."""
    try:
        return json.loads((run / "provenance.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def provenance_page(run_dir: PathLike) -> str:
    """Markdown of the provenance page of ``run_dir`` (``provenance.json`` and ``plan.json``).

    Parameters
    ----------
    run_dir : path-like
        The run folder.

    Returns
    -------
    str
        See :func:`bmstudy.reporting.provenance_page.provenance_page`.
    """
    return _provenance_page(run_dir, STAGES, REPO_ROOT)


def remote_assets(html_dir: PathLike) -> list[tuple[Path, str]]:
    """Every ``<script src>`` / ``<link href>`` of the HTML that points off-site.

    Parameters
    ----------
    html_dir : path-like
        The built HTML.

    Returns
    -------
    list of (Path, str)
        ``(page, url)`` pairs; empty for a book that works offline.
    """
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
    """Remove sphinx-thebe's loader (it names a CDN URL; live code is off in this book).

    Parameters
    ----------
    html_dir : path-like
        The built HTML.

    Returns
    -------
    int
        Pages changed.
    """
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
    """Build the HTML report of ``run_dir`` into ``book_dir/_build/html``.

    Parameters
    ----------
    run_dir : path-like
        The run folder (executed notebooks, ``provenance.json``, ``plan.json``).
    book_dir : path-like
        The static book sources (``_config.yml``, ``_toc.yml``, ``intro.md``, ...).
    quiet : bool
        Pass ``-q`` to ``jupyter-book``.
    check_offline : bool
        Fail when a page loads a remote script or stylesheet.
    timeout : float
        Seconds allowed for ``jupyter-book build``.

    Returns
    -------
    Path
        ``index.html``.

    Raises
    ------
    FileNotFoundError
        If the run or the static book sources are missing.
    RuntimeError
        If ``jupyter-book`` fails (its output tail in the message) or the HTML references remote assets.
    """
    run = Path(run_dir).resolve()
    book = Path(book_dir).resolve()
    for required in ("_config.yml", "_toc.yml", "intro.md"):
        if not (book / required).is_file():
            raise FileNotFoundError(f"book source {book / required} not found")
    build = book / "_build"
    src = _stage_sources(run, book, build / "src")
    html_dir = build / "html"
    if html_dir.exists():
        shutil.rmtree(html_dir)  # a stale page of an earlier run must not survive
    _run_jupyter_book(src, book, quiet=quiet, timeout=timeout)
    index = html_dir / "index.html"
    strip_thebe(html_dir)
    if check_offline:
        remote = remote_assets(html_dir)
        if remote:
            listing = "; ".join(f"{p.relative_to(html_dir)}: {u}" for p, u in remote[:10])
            raise RuntimeError(f"the built book loads {len(remote)} remote asset(s), it would not work offline: {listing}")
    log.info("book built: %s", index)
    return index


def _stage_sources(run: Path, book: Path, src: Path) -> Path:
    """Write the book source of ``run`` into ``src``: static pages, chapters, diagram, results, provenance."""
    notebooks = executed_notebooks(run)
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
    show = PathDisplay.for_run(run, _read_provenance(run))
    chapters = []
    for nb in notebooks:
        prepare_chapter(nb, src / "chapters" / nb.name, show)
        chapters.append(f"chapters/{nb.stem}")
    _write_toc(book / "_toc.yml", src / "_toc.yml", chapters)
    draw_pipeline_diagram(src / "pipeline.png")
    atomic_write_text(src / "results.md", results_page(run, src))
    atomic_write_text(src / "provenance.md", provenance_page(run))
    if not (src / "deviations.md").is_file():
        atomic_write_text(src / "deviations.md", "# Deviations from the paper\n\n*Not written.*\n")
    return src


def _run_jupyter_book(src: Path, book: Path, *, quiet: bool, timeout: float) -> None:
    """``jupyter-book build`` of ``src`` into ``book/_build/html``; ``RuntimeError`` with its output on failure."""
    cmd = _jupyter_book_cmd() + ["build", str(src), "--path-output", str(book), "--all"]
    if quiet:
        cmd.append("-q")
    log.info("building the book: %s", " ".join(cmd))
    env = {**os.environ, "PYTHONUTF8": "1"}  # Sphinx and its extensions read/print UTF-8 whatever the locale
    proc = subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=timeout,
                          env=env)
    if proc.returncode != 0 or not (book / "_build" / "html" / "index.html").is_file():
        tail = (proc.stdout + proc.stderr)[-4000:]
        raise RuntimeError(f"jupyter-book build of {src} failed (exit {proc.returncode}):\n{tail}")


# ----------------------------------------------------------------------------- CLI: bmstudy book
def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``bmstudy book``.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The sub-command's parser.
    """
    parser.add_argument("run_dir", nargs="?", default="runs/default", help="run folder (default: runs/default)")
    parser.add_argument("--book-dir", default="book", help="book sources; HTML goes to BOOK_DIR/_build/html")
    parser.add_argument("--verbose", action="store_true", help="show jupyter-book's output")


def cli_main(args: argparse.Namespace) -> int:
    """Build the book of ``args.run_dir`` and print where it is.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed :func:`add_cli_arguments`.

    Returns
    -------
    int
        0.
    """
    index = build_book(args.run_dir, book_dir=args.book_dir, quiet=not args.verbose)
    print(f"HTML report: {index}")
    return 0
