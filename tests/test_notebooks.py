"""The committed study notebooks: no outputs, a parameters cell, the python3 kernel, and parameters
that match the pipeline's stage graph (a notebook reading another stage's folder must depend on it)."""
from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest

from bmstudy.study import runner as pipeline

NB_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NB_DIR.glob("*.ipynb"))
STAGE_BY_NOTEBOOK = {s.notebook: s for s in pipeline.STAGES}


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
            src = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))
            ast.parse(src, filename=f"{path.name} cell {i + 1}")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameters_match_stage_graph(path):
    stage = STAGE_BY_NOTEBOOK[path.name]
    declared = pipeline.notebook_parameters(path)
    assert "out_dir" in declared, f"{path.name}: every stage writes to out_dir"
    by_key = {s.dir_param: s.name for s in pipeline.STAGES}
    for name in declared:
        if name in by_key:
            assert by_key[name] in stage.depends, f"{path.name} reads {name} but {stage.name} does not depend on {by_key[name]}"
        elif name.endswith("_dir") and name != "out_dir":
            pytest.fail(f"{path.name}: {name} is not the output folder of any stage")
    study_keys = set().union(*pipeline.PROFILES.values()) | {"manifest"}
    used = set()
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type == "code" and "parameters" not in cell.metadata.get("tags", []):
            src = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))
            used |= {n.id for n in ast.walk(ast.parse(src)) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    undeclared = (used & study_keys) - set(declared)
    assert not undeclared, f"{path.name} uses study setting(s) {sorted(undeclared)} without declaring them as parameters"
