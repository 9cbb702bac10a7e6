"""bmstudy.study: papermill execution, skip / re-run logic, plan overrides and fingerprints, failure
reporting, provenance, ``bmstudy plan``.

Uses tiny dummy notebooks (no TensorFlow); each executed notebook costs one kernel start (~5 s).
"""
from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from toy_notebooks import log_cell, toy_notebook

from bmstudy import plan as plan_mod
from bmstudy.cli import main as cli_main
from bmstudy.study import runner as pipeline
from bmstudy.study import (Stage, StageError, is_plan_key, notebook_source_hash, parse_param, run_study,
                           split_params)
from bmstudy.study.fingerprint import changed_inputs, fingerprint, input_digest, stage_inputs

STAGES = (
    Stage("01_a", "01_a.ipynb"),
    Stage("02_b", "02_b.ipynb", ("01_a",)),
    Stage("03_c", "03_c.ipynb", ("02_b",)),
)
#: The same toy study, with the plan sections each stage reads (they enter the fingerprints).
PLAN_STAGES = (
    Stage("01_a", "01_a.ipynb", plan_sections=("seed", "synth")),
    Stage("02_b", "02_b.ipynb", ("01_a",), plan_sections=("train",)),
    Stage("03_c", "03_c.ipynb", ("02_b",)),
)


def _nb(params: str, *cells: str) -> nbformat.NotebookNode:
    return toy_notebook(params, *cells, title='dummy stage')


_log = log_cell

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
    kw.setdefault("stage_list", STAGES)
    return run_study("r", "tiny", params=params, runs_dir=tmp_path / "runs", notebooks_dir=tmp_path / "nb", **kw)


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
                  runs_dir=tmp_path / "runs", notebooks_dir=tmp_path / "nb", stage_list=stages)
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
        run_study("r", "gpu-huge", runs_dir=tmp_path / "runs", notebooks_dir=tmp_path / "nb", stage_list=STAGES)
    with pytest.raises(ValueError, match="set by the pipeline"):
        _run(tmp_path, params={"02_b.a_dir": "/elsewhere"})
    with pytest.raises(ValueError, match="--manifest"):
        _run(tmp_path, params={"manifest": "x.csv"})
    with pytest.raises(FileNotFoundError, match="manifest"):
        _run(tmp_path, manifest=tmp_path / "missing.csv")
    with pytest.raises(ValueError, match="nope"):  # a plan override the plan does not know
        _run(tmp_path, params={"train.nope": 1})
    with pytest.raises(ValueError, match="set by the pipeline"):
        _run(tmp_path, params={"02_b.plan": "/elsewhere/plan.json"})
    with pytest.raises(ValueError, match="--profile"):
        _run(tmp_path, params={"profile": "paper"})
    assert not (tmp_path / "runs" / "r" / "01_a").exists()  # validation happens before any execution
    assert not (tmp_path / "runs" / "r" / "plan.json").exists()


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
    assert set(plan_mod.PROFILES) == {"tiny", "cpu", "paper"}
    sections = {s.name: s.plan_sections for s in pipeline.STAGES}
    assert sections == {"01_cohort": ("seed", "test_fraction", "synth"), "02_preprocessing": ("preprocess", "n_jobs"),
                        "03_training": ("train", "gpu", "seed"), "04_inference": ("inference", "gpu"),
                        "05_metrics": ("evaluation",), "06_subgroups": ("evaluation", "seed"),
                        "07_timing": ("evaluation",)}  # 07 reads P.evaluation.splits
    from bmstudy.reporting.book import STAGE_DESCRIPTIONS

    assert all(s.description and "\n" not in s.description for s in pipeline.STAGES)
    assert STAGE_DESCRIPTIONS == {s.name: s.description for s in pipeline.STAGES}
    with pytest.raises(ValueError, match="unknown plan section"):
        Stage("09_x", "09_x.ipynb", plan_sections=("training",))


def test_split_params_plan_keys_versus_notebook_parameters():
    assert is_plan_key("seed") and is_plan_key("train.epochs") and is_plan_key("inference.blend")
    assert not is_plan_key("scale") and not is_plan_key("03_training.foo") and not is_plan_key("training.foo")
    assert not is_plan_key("profile") and not is_plan_key("train")
    plan_ov, nb = split_params({"seed": 1, "train.epochs": 2, "inference.blend": "gaussian", "n_jobs": 1,
                                "03_training.foo": 3, "scale": 4, "04_inference.batch_size": 2})
    assert plan_ov == {"seed": 1, "train.epochs": 2, "inference.blend": "gaussian", "n_jobs": 1}
    assert nb == {"03_training.foo": 3, "scale": 4, "04_inference.batch_size": 2}
    with pytest.raises(ValueError, match="--profile"):
        split_params({"profile": "paper"})


def test_fingerprint_covers_only_the_plan_sections_a_stage_reads():
    stage = Stage("03_t", "03_t.ipynb", plan_sections=("train", "seed"))
    other = Stage("05_e", "05_e.ipynb", plan_sections=("evaluation",))
    base = plan_mod.resolve_plan("tiny")
    epochs = plan_mod.resolve_plan("tiny", {"train.epochs": 4})
    n_boot = plan_mod.resolve_plan("tiny", {"evaluation.n_boot": 5})

    def inputs(st, plan, **kw):
        args = {"notebook_hash": "n" * 64, "parameters": {"x": 1}, "manifest_hash": None, "upstream": {}, **kw}
        return stage_inputs(st, plan=plan, **args)

    assert fingerprint(inputs(stage, base)) == fingerprint(inputs(stage, n_boot))
    assert fingerprint(inputs(stage, base)) != fingerprint(inputs(stage, epochs))
    assert fingerprint(inputs(other, base)) != fingerprint(inputs(other, n_boot))
    assert fingerprint(inputs(other, base)) == fingerprint(inputs(other, epochs))
    assert inputs(stage, base)["plan"] == {"train": base.section("train"), "seed": 0}
    for kw in ({"parameters": {"x": 2}}, {"notebook_hash": "m" * 64}, {"upstream": {"01": "f" * 64}},
               {"manifest_hash": "a" * 64}):
        assert fingerprint(inputs(stage, base, **kw)) != fingerprint(inputs(stage, base))
    assert changed_inputs(input_digest(inputs(stage, base)), input_digest(inputs(stage, epochs))) == ["plan.train"]
    assert changed_inputs(input_digest(inputs(stage, base)), input_digest(inputs(stage, base, parameters={}))) == ["params"]
    assert changed_inputs(None, input_digest(inputs(stage, base))) == []


def _write_plan_notebooks(folder: Path) -> Path:
    """Toy stages that read the run's plan.json like the study notebooks (ctx.plan)."""
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(_nb("out_dir = ''\nplan = ''\nprofile = 'cpu'\nwork_log = ''", _log("01_a"),
                       "import json\nfrom pathlib import Path\nseed = json.loads(Path(plan).read_text())['seed']\n"
                       "Path(out_dir, 'value.txt').write_text(f'{profile} {seed}', encoding='utf-8')"),
                   folder / "01_a.ipynb")
    nbformat.write(_nb("out_dir = ''\na_dir = ''\nplan = ''\nwork_log = ''", _log("02_b"),
                       "from pathlib import Path\nfrom bmstudy.plan import load_plan\n"
                       "Path(out_dir, 'value.txt').write_text(str(load_plan(plan).train.epochs), encoding='utf-8')"),
                   folder / "02_b.ipynb")
    nbformat.write(_nb("out_dir = ''\nb_dir = ''\nwork_log = ''", _log("03_c")), folder / "03_c.ipynb")
    return folder


def test_plan_written_per_run_and_plan_overrides_rerun_only_their_readers(tmp_path):
    _write_plan_notebooks(tmp_path / "nb")
    run_dir = tmp_path / "runs" / "r"
    first = _run(tmp_path, stage_list=PLAN_STAGES)
    assert first.ran == ["01_a", "02_b", "03_c"] and _work(tmp_path) == ["01_a", "02_b", "03_c"]
    tiny = plan_mod.resolve_plan("tiny")
    assert json.loads((run_dir / "plan.json").read_text(encoding="utf-8")) == tiny.to_dict() and first.plan == tiny
    prov = json.loads((run_dir / "provenance.json").read_text(encoding="utf-8"))
    assert prov["plan"] == {"path": "plan.json", "hash": tiny.hash()}
    params = prov["stages"]["01_a"]["parameters"]
    assert params["plan"] == str(run_dir / "plan.json") and params["profile"] == "tiny"
    assert "plan" not in prov["stages"]["03_c"]["parameters"]  # only to notebooks declaring it
    assert prov["stages"]["02_b"]["plan_sections"] == ["train"]
    assert (run_dir / "01_a" / "value.txt").read_text(encoding="utf-8") == "tiny 0"
    assert (run_dir / "02_b" / "value.txt").read_text(encoding="utf-8") == str(tiny.train.epochs)

    second = _run(tmp_path, stage_list=PLAN_STAGES, params={"train.epochs": 3})  # read by 02_b only
    assert second.ran == ["02_b", "03_c"] and second.skipped == ["01_a"]
    assert _work(tmp_path) == ["02_b", "03_c"]
    assert (run_dir / "02_b" / "value.txt").read_text(encoding="utf-8") == "3"
    assert [s.reason for s in second.stages] == ["up to date", "inputs changed: plan.train", "inputs changed: upstream 02_b"]
    plan_now = json.loads((run_dir / "plan.json").read_text(encoding="utf-8"))
    assert plan_now["train"]["epochs"] == 3
    prov = json.loads((run_dir / "provenance.json").read_text(encoding="utf-8"))
    assert prov["plan"]["hash"] == plan_mod.resolve_plan("tiny", {"train.epochs": 3}).hash() != tiny.hash()
    assert prov["user_parameters"]["train.epochs"] == 3

    third = _run(tmp_path, stage_list=PLAN_STAGES, params={"train.epochs": 3, "evaluation.n_boot": 7})
    assert third.ran == [] and _work(tmp_path) == []  # no stage reads the evaluation section
    assert json.loads((run_dir / "plan.json").read_text(encoding="utf-8"))["evaluation"]["n_boot"] == 7

    fourth = _run(tmp_path, stage_list=PLAN_STAGES, params={"train.epochs": 3, "seed": 5})
    assert fourth.ran == ["01_a", "02_b", "03_c"]  # seed: read by 01_a, and it seeds training
    assert (run_dir / "01_a" / "value.txt").read_text(encoding="utf-8") == "tiny 5"


def test_plan_settings_reach_notebooks_that_declare_them(tmp_path):
    _write_notebooks(tmp_path / "nb")  # 01_a declares `seed`
    run_dir = tmp_path / "runs" / "r"
    res = _run(tmp_path, params={"seed": 4})
    assert res.ran == ["01_a", "02_b", "03_c"]
    assert (run_dir / "03_c" / "value.txt").read_text(encoding="utf-8") == str((4 + 1) * 2 + 100)
    prov = json.loads((run_dir / "provenance.json").read_text(encoding="utf-8"))
    assert prov["stages"]["01_a"]["parameters"]["seed"] == 4 and "seed" not in prov["stages"]["02_b"]["parameters"]
    assert json.loads((run_dir / "plan.json").read_text(encoding="utf-8"))["seed"] == 4


def test_plan_command_prints_the_resolved_plan(capsys):
    assert cli_main(["plan", "--profile", "cpu", "--param", "train.epochs=3", "--param", "seed=2"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == plan_mod.resolve_plan("cpu", {"train.epochs": 3, "seed": 2}).to_dict()
    assert printed["train"]["epochs"] == 3 and printed["train"]["seed"] == 2 and printed["profile"] == "cpu"
    assert cli_main(["plan", "--profile", "tiny"]) == 0
    assert json.loads(capsys.readouterr().out) == plan_mod.resolve_plan("tiny").to_dict()
    assert cli_main(["plan", "--param", "03_training.foo=1"]) == 1
    assert "not plan keys" in capsys.readouterr().err
    assert cli_main(["plan", "--param", "train.nope=1"]) == 1
    assert "nope" in capsys.readouterr().err


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
    assert (res.run_dir / "plan.json").is_file() and prov["plan"]["hash"] == plan_mod.resolve_plan("tiny").hash()
    index = build_book(res.run_dir, book_dir)
    check_study_book(index.parent)
    assert remote_assets(index.parent) == []
    provenance_html = (index.parent / "provenance.html").read_text(encoding="utf-8")
    assert "Study plan" in provenance_html and "epochs" in provenance_html
    for page in [index.parent / "provenance.html", *(index.parent / "chapters").glob("*.html")]:
        text = page.read_text(encoding="utf-8")
        assert str(tmp_path) not in text and str(repo_root) not in text, page  # no absolute machine paths
    again = run_study("ci", "tiny", runs_dir=tmp_path / "runs")
    assert again.ran == [] and len(again.skipped) == len(pipeline.STAGES)
