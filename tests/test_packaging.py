"""Packaging promises: consistent pins, the oneDNN switch, the CLI, the layout."""
from __future__ import annotations

import importlib.metadata as md
import re
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*==\s*([A-Za-z0-9_.\-+]+)\s*$")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pyproject_pins() -> dict[str, str]:
    data = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    reqs = list(data["project"]["dependencies"])
    for extra in data["project"].get("optional-dependencies", {}).values():
        reqs += extra
    pins = {}
    for r in reqs:
        m = PIN.match(r)
        assert m, f"pyproject dependency not pinned exactly: {r!r}"
        pins[_norm(m.group(1))] = m.group(2)
    return pins


def _environment_pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "environment.yml").read_text(encoding="utf-8").splitlines():
        item = line.strip()
        if not item.startswith("- "):
            continue
        m = PIN.match(item[2:])
        if m:
            pins[_norm(m.group(1))] = m.group(2)
    return pins


def test_pins_identical_in_pyproject_and_environment():
    a, b = _pyproject_pins(), _environment_pins()
    assert a, "no pins found in pyproject.toml"
    assert a == b, f"only in pyproject: {set(a.items()) - set(b.items())}; only in environment.yml: {set(b.items()) - set(a.items())}"


def test_installed_versions_match_pins():
    wrong = {}
    for name, version in _pyproject_pins().items():
        try:
            got = md.version(name)
        except md.PackageNotFoundError:
            got = None
        if got is None or got.split("+")[0] != version:  # local labels (torch's +cpu) are the same release
            wrong[name] = (version, got)
    assert not wrong, f"installed versions differ from pins (pinned, installed): {wrong}"


def test_volumentations_is_the_3d_library():
    # the PyPI package `volumentations` is an unrelated point-cloud library with the same import name
    dists = {_norm(d.metadata["Name"]) for d in md.distributions()}
    assert "volumentations-3d" in dists
    assert "volumentations" not in dists
    import volumentations

    assert hasattr(volumentations, "ElasticTransform") and hasattr(volumentations, "RandomGamma")


def test_onednn_switch_set_before_tensorflow():
    code = ("import os, sys; os.environ.pop('TF_ENABLE_ONEDNN_OPTS', None); import bmstudy; "
            "assert 'tensorflow' not in sys.modules; print(os.environ['TF_ENABLE_ONEDNN_OPTS'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, encoding="utf-8", check=True)
    assert out.stdout.strip() == "1"


def test_cli_help_is_fast_and_lists_stages():
    code = "import sys; from bmstudy.cli import build_parser; build_parser(); print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, encoding="utf-8", check=True)
    assert out.stdout.strip() == "False", "a stage module imports tensorflow at module level"
    help_text = subprocess.run([sys.executable, "-m", "bmstudy", "--help"], capture_output=True, text=True, encoding="utf-8").stdout
    for cmd in ("validate", "split"):
        assert cmd in help_text


def test_layout():
    for name in ("book", "notebooks", "src/bmstudy", "tests", "benchmarks", "data_manifest.csv", "environment.yml",
                 "pyproject.toml", "README.md", ".ci/run"):
        assert (REPO / name).exists(), f"missing {name}"
