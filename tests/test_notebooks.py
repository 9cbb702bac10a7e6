"""The committed study notebooks: no outputs, a parameters cell, the python3 kernel, parameters that match
the study's stage graph (a notebook reading another stage's folder must depend on it), every setting taken
from the run's plan (never declared as a parameter), one setup call, and no function or class defined in a
notebook (logic lives in the library)."""
from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import nbformat
import pytest

from bmstudy import plan as study_plan
from bmstudy.study import STAGES, notebook_parameters

NB_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NB_DIR.glob("*.ipynb"))
STAGE_BY_NOTEBOOK = {s.notebook: s for s in STAGES}
SETUP_CALL = "bmstudy.study.notebook_setup(out_dir, plan=plan, profile=profile)"
#: Parameters every notebook declares besides its upstream ``*_dir``s.
COMMON_PARAMETERS = {"plan", "profile", "out_dir"}


def _plan_settings() -> set[str]:
    """Every setting of a study plan: the top-level fields, the section names and every section field."""
    sections = (study_plan.SynthParams, study_plan.PreprocessParams, study_plan.TrainConfig,
                study_plan.InferenceParams, study_plan.EvalParams)
    names = {f.name for f in dataclasses.fields(study_plan.StudyPlan)}
    for cls in sections:
        names |= {f.name for f in dataclasses.fields(cls)}
    return names - {"profile", "name"}  # ``profile`` picks the plan without a plan file; ``name`` is a label


PLAN_SETTINGS = _plan_settings()


def _code(cell) -> str:
    """A code cell's source without IPython magics / shell lines."""
    return "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))


def _code_cells(path: Path, parameters: bool = False) -> list[tuple[int, str]]:
    nb = nbformat.read(path, as_version=4)
    return [(i, _code(c)) for i, c in enumerate(nb.cells) if c.cell_type == "code"
            and parameters == ("parameters" in c.metadata.get("tags", []))]


def test_every_stage_has_its_notebook():
    assert NOTEBOOKS, f"no notebooks in {NB_DIR}"
    assert sorted(STAGE_BY_NOTEBOOK) == [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name} cell {i + 1} has outputs; clear them before committing"
            assert cell.execution_count is None, f"{path.name} cell {i + 1} has an execution count"
    assert nb.metadata["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameters_cell_and_narrative(path):
    nb = nbformat.read(path, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0].cell_type == "code", f"{path.name}: need exactly one code cell tagged 'parameters'"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# "), "first cell: a '# title'"
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "What the paper did" in text and "What this run found" in text
    for i, cell in enumerate(nb.cells):  # every code cell parses (IPython magics stripped)
        if cell.cell_type == "code":
            ast.parse(_code(cell), filename=f"{path.name} cell {i + 1}")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameters_match_stage_graph(path):
    stage = STAGE_BY_NOTEBOOK[path.name]
    declared = notebook_parameters(path)
    assert "out_dir" in declared, f"{path.name}: every stage writes to out_dir"
    by_key = {s.dir_param: s.name for s in STAGES}
    for name in declared:
        if name in by_key:
            assert by_key[name] in stage.depends, f"{path.name} reads {name} but {stage.name} does not depend on {by_key[name]}"
        elif name.endswith("_dir") and name != "out_dir":
            pytest.fail(f"{path.name}: {name} is not the output folder of any stage")
    if "manifest" in declared:
        assert not stage.depends, f"{path.name}: only the cohort stage (no upstream stage) takes the data manifest"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_settings_come_from_the_plan(path):
    """No plan setting (seed, gpu, n_jobs, threshold, ..., *_overrides) is a notebook parameter; the notebook
    takes them from ``ctx.plan``, and a plan setting read as a bare name must be bound in the notebook itself."""
    declared = notebook_parameters(path)
    assert COMMON_PARAMETERS <= set(declared), f"{path.name}: declare {sorted(COMMON_PARAMETERS - set(declared))}"
    defaults = {k: ast.literal_eval(declared[k]) for k in ("plan", "profile")}
    assert defaults["plan"] == "" and defaults["profile"] in study_plan.PROFILES, \
        f"{path.name}: plan = '' (the run folder's plan.json) and profile = a study profile, got {defaults}"
    as_params = sorted(n for n in declared if n in PLAN_SETTINGS or n.endswith("_overrides"))
    assert not as_params, f"{path.name} declares plan setting(s) {as_params} as parameters; read them from ctx.plan"
    loaded, bound = set(), set(declared)
    for _, src in _code_cells(path):
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.Name):
                (bound if isinstance(node.ctx, ast.Store) else loaded).add(node.id)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                bound |= {(a.asname or a.name).partition(".")[0] for a in node.names}
    unbound = sorted((loaded & PLAN_SETTINGS) - bound)
    assert not unbound, f"{path.name} uses plan setting(s) {unbound} that nothing in the notebook defines"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_plan_parts_read_are_in_the_stage_fingerprint(path):
    """Every ``P.<key>`` a notebook reads is one of its stage's ``plan_sections`` (so changing it re-runs the
    stage); ``n_jobs`` is exempt: parallelism does not change results."""
    stage = STAGE_BY_NOTEBOOK[path.name]
    read = set()
    for _, src in _code_cells(path):
        read |= {n.attr for n in ast.walk(ast.parse(src)) if isinstance(n, ast.Attribute)
                 and isinstance(n.value, ast.Name) and n.value.id == "P"}
    extra = sorted(read - set(stage.plan_sections) - {"n_jobs"})
    assert not extra, f"{path.name} reads plan part(s) {extra} that {stage.name}'s plan_sections leave out"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_one_setup_call_before_any_stage_code(path):
    cells = _code_cells(path)
    calls = [i for i, src in cells if "notebook_setup(" in src]
    assert len(calls) == 1, f"{path.name}: need exactly one notebook_setup call, found it in cells {calls}"
    assert calls[0] == cells[0][0], f"{path.name}: the setup call must be the first cell after the parameters"
    assert SETUP_CALL in cells[0][1], f"{path.name}: the setup cell must call {SETUP_CALL}"
    for i, src in cells:
        assert "CUDA_VISIBLE_DEVICES" not in src and "notebook_reporter" not in src, \
            f"{path.name} cell {i + 1}: GPU hiding and the book reporter belong to notebook_setup"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_function_or_class_in_notebooks(path):
    """Notebooks are narrative + parameters + calls + display: logic lives in bmstudy (tested there)."""
    for i, src in _code_cells(path) + _code_cells(path, parameters=True):
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
                what = "a lambda" if isinstance(node, ast.Lambda) else f"{type(node).__name__} {node.name!r}"
                pytest.fail(f"{path.name} cell {i + 1} (line {node.lineno}) defines {what}; "
                            "move it into the library (e.g. bmstudy.reporting)")


def test_definition_check_catches_functions(tmp_path):
    """The check above really sees a ``def`` and a ``lambda`` in a code cell (guards against a vacuous test)."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("%matplotlib inline\ndef f(a):\n    return a\n"),
                nbformat.v4.new_code_cell("g = sorted([2, 1], key=lambda v: -v)")]
    path = tmp_path / "bad.ipynb"
    nbformat.write(nb, path)
    with pytest.raises(pytest.fail.Exception, match="defines FunctionDef 'f'"):
        test_no_function_or_class_in_notebooks(path)
    nb.cells = [nb.cells[0], nb.cells[2]]
    nbformat.write(nb, path)
    with pytest.raises(pytest.fail.Exception, match="defines a lambda"):
        test_no_function_or_class_in_notebooks(path)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_a_plan_section_bound_to_a_name_reaches_the_library_whole(path):
    """``inf = P.inference``: ``inf`` is passed whole to a call (``params=inf``) or every one of its fields is
    read, so no setting of the plan (say ``precision``) is silently left at the function's default."""
    sections = {"synth": study_plan.SynthParams, "preprocess": study_plan.PreprocessParams,
                "train": study_plan.TrainConfig, "inference": study_plan.InferenceParams,
                "evaluation": study_plan.EvalParams}
    trees = [ast.parse(src) for _, src in _code_cells(path)]
    nodes = [n for t in trees for n in ast.walk(t)]
    bound = {n.targets[0].id: n.value.attr for n in nodes if isinstance(n, ast.Assign) and len(n.targets) == 1
             and isinstance(n.targets[0], ast.Name) and isinstance(n.value, ast.Attribute)
             and isinstance(n.value.value, ast.Name) and n.value.value.id == "P" and n.value.attr in sections}
    for name, section in bound.items():
        passed = any(isinstance(n, ast.Call) and any(isinstance(a, ast.Name) and a.id == name
                                                     for a in [*n.args, *(k.value for k in n.keywords)])
                     for n in nodes)
        read = {n.attr for n in nodes if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
                and n.value.id == name}
        missing = sorted({f.name for f in dataclasses.fields(sections[section])} - read)
        assert passed or not missing, (f"{path.name}: {name} = P.{section} is neither passed whole to a call nor "
                                       f"read field by field; not read: {missing}")
