"""The package layout's guarantees: no import cycles, thin notebooks, TensorFlow-free numpy parts."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PKG = SRC / "bmstudy"

STAGE_PACKAGES = ("io", "synthetic", "preprocessing", "training", "inference", "evaluation", "statistics",
                  "reporting", "study")


def _modules() -> dict[str, Path]:
    return {".".join(p.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__"): p
            for p in PKG.rglob("*.py")}


def _imports(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """bmstudy modules imported anywhere in ``path`` (module level and inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    deps: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parts = pkg.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                for cand in (f"{base}.{alias.name}", base):
                    if cand in mods:
                        deps.add(cand)
                        break
        elif isinstance(node, ast.Import):
            deps.update(a.name for a in node.names if a.name in mods)
    return deps


def import_graph() -> dict[str, set[str]]:
    """Module -> the bmstudy modules it imports (package ``__init__`` files are re-export hubs: left out)."""
    mods = _modules()
    return {name: {d for d in _imports(name, p, mods) if d != name and mods[d].name != "__init__.py"}
            for name, p in mods.items() if p.name != "__init__.py"}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every back edge of a depth-first walk, as the cycle it closes."""
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(u: str, stack: list[str]) -> None:
        state[u] = 1
        stack.append(u)
        for v in sorted(graph.get(u, ())):
            if state.get(v) == 1:
                cycles.append(stack[stack.index(v):] + [v])
            elif not state.get(v):
                visit(v, stack)
        stack.pop()
        state[u] = 2

    for u in sorted(graph):
        if not state.get(u):
            visit(u, [])
    return cycles


def test_cycle_finder_finds_a_planted_cycle():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_between_modules():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_stage_packages_exist_and_export_their_api():
    for name in STAGE_PACKAGES:
        init = PKG / name / "__init__.py"
        assert init.is_file(), f"missing stage package bmstudy.{name}"
        tree = ast.parse(init.read_text(encoding="utf-8"))
        assert any(isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in n.targets)
                   for n in tree.body), f"bmstudy/{name}/__init__.py must declare __all__"
    assert (PKG / "plan" / "__init__.py").is_file() and (PKG / "cases.py").is_file()


def test_profiles_live_only_in_plan():
    offenders = []
    for path in PKG.rglob("*.py"):
        if path.parent == PKG / "plan":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                value = node.value
                if any(getattr(t, "id", "") in ("PROFILES", "SYNTH_PRESETS") for t in targets) and \
                        isinstance(value, ast.Dict):
                    offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, f"profile tables outside bmstudy/plan/: {offenders}"


NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _code_cells(path: Path) -> list[str]:
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_cells_define_no_function_or_class(path):
    for i, src in enumerate(_code_cells(path)):
        code = "\n".join(line for line in src.splitlines() if not line.lstrip().startswith(("%", "!")))
        defs = [n.name for n in ast.walk(ast.parse(code))
                if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
        assert not defs, f"{path.name} code cell {i}: defines {defs}; move it into the library"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_hold_no_profile_tables(path):
    for i, src in enumerate(_code_cells(path)):
        for token in ("PROFILE_PARAMS", "SYNTH_PROFILE", "from_profile("):
            assert token not in src, f"{path.name} code cell {i}: {token!r}: settings come from the plan"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_are_valid_nbformat_with_cell_ids(path):
    """nbformat 4.5 cells need unique ids (papermill warned 'Cell is missing an id field' on every run)."""
    import nbformat

    nb = json.loads(path.read_text(encoding="utf-8"))
    ids = [c.get("id") for c in nb["cells"]]
    assert None not in ids, f"{path.name}: cells {[i for i, x in enumerate(ids) if x is None]} have no id"
    assert len(set(ids)) == len(ids), f"{path.name}: duplicate cell ids"
    nbformat.validate(nbformat.reads(path.read_text(encoding="utf-8"), as_version=4))


def test_sliding_window_imports_no_tensorflow():
    code = ("import sys; import bmstudy.inference.sliding_window; import bmstudy.plan, bmstudy.cases; "
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, encoding="utf-8", check=True)
    assert out.stdout.split() == ["False", "False"], out.stdout + out.stderr
