"""Runs you can trust (issue 10, runner side): content fingerprints (library code, input files,
packages), ``--dry-run``, resume after SIGKILL, one ``bmstudy run`` per run folder, the case summary
and exit codes, one-line I/O errors.

Toy notebooks only (no TensorFlow). The subprocess tests run the real ``bmstudy run`` command on a
toy notebooks folder holding one notebook per real study stage (``--notebooks-dir``).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from toy_notebooks import log_cell, toy_notebook

from bmstudy.cli import EXIT_FAILED, EXIT_OK, EXIT_PARTIAL
from bmstudy.cli import main as cli_main
from bmstudy.study import STAGES, Stage, run_study
from bmstudy.study import runner as pipeline
from bmstudy.study.accounting import format_summary, has_problems, table_summary

TOY_STAGES = (
    Stage("01_a", "01_a.ipynb", plan_sections=("seed",)),
    Stage("02_b", "02_b.ipynb", ("01_a",), status_table="report.csv"),
    Stage("03_c", "03_c.ipynb", ("02_b",)),
)


def _nb(params: str, *cells: str) -> nbformat.NotebookNode:
    return toy_notebook(params, *cells, title='toy stage')


_log = log_cell

#: Loads a module file as ``bmstudy._toy_<name>`` (a bmstudy module the test can edit without touching src/).
_LOAD = ("import importlib.util, sys\n"
         "spec = importlib.util.spec_from_file_location('bmstudy._toy_{n}', {path!r})\n"
         "mod = importlib.util.module_from_spec(spec); sys.modules['bmstudy._toy_{n}'] = mod\n"
         "spec.loader.exec_module(mod)")


def _toy(tmp_path: Path) -> Path:
    nb_dir = tmp_path / "nb"
    nb_dir.mkdir()
    (tmp_path / "toy_eval.py").write_text("# evaluation helper\nVALUE = 7\n", encoding="utf-8")
    (tmp_path / "toy_prep.py").write_text("# preprocessing helper\nVALUE = 1\n", encoding="utf-8")
    nbformat.write(_nb("out_dir = ''\nmanifest = ''\nwork_log = ''", _log("01_a"), "import bmstudy.plan"),
                   nb_dir / "01_a.ipynb")
    nbformat.write(_nb("out_dir = ''\na_dir = ''\nwork_log = ''", _log("02_b"),
                       _LOAD.format(n="prep", path=str(tmp_path / "toy_prep.py")),
                       "from pathlib import Path\nPath(out_dir, 'report.csv').write_text("
                       "'patient_id,status,reason\\nP1,ok,\\nP2,excluded,P2: mask is empty (m.nii.gz)\\n')"),
                   nb_dir / "02_b.ipynb")
    nbformat.write(_nb("out_dir = ''\nb_dir = ''\nwork_log = ''", _log("03_c"),
                       _LOAD.format(n="eval", path=str(tmp_path / "toy_eval.py"))),
                   nb_dir / "03_c.ipynb")
    return nb_dir


def _run(tmp_path: Path, **kw):
    params = {"work_log": str(tmp_path / "work.log"), **kw.pop("params", {})}
    kw.setdefault("stage_list", TOY_STAGES)
    return run_study("r", "tiny", params=params, runs_dir=tmp_path / "runs", notebooks_dir=tmp_path / "nb", **kw)


def _work(tmp_path: Path) -> list[str]:
    log = tmp_path / "work.log"
    out = log.read_text(encoding="utf-8").split() if log.exists() else []
    log.unlink(missing_ok=True)
    return out


def test_library_code_input_files_and_packages_enter_the_fingerprint(tmp_path, monkeypatch):
    """Findings 1 and 2: a comment in a module only the last stage loaded re-runs that stage only; a
    replaced image at an unchanged path re-runs the stage reading the manifest and its dependents."""
    _toy(tmp_path)
    (tmp_path / "img").mkdir()
    for i in (1, 2, 3):
        (tmp_path / "img" / f"p{i}.nii.gz").write_bytes(b"image %d" % i)
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("patient_id,image,mask\n" + "".join(f"P{i},img/p{i}.nii.gz,img/p{i}.nii.gz\n"
                                                          for i in (1, 2, 3)), encoding="utf-8")
    dry = _run(tmp_path, manifest=manifest, dry_run=True)
    assert dry.would_run == ["01_a", "02_b", "03_c"] and not (tmp_path / "runs").exists()  # nothing written
    first = _run(tmp_path, manifest=manifest)
    assert first.ran == ["01_a", "02_b", "03_c"] and _work(tmp_path) == ["01_a", "02_b", "03_c"]
    prov = json.loads((first.run_dir / "provenance.json").read_text(encoding="utf-8"))
    assert "bmstudy/plan/__init__.py" in prov["stages"]["01_a"]["src_files"]  # recorded from the kernel's sys.modules
    assert "bmstudy/_toy_eval.py" in prov["stages"]["03_c"]["src_files"]
    assert "bmstudy/_toy_eval.py" not in prov["stages"]["02_b"]["src_files"]
    assert len(prov["stages"]["01_a"]["inputs"]["files"]) == 3 and prov["stages"]["01_a"]["inputs"]["packages"]
    assert (first.run_dir / pipeline.INPUT_HASH_CACHE).is_file()
    assert _run(tmp_path, manifest=manifest).ran == [] and _work(tmp_path) == []

    with (tmp_path / "toy_eval.py").open("a", encoding="utf-8") as fh:
        fh.write("# a comment only\n")
    dry = _run(tmp_path, manifest=manifest, dry_run=True)
    assert [(s.name, s.action, s.reason) for s in dry.stages] == [
        ("01_a", "skipped", "up to date"), ("02_b", "skipped", "up to date"),
        ("03_c", "would run", "src changed: bmstudy/_toy_eval.py")]
    res = _run(tmp_path, manifest=manifest)
    assert res.ran == ["03_c"] and res.skipped == ["01_a", "02_b"] and _work(tmp_path) == ["03_c"]

    (tmp_path / "toy_prep.py").write_text("# preprocessing helper, edited\nVALUE = 1\n", encoding="utf-8")
    res = _run(tmp_path, manifest=manifest)
    assert res.ran == ["02_b", "03_c"] and res.stages[1].reason == "src changed: bmstudy/_toy_prep.py"
    assert _work(tmp_path) == ["02_b", "03_c"]

    time.sleep(0.01)
    (tmp_path / "img" / "p2.nii.gz").write_bytes(b"image 2, replaced")  # same path, manifest untouched
    res = _run(tmp_path, manifest=manifest)
    assert res.ran == ["01_a", "02_b", "03_c"] and res.stages[0].reason == "1 input file changed"
    assert _work(tmp_path) == ["01_a", "02_b", "03_c"]

    real = pipeline.package_versions(pipeline.FINGERPRINT_PACKAGES)
    assert "numpy" in real and "jupyter-book" not in real
    monkeypatch.setattr(pipeline, "package_versions", lambda names: {**real, "numpy": "0.0.1"})
    res = _run(tmp_path, manifest=manifest, dry_run=True)
    assert res.would_run == ["01_a", "02_b", "03_c"] and res.stages[0].reason.startswith("packages changed: numpy")


def test_case_summary_printed_stored_and_exit_code_3(tmp_path, capsys):
    _toy(tmp_path)
    res = _run(tmp_path)
    assert res.case_summary == {"02_b": {"table": "02_b/report.csv", "n": 2, "counts": {"ok": 1, "excluded": 1},
                                         "reasons": ["P2: mask is empty (m.nii.gz)"]}}
    assert has_problems(res.case_summary) and "1 ok, 1 excluded" in format_summary(res.case_summary)
    prov = json.loads((res.run_dir / "provenance.json").read_text(encoding="utf-8"))
    assert prov["case_summary"] == res.case_summary
    again = _run(tmp_path)  # skipped stages are summarised too: the results are still theirs
    assert again.ran == [] and again.case_summary == res.case_summary


def test_table_summary_reads_error_columns(tmp_path):
    p = tmp_path / "synth_status.csv"
    p.write_text("patient_id,status,seconds,error\nA,ok,1,\nB,failed,2,ValueError: B: bad\nC,failed,1,\n",
                 encoding="utf-8")
    s = table_summary(p)
    assert s["counts"] == {"ok": 1, "failed": 2} and s["reasons"] == ["ValueError: B: bad", "C: (no reason recorded)"]


# ----------------------------------------------------------------------------- real `bmstudy run` processes
def _study_toy(folder: Path) -> Path:
    """One toy notebook per real study stage; 01_cohort writes ``n_cases`` case files, ``delay`` s each, inside
    an atomic write (so a kill leaves a temp file), skipping cases already written (resume)."""
    folder.mkdir(parents=True, exist_ok=True)
    by_name = {s.name: s for s in STAGES}
    for s in STAGES:
        params = "out_dir = ''\nwork_log = ''\ndelay = 0.0\nn_cases = 3\n" + "".join(
            f"{by_name[d].dir_param} = ''\n" for d in s.depends)
        cells = [_log(s.name)]
        if s.name == "01_cohort":
            cells.append("import time\nfrom pathlib import Path\nfrom bmstudy.utils import atomic_path\n"
                         "for i in range(n_cases):\n"
                         "    out = Path(out_dir, f'case{i}.txt')\n"
                         "    if out.exists():\n        continue\n"
                         "    with atomic_path(out) as tmp:\n"
                         "        tmp.write_text('x')\n        time.sleep(delay)\n"
                         "    with open(work_log, 'a') as fh:\n        fh.write(f'case{i}\\n')")
        nbformat.write(_nb(params, *cells), folder / s.notebook)
    return folder


def _bmstudy(tmp_path: Path, *args: str, **kw) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "bmstudy.cli", "run", "--name", "r", "--profile", "tiny", "--no-book",
           "--runs-dir", str(tmp_path / "runs"), "--notebooks-dir", str(tmp_path / "nb"),
           "--param", f"work_log={tmp_path / 'work.log'}", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, encoding="utf-8",
                            start_new_session=True, **kw)


def _wait_for(cond, timeout: float = 120.0) -> None:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError("condition not reached")
        time.sleep(0.2)


def _done_cases(tmp_path: Path) -> list[str]:
    log = tmp_path / "work.log"
    return [w for w in (log.read_text(encoding="utf-8").split() if log.exists() else []) if w.startswith("case")]


def test_sigkill_during_a_stage_resumes_and_keeps_outputs(tmp_path):
    """Finding 5: a run killed with SIGKILL mid-stage; the re-run keeps the finished cases and continues."""
    _study_toy(tmp_path / "nb")
    proc = _bmstudy(tmp_path, "--stages", "01", "--param", "delay=1.5", "--param", "n_cases=6")
    _wait_for(lambda: len(_done_cases(tmp_path)) >= 2)
    os.kill(proc.pid, signal.SIGKILL)  # the runner only, as the OOM killer would; its kernel follows it
    proc.wait(timeout=30)
    done_before = _done_cases(tmp_path)
    stage_dir = tmp_path / "runs" / "r" / "01_cohort"
    prov = json.loads((tmp_path / "runs" / "r" / "provenance.json").read_text(encoding="utf-8"))
    assert prov["stages"]["01_cohort"]["status"] == "running"
    time.sleep(3)  # the orphaned kernel notices its parent is gone (ipykernel polls every second)
    kept = sorted(p.name for p in stage_dir.glob("case*.txt"))
    assert len(kept) >= len(done_before) >= 2

    (tmp_path / "work.log").unlink()
    again = _bmstudy(tmp_path, "--stages", "01", "--param", "delay=1.5", "--param", "n_cases=6")
    out, _ = again.communicate(timeout=300)
    assert again.returncode == EXIT_OK, out
    assert "01_cohort  ran   (interrupted (the process that ran it is gone))" in out
    redone = _done_cases(tmp_path)
    assert not set(redone) & {Path(k).stem for k in kept}, (redone, kept)  # finished cases were not redone
    assert sorted(p.name for p in stage_dir.glob("case*.txt")) == [f"case{i}.txt" for i in range(6)]
    assert not list(stage_dir.glob(".*.tmp*"))  # temp files of the killed kernel's atomic writes removed
    prov = json.loads((tmp_path / "runs" / "r" / "provenance.json").read_text(encoding="utf-8"))
    assert prov["stages"]["01_cohort"]["status"] == "ok" and prov["stages"]["01_cohort"]["resumed"] is True


def test_second_run_on_the_same_folder_fails_at_once_and_a_dead_lock_is_taken_over(tmp_path):
    """Finding 6: two real `bmstudy run` processes on one run name."""
    _study_toy(tmp_path / "nb")
    first = _bmstudy(tmp_path, "--stages", "01", "--param", "delay=2", "--param", "n_cases=30")
    lock = tmp_path / "runs" / "r" / ".bmstudy.lock"
    _wait_for(lambda: len(_done_cases(tmp_path)) >= 1)
    second = _bmstudy(tmp_path, "--stages", "01")
    out, _ = second.communicate(timeout=120)
    assert first.poll() is None  # the first is still running: the second did not wait for it
    assert second.returncode == EXIT_FAILED, out
    assert f"PID {first.pid}" in out and "since 20" in out and "Traceback" not in out
    assert "in use" in out and len(out.strip().splitlines()) == 1, out
    assert (tmp_path / "runs" / "r" / "01_cohort" / "case0.txt").is_file()  # the first's outputs are intact

    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    assert lock.is_file()
    time.sleep(3)
    third = _bmstudy(tmp_path, "--stages", "01", "--param", "n_cases=2")
    out, _ = third.communicate(timeout=300)
    assert third.returncode == EXIT_OK, out
    assert f"taking over the lock of PID {first.pid}" in out
    assert not lock.exists()  # released at the end


def test_exit_code_3_when_cases_are_excluded(tmp_path, capsys):
    _study_toy(tmp_path / "nb")
    nbformat.write(_nb("out_dir = ''\ncohort_dir = ''\nwork_log = ''\ndelay = 0.0\nn_cases = 3",
                       "from pathlib import Path\nPath(out_dir, 'preprocess_report.csv').write_text("
                       "'patient_id,status,reason\\nA,ok,\\nB,excluded,B: image and mask grids differ\\n')"),
                   tmp_path / "nb" / "02_preprocessing.ipynb")
    args = ["run", "--name", "r", "--profile", "tiny", "--no-book", "--runs-dir", str(tmp_path / "runs"),
            "--notebooks-dir", str(tmp_path / "nb"), "--param", f"work_log={tmp_path / 'work.log'}", "--stages", "02"]
    assert cli_main(args) == EXIT_PARTIAL
    out = capsys.readouterr().out
    assert "02_preprocessing: 1 ok, 1 excluded (02_preprocessing/preprocess_report.csv)" in out
    assert "B: image and mask grids differ" in out
    assert cli_main([*args[:-2], "--dry-run"]) == EXIT_OK  # a dry run only reports
    out = capsys.readouterr().out
    assert "01_cohort" in out and "skip" in out and "03_training" in out and "(never ran)" in out


# ----------------------------------------------------------------------------- I/O errors: one line, exit 1
def test_unwritable_output_folder_is_one_line_naming_the_path(tmp_path, capsys, monkeypatch):
    """Finding 9. Tests run as root, which ignores permission bits (chmod a-w does not stop root), so the
    read-only folder is made two other ways: a runs folder under a regular file (NotADirectoryError from
    the OS) and a PermissionError / ENOSPC injected where the runner writes plan.json."""
    import errno

    _study_toy(tmp_path / "nb")
    blocker = tmp_path / "blocker"
    blocker.write_text("a regular file", encoding="utf-8")
    base = ["run", "--name", "r", "--profile", "tiny", "--no-book", "--notebooks-dir", str(tmp_path / "nb"),
            "--param", f"work_log={tmp_path / 'work.log'}", "--stages", "01"]
    assert cli_main([*base, "--runs-dir", str(blocker / "runs")]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert str(blocker / "runs") in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err

    for code, text in ((errno.EACCES, "Permission denied"), (errno.ENOSPC, "No space left on device")):
        def refuse(plan, path, code=code, text=text):
            raise OSError(code, text, str(path))

        monkeypatch.setattr(pipeline, "write_plan", refuse)
        assert cli_main([*base, "--runs-dir", str(tmp_path / "runs")]) == EXIT_FAILED
        err = capsys.readouterr().err
        assert str(tmp_path / "runs" / "r" / "plan.json") in err and text in err and "Traceback" not in err, err
    assert not (tmp_path / "runs" / "r" / ".bmstudy.lock").exists()  # the lock is released on failure


def test_every_command_maps_os_errors_to_one_line(monkeypatch, capsys):
    from bmstudy.study import plan_cli

    def refuse(args):
        raise PermissionError(13, "Permission denied", "/ro/out/table.csv")

    monkeypatch.setattr(plan_cli, "cli_main", refuse)
    assert cli_main(["plan"]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert err.strip() == "bmstudy plan: error: /ro/out/table.csv: Permission denied (PermissionError)"

    def boom(args):
        raise TypeError("a bug")

    monkeypatch.setattr(plan_cli, "cli_main", boom)
    assert cli_main(["plan"]) == EXIT_FAILED  # unexpected exceptions: traceback, but the same exit code
    assert "bmstudy plan: error: TypeError: a bug" in capsys.readouterr().err


@pytest.mark.parametrize("rows,code", [([{"status": "ok"}], 0), ([{"status": "ok"}, {"status": "failed"}], 3)])
def test_exit_constants_agree_with_the_per_case_convention(rows, code):
    assert (EXIT_OK, EXIT_PARTIAL, EXIT_FAILED) == (0, 3, 1)
    cases = pytest.importorskip("bmstudy.cases")
    if not hasattr(cases, "exit_code"):
        pytest.skip("bmstudy.cases.exit_code (W2) not present")
    assert cases.exit_code(rows) == code
