"""bmstudy.reporting.book: the offline Jupyter Book built from a run's executed notebooks.

The book is built once (module fixture, ~10 s) from a dummy run whose "executed" notebooks are written
with nbformat (outputs included), so no kernel or TensorFlow is needed.
"""
from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest

from bmstudy.plan import resolve_plan, write_plan
from bmstudy.reporting import book as bk
from bmstudy.reporting.provenance_page import PathDisplay

CHROMIUM = Path("/usr/bin/chromium")
MAGENTA = (255, 0, 255)


def _figure(color=(1.0, 0.0, 1.0)):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3))
    ax.add_patch(plt.Rectangle((0, 0), 1, 1, color=color))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    return fig


def _executed_notebook(path: Path, title: str, table: pd.DataFrame, printed: str = "") -> None:
    fig = _figure()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    table_cell = nbformat.v4.new_code_cell("table", execution_count=3)
    table_cell.outputs = [nbformat.v4.new_output(
        "execute_result", data={"text/html": table.to_html(), "text/plain": table.to_string()}, execution_count=3)]
    fig_cell = nbformat.v4.new_code_cell("fig", execution_count=4)
    fig_cell.outputs = [nbformat.v4.new_output(
        "display_data", data={"image/png": base64.b64encode(buf.getvalue()).decode(), "text/plain": "<Figure>"})]
    widget_cell = nbformat.v4.new_code_cell("for _ in tqdm(range(3)): pass", execution_count=5)
    widget_cell.outputs = [nbformat.v4.new_output("display_data", data={
        "application/vnd.jupyter.widget-view+json": {"model_id": "abc", "version_major": 2, "version_minor": 0},
        "text/plain": "progress 3/3"})]
    nb.cells = [
        nbformat.v4.new_markdown_cell(f"# {title}\n\nWhat the paper did; what this run found."),
        nbformat.v4.new_code_cell("secret_param_default = 1", metadata={"tags": ["parameters"]}, execution_count=1),
        nbformat.v4.new_code_cell("secret_param_injected = 2", metadata={"tags": ["injected-parameters"]},
                                  execution_count=2),
        table_cell, fig_cell, widget_cell,
        # the runner's hidden last cell (records the bmstudy modules the kernel loaded)
        nbformat.v4.new_code_cell("def _bmstudy_record_modules(): pass", metadata={"tags": ["bmstudy-module-record"]},
                                  execution_count=7),
    ]
    if printed:  # a cell that prints a path of the machine (e.g. its output folder)
        cell = nbformat.v4.new_code_cell("print(out_dir)", execution_count=6)
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=printed + "\n")]
        nb.cells.append(cell)
    nbformat.write(nb, path)


@pytest.fixture(scope="module")
def built(tmp_path_factory, repo_root):
    tmp = tmp_path_factory.mktemp("book")
    run = tmp / "runs" / "demo"
    run.mkdir(parents=True)
    table = pd.DataFrame({"metric": ["Dice", "AUC"], "ours": [0.61, 0.87], "paper": [0.821, 0.891]})
    _executed_notebook(run / "01_cohort.ipynb", "Cohort chapter", table)
    _executed_notebook(run / "05_metrics.ipynb", "Metrics chapter", table,
                       printed=f"wrote {run / '05_metrics' / 'metrics.csv'} with {repo_root / 'notebooks'}")
    (run / "05_metrics.failed.ipynb").write_text("{}", encoding="utf-8")  # not a chapter
    bk.publish_table(table, run / "01_cohort", "table1", "Table 1 of this run")
    bk.publish_figure(_figure(), run / "05_metrics", "figure3_overlays", "Figure 3 overlay of this run")
    bk.publish_table(pd.DataFrame({"metric": ["Dice"], "ours": ["0.700 (0.6, 0.8)"], "paper": ["0.821 (0.674, 0.882)"]}),
                     run / "05_metrics", "table2_vs_paper", "Table 2 beside the paper")
    plan = resolve_plan("tiny", {"train.epochs": 7})
    write_plan(plan, run / "plan.json")
    manifest = tmp / "elsewhere" / "my_manifest.csv"  # outside the run folder and the repository
    (run / "provenance.json").write_text(json.dumps({
        "run": "demo", "run_dir": str(run), "profile": "tiny", "git": {"commit": "abc123", "dirty": False},
        "packages": {"numpy": "1.26.4"}, "plan": {"path": "plan.json", "hash": plan.hash()},
        "manifest": {"path": str(manifest), "sha256": "9" * 64, "source": "user"},
        "user_parameters": {"train.epochs": 7, "work_log": str(tmp / "work.log")},
        "case_summary": {"02_preprocessing": {"table": "02_preprocessing/preprocess_report.csv", "n": 25,
                                              "counts": {"ok": 6, "excluded": 19},
                                              "reasons": ["INT004: mask_labels needed: values [2, 4]"]}},
        "stages": {"01_cohort": {"status": "ok", "last_action": "ran", "started": "2026-01-01T00:00:00+00:00",
                                 "finished": "2026-01-01T00:00:05+00:00", "seconds": 5.0,
                                 "fingerprint": "f" * 64, "notebook": str(repo_root / "notebooks" / "01_cohort.ipynb"),
                                 "parameters": {"seed": 0, "out_dir": str(run / "01_cohort"),
                                                "plan": str(run / "plan.json"), "manifest": str(manifest)},
                                 "git": {"commit": "def456", "dirty": True}}}}), encoding="utf-8")
    book_dir = tmp / "book"
    shutil.copytree(repo_root / "book", book_dir, ignore=shutil.ignore_patterns("_build"))
    index = bk.build_book(run, book_dir)
    return {"index": index, "html": index.parent, "run": run, "tmp": tmp, "plan": plan}


def test_book_pages_contain_tables_and_figures(built):
    html = built["html"]
    assert built["index"].is_file()
    results = (html / "results.html").read_text(encoding="utf-8")
    assert "<table" in results and "Table 2 beside the paper" in results and "0.821 (0.674, 0.882)" in results
    assert "<img" in results and "figure3_overlays.png" in results and (html / "_images" / "figure3_overlays.png").is_file()
    chapter = (html / "chapters" / "05_metrics.html").read_text(encoding="utf-8")
    assert "Metrics chapter" in chapter and "<table" in chapter and "<img" in chapter
    assert "secret_param" not in chapter  # parameters and injected-parameters cells are hidden
    assert "_bmstudy_record_modules" not in chapter  # so is the runner's module-record cell
    # failure accounting (issue 10): cases per stage with the first reasons, before the tables
    assert "Cases per stage" in results and "19 case(s) were excluded or failed" in results
    assert "INT004: mask_labels needed: values [2, 4]" in results
    assert results.find("19 case(s) were excluded") < results.find("Table 2 beside the paper")
    assert "progress 3/3" in chapter and "widget-view" not in chapter  # widget output degraded to text
    assert not (html / "chapters" / "05_metrics.failed.html").exists()
    intro = (html / "intro.html").read_text(encoding="utf-8")
    assert "pipeline.png" in intro and (html / "_images" / "pipeline.png").is_file()
    assert "Deviations from the paper" in (html / "deviations.html").read_text(encoding="utf-8")
    prov = (html / "provenance.html").read_text(encoding="utf-8")
    assert "abc123" in prov and "01_cohort" in prov and "1.26.4" in prov
    # every published item names where it came from: its file, notebook, execution and commit
    assert "Source: file <code>" in results and "01_cohort/summary/table1.csv" in results
    assert "05_metrics/summary/figure3_overlays.png" in results and "ffffffffffff" in results
    assert results.count("bm-source") >= 3 and "abc123" in results
    # a table names the commit its stage executed with (01_cohort: def456); stages without one, the run's
    table1_src = results[results.find("01_cohort/summary/table1.csv"):]
    table1_src = table1_src[:table1_src.find("</p>")]
    assert "def456" in table1_src and "(uncommitted changes)" in table1_src and "abc123" not in table1_src
    assert "def456" in prov
    assert results.find("Metrics chapter") < results.find("Cohort chapter")  # metrics (Table 2) lead the page
    toc_order = [intro.find(t) for t in ("Cohort chapter", "Metrics chapter", "Results summary")]
    assert -1 not in toc_order and toc_order == sorted(toc_order)


def test_provenance_page_shows_the_plan_and_no_absolute_paths(built, repo_root):
    prov = (built["html"] / "provenance.html").read_text(encoding="utf-8")
    plan = built["plan"]
    assert "Study plan" in prov and "Study settings" in prov and plan.hash() in prov
    for section in ("synth", "preprocess", "train", "inference", "evaluation"):
        assert f"<code class=\"docutils literal notranslate\"><span class=\"pre\">{section}</span></code>" in prov, section
    start = prov.find('<h3><code class="docutils literal notranslate"><span class="pre">train</span>')
    train = prov[start:prov.find("</table>", start)]
    assert "epochs" in train and "<td>7</td>" in train  # every field of every section, with its value
    for field in plan.to_dict()["evaluation"]:
        assert f"<th>{field}</th>" in prov, field
    assert "Read by: 03_training." in prov and "01_cohort, 03_training, 06_subgroups" in prov  # who reads seed
    # paths: run-relative, repository-relative, or the file name only
    assert "<td>01_cohort</td>" in prov and "<td>plan.json</td>" in prov
    assert "notebooks/01_cohort.ipynb" in prov and "\N{HORIZONTAL ELLIPSIS}/my_manifest.csv" in prov
    for root in (built["tmp"], repo_root):
        assert str(root) not in prov, root


def test_provenance_page_says_whether_training_was_deterministic(tmp_path):
    from bmstudy.reporting.provenance_page import provenance_page

    (tmp_path / "provenance.json").write_text(json.dumps({"run": "r", "stages": {}}), encoding="utf-8")
    for name, det in (("03_training", {"op_determinism": True, "inter_op_threads": 1, "deterministic": True}),
                      ("09_retrain", {"op_determinism": True, "inter_op_threads": 0, "deterministic": False})):
        (tmp_path / name).mkdir()
        rec = {"status": "complete", "config": {"seed": 4}, "determinism": det}
        (tmp_path / name / "train_config.json").write_text(json.dumps(rec), encoding="utf-8")
    page = provenance_page(tmp_path, repo_root=None)
    row = page[page.index("Training `03_training` (seed 4)"):]
    assert row[:row.index("</tr>")].count("deterministic: yes") == 1
    row = page[page.index("Training `09_retrain` (seed 4)"):]
    assert "deterministic: no: op determinism on, 0 inter-op thread(s)" in row[:row.index("</tr>")]


def test_published_book_has_no_absolute_paths(built, repo_root):
    html = built["html"]
    chapter = (html / "chapters" / "05_metrics.html").read_text(encoding="utf-8")
    assert "wrote 05_metrics/metrics.csv with notebooks" in chapter  # printed paths shown relative
    for page in [*html.rglob("*.html"), *html.rglob("*.ipynb"), *html.rglob("*.md")]:
        text = page.read_text(encoding="utf-8")
        for root in (built["tmp"], repo_root):
            assert str(root) not in text, (page, root)


def test_path_display_rules(tmp_path):
    run = tmp_path / "runs" / "r"
    show = PathDisplay.for_run(run, {"run_dir": "/old/place/runs/r"}, repo_root=tmp_path / "repo")
    assert show.path(str(run / "01_cohort" / "x.csv")) == "01_cohort/x.csv"
    assert show.path(str(run)) == "."
    assert show.path("/old/place/runs/r/02_b") == "02_b"  # where the stages ran, if the folder moved
    assert show.path(str(tmp_path / "repo" / "notebooks" / "a.ipynb")) == "notebooks/a.ipynb"
    assert show.path("/data/cohort/manifest.csv") == "\N{HORIZONTAL ELLIPSIS}/manifest.csv"
    assert show.path("relative/x") == "relative/x" and show.path(3) == 3
    assert show.value({"a": [str(run / "p")], "b": {"c": str(run)}}) == {"a": ["p"], "b": {"c": "."}}
    text = f"see {run}/01_cohort/x.csv and {run}, not {run}2/y"
    assert show.text(text) == f"see 01_cohort/x.csv and ., not {run}2/y"


def test_book_has_no_remote_assets(built):
    assert bk.remote_assets(built["html"]) == []
    for page in built["html"].rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        assert "mathjax" not in text.lower(), page
        assert "cdn.jsdelivr" not in text and "unpkg.com" not in text, page


def test_remote_assets_detects_cdn(tmp_path):
    (tmp_path / "a.html").write_text('<script src="https://cdn.jsdelivr.net/npm/mathjax@3/tex-chtml.js"></script>'
                                     '<link rel="stylesheet" href="//fonts.example.org/x.css"><script src="_static/x.js">')
    found = sorted(u for _, u in bk.remote_assets(tmp_path))
    assert found == ["//fonts.example.org/x.css", "https://cdn.jsdelivr.net/npm/mathjax@3/tex-chtml.js"]


def test_publish_helpers_validate(tmp_path):
    with pytest.raises(TypeError):
        bk.publish_table([1, 2], tmp_path, "t", "caption")
    with pytest.raises(TypeError):
        bk.publish_figure("not a figure", tmp_path, "f", "caption")
    with pytest.raises(ValueError):
        bk.publish_table(pd.DataFrame({"a": [1]}), tmp_path, "///", "caption")
    csv = bk.publish_table(pd.DataFrame({"a": [1]}), tmp_path, "my table", "cap")
    assert csv.name == "my_table.csv" and json.loads((tmp_path / "summary" / "my_table.json").read_text(encoding="utf-8"))["caption"] == "cap"


def test_build_book_errors(tmp_path, repo_root):
    with pytest.raises(FileNotFoundError, match="run folder"):
        bk.build_book(tmp_path / "nope", repo_root / "book")
    (tmp_path / "run").mkdir()
    with pytest.raises(FileNotFoundError, match="_config.yml"):
        bk.build_book(tmp_path / "run", tmp_path / "empty_book")


@pytest.mark.skipif(not CHROMIUM.is_file(), reason="headless screenshot needs the Debian 'chromium' package at /usr/bin/chromium")
def test_chromium_screenshot_of_results_page(built, tmp_path):
    from PIL import Image

    url = (built["html"] / "results.html").as_uri()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
             "--virtual-time-budget=8000", "--window-size=1280,1400"]
    shot = tmp_path / "results.png"
    subprocess.run([str(CHROMIUM), *flags, f"--screenshot={shot}", url], capture_output=True, timeout=120, check=True)
    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape == (1400, 1280, 3)
    magenta = np.all(img == MAGENTA, axis=-1)
    assert magenta.sum() > 2000, "the published figure (a magenta square) is not visible in the screenshot"
    dom = subprocess.run([str(CHROMIUM), *flags, "--dump-dom", url], capture_output=True, text=True, encoding="utf-8", timeout=120,
                         check=True).stdout
    assert "<table" in dom and "0.821 (0.674, 0.882)" in dom
