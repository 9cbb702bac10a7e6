"""bmstudy.study.runner: papermill execution, skip / re-run logic, failure reporting, provenance.

Uses tiny dummy notebooks (no TensorFlow); each executed notebook costs one kernel start (~5 s).
"""
from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from bmstudy.study import runner as pipeline
from bmstudy.study.runner import Stage, StageError, notebook_source_hash, parse_param, run_study

STAGES = (
    Stage("01_a", "01_a.ipynb"),
    Stage("02_b", "02_b.ipynb", ("01_a",)),
    Stage("03_c", "03_c.ipynb", ("02_b",)),
)
PROFILES = {"tiny": {"profile": "tiny", "seed": 0}}


def _nb(params: str, *cells: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell("# dummy stage"),
                nbformat.v4.new_code_cell(params, metadata={"tags": ["parameters"]})]
    nb.cells += [nbformat.v4.new_code_cell(c) for c in cells]
    return nb


def _log(name: str) -> str:
    return f"with open(work_log, 'a') as fh:\n    fh.write({name!r} + '\\n')"


def _write_notebooks(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(_nb("out_dir = ''\nseed = 0\nwork_log = ''",
                       _log("01_a"),
                       "from pathlib import Path\nPath(out_dir, 'value.txt').write_text(str(seed + 1), encoding='utf-8')"),
                   folder / "01_a.ipynb")
    nbformat.write(_nb("out_dir = ''\na_dir = ''\nscale = 2\nwork_log = ''",
                       _log("02_b"),
                       "from pathlib import Path\nv = int(Path(a_dir, 'value.txt').read_text(encoding='utf-8'))\n"
                       "Path(out_dir, 'value.txt').write_text(str(v * scale), encoding='utf-8')"),
                   folder / "02_b.ipynb")
    nbformat.write(_nb("out_dir = ''\nb_dir = ''\nfail = False\nwork_log = ''",
                       _log("03_c"),
                       "from pathlib import Path\nv = int(Path(b_dir, 'value.txt').read_text(encoding='utf-8'))",
                       "if fail:\n    raise ValueError('boom in stage c')\nPath(out_dir, 'value.txt').write_text(str(v + 100), encoding='utf-8')"),
                   folder / "03_c.ipynb")
    return folder


def _run(tmp_path: Path, **kw):
    log = tmp_path / "work.log"
    params = {"work_log": str(log), **kw.pop("params", {})}
    return run_study("r", "tiny", params=params, runs_dir=tmp_path / "runs", notebooks_dir=tmp_path / "nb",
                     stage_list=STAGES, profiles=PROFILES, **kw)


def _work(tmp_path: Path) -> list[str]:
    log = tmp_path / "work.log"
    out = log.read_text(encoding="utf-8").split() if log.exists() else []
    log.unlink(missing_ok=True)
    return out


def test_skip_and_rerun_only_dependents(tmp_path, monkeypatch):
    _write_notebooks(tmp_path / "nb")
    run_dir = tmp_path / "runs" / "r"

    first = _run(tmp_path)
    assert first.ran == ["01_a", "02_b", "03_c"]
    assert _work(tmp_path) == ["01_a", "02_b", "03_c"]
    assert (run_dir / "03_c" / "value.txt").read_text(encoding="utf-8") == str((0 + 1) * 2 + 100)
    for s in STAGES:  # executed notebooks carry the injected parameters
        nb = nbformat.read(run_dir / f"{s.name}.ipynb", as_version=4)
        assert any("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells)

    prov = json.loads((run_dir / "provenance.json").read_text(encoding="utf-8"))
    assert prov["profile"] == "tiny" and "numpy" in prov["packages"] and prov["packages"]["papermill"]
    assert set(prov["stages"]) == {"01_a", "02_b", "03_c"}
    st = prov["stages"]["02_b"]
    assert st["status"] == "ok" and st["started"] <= st["finished"]
    assert st["parameters"]["a_dir"] == str(run_dir / "01_a") and st["parameters"]["work_log"].endswith("work.log")
    assert st["notebook_defaults"] == {"scale": "2"}  # not passed: the notebook's own default
    assert "commit" in prov["git"]
    first_git = prov["stages"]["01_a"]["git"]
    assert first_git == prov["git"]  # each stage records the code version it executed with

    second = _run(tmp_path)  # nothing changed: no stage work at all
    assert second.ran == [] and second.skipped == ["01_a", "02_b", "03_c"]
    assert _work(tmp_path) == []

    # a later invocation under another commit: skipped stages keep the commit they executed with
    monkeypatch.setattr(pipeline, "git_commit", lambda repo=None: {"commit": "c0ffee", "dirty": True})
    third = _run(tmp_path, params={"scale": 5})  # only b declares 'scale': b and its dependent c re-run
    assert third.ran == ["02_b", "03_c"] and third.skipped == ["01_a"]
    assert _work(tmp_path) == ["02_b", "03_c"]
    assert (run_dir / "03_c" / "value.txt").read_text(encoding="utf-8") == str(1 * 5 + 100)
    prov = json.loads((run_dir / "provenance.json").read_text(encoding="utf-8"))
    assert prov["stages"]["01_a"]["last_action"] == "skipped" and prov["stages"]["02_b"]["parameters"]["scale"] == 5
    assert prov["git"] == {"commit": "c0ffee", "dirty": True}
    assert prov["stages"]["02_b"]["git"] == {"commit": "c0ffee", "dirty": True}
    assert prov["stages"]["01_a"]["git"] == first_git and first_git != prov["git"]

    fourth = _run(tmp_path, params={"scale": 5, "03_c.fail": False}, stages=["03"], force=True)
    assert fourth.ran == ["03_c"]  # --stages + --force: only that stage
    assert _work(tmp_path) == ["03_c"]

    # editing a notebook's source re-runs it and its dependents
    nb = nbformat.read(tmp_path / "nb" / "01_a.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("x = 1"))
    nbformat.write(nb, tmp_path / "nb" / "01_a.ipynb")
    fifth = _run(tmp_path, params={"scale": 5})
    assert fifth.ran == ["01_a", "02_b", "03_c"]


def test_failure_names_notebook_and_cell_and_stops(tmp_path):
    _write_notebooks(tmp_path / "nb")
    stages = STAGES + (Stage("04_d", "04_d.ipynb", ("03_c",)),)
    nbformat.write(_nb("work_log = ''", _log("04_d")), tmp_path / "nb" / "04_d.ipynb")
    with pytest.raises(StageError) as info:
        run_study("r", "tiny", params={"work_log": str(tmp_path / "work.log"), "fail": True},
                  runs_dir=tmp_path / "runs", notebooks_dir=tmp_path / "nb", stage_list=stages, profiles=PROFILES)
    msg = str(info.value)
    assert "03_c" in msg and str(tmp_path / "nb" / "03_c.ipynb") in msg
    assert "cell 5" in msg  # markdown, parameters, log, read, failing cell: 5th cell of the source notebook
    assert "ValueError" in msg and "boom in stage c" in msg
    assert info.value.cell_index == 5
    assert _work(tmp_path) == ["01_a", "02_b", "03_c"]  # 04_d never started
    run_dir = tmp_path / "runs" / "r"
    assert (run_dir / "03_c.failed.ipynb").is_file() and not (run_dir / "03_c.ipynb").exists()
    prov = json.loads((run_dir / "provenance.json").read_text(encoding="utf-8"))
    assert prov["stages"]["03_c"]["status"] == "failed" and "boom" in prov["stages"]["03_c"]["error"]
    assert "04_d" not in prov["stages"]


def test_parameter_validation(tmp_path):
    _write_notebooks(tmp_path / "nb")
    with pytest.raises(ValueError, match="no notebook declares parameter 'nope'"):
        _run(tmp_path, params={"nope": 1})
    with pytest.raises(ValueError, match="declares no parameter 'scale'"):
        _run(tmp_path, params={"01_a.scale": 1})
    with pytest.raises(ValueError, match="unknown stage"):
        _run(tmp_path, stages=["09_z"])
    with pytest.raises(ValueError, match="unknown profile"):
        run_study("r", "gpu-huge", runs_dir=tmp_path / "runs", notebooks_dir=tmp_path / "nb",
                  stage_list=STAGES, profiles=PROFILES)
    with pytest.raises(ValueError, match="set by the pipeline"):
        _run(tmp_path, params={"02_b.a_dir": "/elsewhere"})
    with pytest.raises(ValueError, match="--manifest"):
        _run(tmp_path, params={"manifest": "x.csv"})
    with pytest.raises(FileNotFoundError, match="manifest"):
        _run(tmp_path, manifest=tmp_path / "missing.csv")
    assert not (tmp_path / "runs" / "r" / "01_a").exists()  # validation happens before any execution


def test_parse_param_and_source_hash(tmp_path):
    assert parse_param("seed=3") == ("seed", 3)
    assert parse_param("gpu=true") == ("gpu", True)
    assert parse_param("03_training.overrides={\"steps\": 2}") == ("03_training.overrides", {"steps": 2})
    assert parse_param("name=abc") == ("name", "abc")
    with pytest.raises(ValueError):
        parse_param("novalue")
    nb = _nb("seed = 0", "print(seed)")
    nbformat.write(nb, tmp_path / "a.ipynb")
    h = notebook_source_hash(tmp_path / "a.ipynb")
    nb.cells[-1].outputs = [nbformat.v4.new_output("stream", text="0\n")]
    nb.cells[-1].execution_count = 7
    nbformat.write(nb, tmp_path / "a.ipynb")
    assert notebook_source_hash(tmp_path / "a.ipynb") == h  # outputs do not count
    nb.cells[-1].source = "print(seed + 1)"
    nbformat.write(nb, tmp_path / "a.ipynb")
    assert notebook_source_hash(tmp_path / "a.ipynb") != h


def test_study_stage_graph_is_consistent():
    names = [s.name for s in pipeline.STAGES]
    assert names == sorted(names)
    for i, s in enumerate(pipeline.STAGES):
        assert all(names.index(d) < i for d in s.depends)
    assert set(pipeline.PROFILES) == {"tiny", "cpu", "paper"}


# ----------------------------------------------------------------------------- end to end (CI)
def check_study_book(html_dir: Path) -> None:
    """Assert the built book of a study run shows the study's tables and figures (not just pages)."""
    results = (html_dir / "results.html").read_text(encoding="utf-8")
    assert "Table 2: median (Q1, Q3) per set, the paper beside this run" in results
    assert "0.821 (0.674, 0.882)" in results  # the paper's Dice, test set, beside ours
    assert "Table 1 (this run)" in results and "Table 3 (this run)" in results
    assert "AUC comparisons between subgroups" in results
    for fig in ("figure3_overlays.png", "figure4_subgroups.png", "training_curves.png", "timing.png"):
        assert f'src="_images/{fig}"' in results and (html_dir / "_images" / fig).is_file(), fig
    for s in pipeline.STAGES:
        page = (html_dir / "chapters" / f"{s.name}.html").read_text(encoding="utf-8")
        assert "What this run found" in page, s.name
        assert "<img" in page or "<table" in page, s.name
        assert "injected-parameters" not in page
    assert "01_cohort" in (html_dir / "provenance.html").read_text(encoding="utf-8")


@pytest.mark.slow
def test_tiny_study_end_to_end(tmp_path, repo_root):
    """The real study notebooks, tiny profile: papermill run, book build, HTML content, then a no-op re-run."""
    import shutil

    from bmstudy.reporting.book import build_book, remote_assets

    res = run_study("ci", "tiny", runs_dir=tmp_path / "runs", log_output=False)
    assert res.ran == [s.name for s in pipeline.STAGES]
    prov = json.loads((res.run_dir / "provenance.json").read_text(encoding="utf-8"))
    assert all(prov["stages"][s.name]["status"] == "ok" for s in pipeline.STAGES)
    book_dir = tmp_path / "book"
    shutil.copytree(repo_root / "book", book_dir, ignore=shutil.ignore_patterns("_build"))
    index = build_book(res.run_dir, book_dir)
    check_study_book(index.parent)
    assert remote_assets(index.parent) == []
    again = run_study("ci", "tiny", runs_dir=tmp_path / "runs")
    assert again.ran == [] and len(again.skipped) == len(pipeline.STAGES)
