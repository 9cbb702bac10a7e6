"""Study orchestration: execute the study notebooks in order with papermill into ``runs/<name>/``.

Each stage (:data:`~bmstudy.study.stages.STAGES`) is one notebook (``notebooks/NN_<key>.ipynb``).
:func:`run_study` resolves the run's :class:`~bmstudy.plan.StudyPlan` from the profile and the plan
overrides among ``params`` and writes it to ``runs/<name>/plan.json`` before the first stage. Each
notebook then receives, among the names its ``parameters`` cell declares: ``plan`` (the absolute path
of ``plan.json``), ``profile``, ``out_dir``, ``<key>_dir`` of every upstream stage, ``manifest`` and the
user's notebook parameters (see :mod:`bmstudy.study.parameters`). Outputs go to
``runs/<name>/<stage>/``; the executed notebook is ``runs/<name>/<stage>.ipynb``.

Incremental runs: a stage whose fingerprint (:mod:`bmstudy.study.fingerprint`) matches its last
successful execution is skipped (unless ``force``), so changing one parameter or plan section re-runs
only the stages that read it and their dependents. ``runs/<name>/provenance.json``
(:mod:`bmstudy.study.provenance`) is rewritten after every stage.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..plan import PROFILES, StudyPlan, resolve_plan, write_plan
from ..utils import PathLike, file_sha256, get_logger
from .fingerprint import (changed_inputs, fingerprint, input_digest, notebook_source_hash,  # noqa: F401
                          stage_inputs)
from .parameters import (check_notebook_parameters, notebook_parameters, parse_param,  # noqa: F401
                         split_params, stage_parameters)
from .provenance import (PLAN_FILE, PROVENANCE_FILE, git_commit, new_provenance, now, read_stage_records,
                         save_provenance)
from .stages import STAGES, Stage, check_stage_graph, select_stages

log = get_logger("bmstudy.study.runner")

__all__ = ["KERNEL_NAME", "StageError", "StageResult", "RunResult", "default_notebooks_dir", "run_study",
           "add_cli_arguments", "cli_main"]

KERNEL_NAME = "python3"


class StageError(RuntimeError):
    """A stage failed; the message names the stage, the notebook and the failing cell.

    Attributes
    ----------
    stage : str
        The stage name.
    notebook : Path
        The source notebook.
    cell_index : int or None
        1-based number of the failing cell in the source notebook (``None`` when not a cell error).
    executed_notebook : Path or None
        The partially executed notebook with the traceback.
    """

    def __init__(self, message: str, stage: str, notebook: Path, cell_index: int | None = None,
                 executed_notebook: Path | None = None) -> None:
        super().__init__(message)
        self.stage = stage
        self.notebook = notebook
        self.cell_index = cell_index
        self.executed_notebook = executed_notebook


@dataclass
class StageResult:
    """What happened to one stage in this invocation (``action``: ``ran``, ``skipped`` or ``failed``)."""

    name: str
    action: str
    fingerprint: str
    reason: str
    seconds: float = 0.0
    executed_notebook: Path | None = None


@dataclass
class RunResult:
    """Outcome of :func:`run_study`: the run folder, each stage's :class:`StageResult` and the plan."""

    run_dir: Path
    stages: list[StageResult] = field(default_factory=list)
    plan: StudyPlan | None = None

    @property
    def ran(self) -> list[str]:
        """Names of the stages executed."""
        return [s.name for s in self.stages if s.action == "ran"]

    @property
    def skipped(self) -> list[str]:
        """Names of the stages skipped as up to date."""
        return [s.name for s in self.stages if s.action == "skipped"]


@dataclass
class _Run:
    """Everything resolved before the first stage runs."""

    run_dir: Path
    nb_dir: Path
    stages: Sequence[Stage]
    plan: StudyPlan
    previous: dict[str, Any]
    params: dict[str, dict[str, Any]]  # per stage, layout included (what papermill passes)
    defaults: dict[str, dict[str, Any]]  # per stage, declared but not passed
    fingerprints: dict[str, str]
    digests: dict[str, dict[str, Any]]
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def prov_path(self) -> Path:
        return self.run_dir / PROVENANCE_FILE

    def up_to_date(self, name: str) -> tuple[bool, str]:
        """Whether a stage's last execution is still valid, and why (not)."""
        prev = self.previous.get(name) or {}
        if not prev:
            return False, "never ran"
        if prev.get("status") != "ok":
            return False, "previous execution failed"
        if prev.get("fingerprint") != self.fingerprints[name]:
            what = changed_inputs(prev.get("inputs"), self.digests[name])
            return False, ("inputs changed: " + ", ".join(what) if what else
                           "inputs changed (notebook, parameters, plan, manifest or upstream stage)")
        if not (self.run_dir / f"{name}.ipynb").is_file() or not (self.run_dir / name).is_dir():
            return False, "outputs missing"
        return True, "up to date"


# ----------------------------------------------------------------------------- helpers
def default_notebooks_dir() -> Path:
    """The study notebooks' folder.

    Returns
    -------
    Path
        ``$BMSTUDY_NOTEBOOKS``, else the repository's ``notebooks/`` (editable install), else ``./notebooks``.
    """
    env = os.environ.get("BMSTUDY_NOTEBOOKS")
    if env:
        return Path(env)
    repo_nb = Path(__file__).resolve().parents[3] / "notebooks"
    return repo_nb if repo_nb.is_dir() else Path.cwd() / "notebooks"


def _check_inputs(name: str, profile: str, nb_dir: Path, stage_list: Sequence[Stage],
                  manifest: PathLike | None) -> tuple[Path | None, str | None]:
    """Validate the run name, profile, stage graph and notebooks; return the manifest path and hash."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose from {sorted(PROFILES)}")
    if not name or Path(name).name != name or name.startswith("."):
        raise ValueError(f"run name must be a plain folder name, got {name!r}")
    check_stage_graph(stage_list)
    for s in stage_list:
        if not (nb_dir / s.notebook).is_file():
            raise FileNotFoundError(f"stage {s.name}: notebook {nb_dir / s.notebook} not found")
    manifest_path = Path(manifest).resolve() if manifest else None
    if manifest_path is not None and not manifest_path.is_file():
        raise FileNotFoundError(f"data manifest {manifest_path} not found")
    return manifest_path, (file_sha256(manifest_path) if manifest_path else None)


def _layout(stage: Stage, stage_list: Sequence[Stage], run_dir: Path, profile: str,
            manifest_path: Path | None) -> dict[str, Any]:
    """The parameters the runner sets from the run folder (not part of the fingerprint)."""
    by_name = {s.name: s for s in stage_list}
    layout = {"out_dir": str(run_dir / stage.name), "plan": str(run_dir / PLAN_FILE), "profile": profile,
              "manifest": str(manifest_path) if manifest_path else ""}
    for d in stage.depends:
        layout[by_name[d].dir_param] = str(run_dir / d)
    return layout


def _resolve(run_dir: Path, nb_dir: Path, stage_list: Sequence[Stage], plan: StudyPlan, profile: str,
             declared: Mapping[str, Mapping[str, Any]], user: Mapping[str, Any],
             manifest_path: Path | None, manifest_hash: str | None) -> _Run:
    """Each stage's parameters and fingerprint, in stage order."""
    run = _Run(run_dir, nb_dir, stage_list, plan, read_stage_records(run_dir / PROVENANCE_FILE), {}, {}, {}, {})
    for s in stage_list:
        decl = declared[s.name]
        chosen = stage_parameters(s, stage_list, decl, user, plan)
        inputs = stage_inputs(s, notebook_hash=notebook_source_hash(nb_dir / s.notebook), parameters=chosen,
                              plan=plan, manifest_hash=manifest_hash if "manifest" in decl else None,
                              upstream={d: run.fingerprints[d] for d in s.depends})
        run.fingerprints[s.name] = fingerprint(inputs)
        run.digests[s.name] = input_digest(inputs)
        layout = _layout(s, stage_list, run_dir, profile, manifest_path)
        run.params[s.name] = {**chosen, **{k: v for k, v in layout.items() if k in decl}}
        run.defaults[s.name] = {k: v for k, v in decl.items() if k not in run.params[s.name]}
    return run


def _selection(run: _Run, wanted: Sequence[str] | None) -> set[str]:
    """The stages to consider: ``wanted`` plus every upstream stage that is not up to date."""
    selected = set(select_stages(run.stages, wanted))
    if not wanted:
        return selected
    changed = True
    while changed:
        changed = False
        for s in run.stages:
            if s.name not in selected:
                continue
            for d in s.depends:
                if d not in selected and not run.up_to_date(d)[0]:
                    log.info("stage %s is not up to date; adding it (needed by %s)", d, s.name)
                    selected.add(d)
                    changed = True
    return selected


# ----------------------------------------------------------------------------- main entry
def run_study(
    name: str = "default",
    profile: str = "cpu",
    *,
    manifest: PathLike | None = None,
    params: Mapping[str, Any] | None = None,
    force: bool = False,
    stages: Sequence[str] | None = None,
    runs_dir: PathLike = "runs",
    notebooks_dir: PathLike | None = None,
    stage_list: Sequence[Stage] = STAGES,
    log_output: bool = False,
    start_timeout: int = 120,
) -> RunResult:
    """Execute the study notebooks into ``runs_dir/name``; skip up-to-date stages.

    Parameters
    ----------
    name : str
        Run folder name (a plain folder name).
    profile : str
        Study profile (:data:`bmstudy.plan.PROFILES`: ``tiny``, ``cpu``, ``paper``).
    manifest : path-like, optional
        User data manifest (hashed); default: the cohort stage synthesises a cohort for the profile.
    params : mapping, optional
        ``--param`` values: plan overrides (``seed``, ``train.epochs``) and notebook parameters
        (``KEY`` for every stage declaring it, ``STAGE.KEY`` for one); see :mod:`bmstudy.study.parameters`.
    force : bool
        Re-run selected stages even when up to date.
    stages : sequence of str, optional
        Run only these stages (names, keys or ``NN`` prefixes) and the upstream stages that are not up to date.
    runs_dir, notebooks_dir : path-like
        Where run folders go; where the notebooks are (default :func:`default_notebooks_dir`).
    stage_list : sequence of Stage
        The study's stages (tests pass their own).
    log_output : bool
        Stream notebook cell output to the log.
    start_timeout : int
        Seconds to wait for a kernel to start.

    Returns
    -------
    RunResult

    Raises
    ------
    ValueError, FileNotFoundError
        For an unknown profile, stage, parameter or plan key, or a missing notebook or manifest; all
        checked before any stage runs.
    StageError
        At the first failing stage (later stages do not run).
    """
    nb_dir = Path(notebooks_dir) if notebooks_dir is not None else default_notebooks_dir()
    manifest_path, manifest_hash = _check_inputs(name, profile, nb_dir, stage_list, manifest)
    plan_overrides, nb_user = split_params(params)
    declared = {s.name: notebook_parameters(nb_dir / s.notebook) for s in stage_list}
    check_notebook_parameters(stage_list, declared, nb_user, nb_dir)
    select_stages(stage_list, stages)  # unknown stages fail before anything is written
    plan = resolve_plan(profile, plan_overrides)

    run_dir = (Path(runs_dir) / name).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    run = _resolve(run_dir, nb_dir, stage_list, plan, profile, declared, nb_user, manifest_path, manifest_hash)
    selected = _selection(run, stages)
    plan_path = write_plan(plan, run_dir / PLAN_FILE)
    run.provenance = new_provenance(name=name, run_dir=run_dir, profile=profile, plan=plan, plan_path=plan_path,
                                    manifest_path=manifest_path, manifest_hash=manifest_hash, user=dict(params or {}),
                                    force=force, git=git_commit(), previous=run.previous)
    result = RunResult(run_dir=run_dir, plan=plan)
    for s in stage_list:
        if s.name not in selected:
            continue
        ok, why = run.up_to_date(s.name)
        if ok and not force:
            result.stages.append(_skip(run, s, why))
            continue
        result.stages.append(_execute(run, s, "forced" if force and ok else why, force=force,
                                      log_output=log_output, start_timeout=start_timeout))
    save_provenance(run.prov_path, run.provenance)
    return result


def _skip(run: _Run, stage: Stage, why: str) -> StageResult:
    """Record an up-to-date stage as skipped."""
    log.info("stage %s: skipped (%s)", stage.name, why)
    prev = run.previous[stage.name]
    ran_with = (prev.get("git") or {}).get("commit")
    current = run.provenance["git"].get("commit")
    if ran_with and current and ran_with != current:
        log.info("stage %s executed with commit %s; the code is now at %s (its notebook and inputs are unchanged; "
                 "`--stages %s --force` re-runs it with this code)", stage.name, ran_with[:10], current[:10], stage.name)
    run.provenance["stages"][stage.name] = {**prev, "last_action": "skipped"}
    return StageResult(stage.name, "skipped", run.fingerprints[stage.name], why,
                       executed_notebook=run.run_dir / f"{stage.name}.ipynb")


def _execute(run: _Run, stage: Stage, why: str, *, force: bool, log_output: bool,
             start_timeout: int) -> StageResult:
    """Execute one stage with papermill; record it in the provenance; raise :class:`StageError` on failure."""
    import papermill as pm

    source = run.nb_dir / stage.notebook
    out_dir = run.run_dir / stage.name
    fp = run.fingerprints[stage.name]
    prev = run.previous.get(stage.name) or {}
    resume = prev.get("status") == "failed" and prev.get("fingerprint") == fp and not force
    if out_dir.exists() and not resume:
        shutil.rmtree(out_dir)  # stale outputs of other inputs must not leak into this execution
    out_dir.mkdir(parents=True, exist_ok=True)
    executed = run.run_dir / f"{stage.name}.ipynb"
    failed_nb = run.run_dir / f"{stage.name}.failed.ipynb"
    tmp_nb = run.run_dir / f".{stage.name}.running.ipynb"
    failed_nb.unlink(missing_ok=True)
    entry = {"fingerprint": fp, "inputs": run.digests[stage.name], "plan_sections": list(stage.plan_sections),
             "notebook": str(source), "parameters": run.params[stage.name], "started": now(), "finished": None,
             "notebook_defaults": run.defaults[stage.name], "status": "running", "last_action": "ran",
             "reason": why, "git": run.provenance["git"]}  # the code this execution ran with
    run.provenance["stages"][stage.name] = entry
    save_provenance(run.prov_path, run.provenance)
    log.info("stage %s: running %s (%s)", stage.name, source, why)
    t0 = time.perf_counter()
    try:
        pm.execute_notebook(str(source), str(tmp_nb), parameters=run.params[stage.name], kernel_name=KERNEL_NAME,
                            progress_bar=False, log_output=log_output, cwd=str(out_dir), start_timeout=start_timeout)
    except BaseException as exc:  # noqa: BLE001 - record, then re-raise as StageError
        seconds = time.perf_counter() - t0
        if tmp_nb.exists():
            os.replace(tmp_nb, failed_nb)
        entry.update(status="failed", finished=now(), seconds=round(seconds, 2),
                     error=f"{type(exc).__name__}: {exc}"[:2000])
        save_provenance(run.prov_path, run.provenance)
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise _stage_error(stage, source, exc, failed_nb) from exc
    seconds = time.perf_counter() - t0
    os.replace(tmp_nb, executed)
    entry.update(status="ok", finished=now(), seconds=round(seconds, 2))
    save_provenance(run.prov_path, run.provenance)
    log.info("stage %s: done in %.1f s", stage.name, seconds)
    return StageResult(stage.name, "ran", fp, why, seconds, executed)


def _stage_error(stage: Stage, notebook: Path, exc: BaseException, failed_nb: Path) -> StageError:
    """A :class:`StageError` naming the stage, the notebook and (for a cell error) the source cell."""
    from papermill.exceptions import PapermillExecutionError

    if isinstance(exc, PapermillExecutionError):
        src = (exc.source or "").strip().splitlines()
        first = src[0] if src else ""
        # papermill counts cells of the executed notebook, which has one injected-parameters cell
        # after the parameters cell; translate back to the source notebook's numbering.
        cell = _source_cell_number(failed_nb, exc.cell_index)
        msg = (f"stage {stage.name} failed: notebook {notebook}, cell {cell} "
               f"(execution count {exc.exec_count}; source starts {first!r}): {exc.ename}: {exc.evalue}. "
               f"Executed notebook with the traceback: {failed_nb}")
        return StageError(msg, stage.name, notebook, cell, failed_nb)
    msg = f"stage {stage.name} failed: notebook {notebook}: {type(exc).__name__}: {exc}"
    if failed_nb.exists():
        msg += f". Partially executed notebook: {failed_nb}"
    return StageError(msg, stage.name, notebook, None, failed_nb if failed_nb.exists() else None)


def _source_cell_number(executed: Path, index: int) -> int:
    """1-based number of the failing cell in the SOURCE notebook (the injected cell is not counted)."""
    try:
        import nbformat

        nb = nbformat.read(str(executed), as_version=4)
        injected = [i for i, c in enumerate(nb.cells)
                    if "injected-parameters" in c.get("metadata", {}).get("tags", [])]
        return index + 1 - sum(1 for i in injected if i < index)
    except Exception:  # noqa: BLE001 - best effort; fall back to papermill's numbering
        return index + 1


# ----------------------------------------------------------------------------- CLI: bmstudy run
def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``bmstudy run``.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The sub-command's parser.
    """
    parser.add_argument("--name", default="default", help="run folder name under --runs-dir (default: default)")
    parser.add_argument("--profile", default="cpu", choices=sorted(PROFILES),
                        help="tiny (CI), cpu (2-core CPU study, default) or paper (paper settings, GPU box)")
    parser.add_argument("--manifest", help="data manifest CSV (default: synthesise a cohort for the profile)")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="a plan override (seed, gpu, test_fraction, n_jobs or SECTION.FIELD, e.g. "
                             "train.epochs=3; see `bmstudy plan`) or a notebook parameter (KEY for every stage "
                             "declaring it, or STAGE.KEY); VALUE is parsed as JSON when possible; repeatable")
    parser.add_argument("--stages", nargs="+", metavar="STAGE", help="run only these stages (e.g. 05 06_subgroups)")
    parser.add_argument("--force", action="store_true", help="re-run stages even when up to date")
    parser.add_argument("--runs-dir", default="runs", help="folder holding the run folders (default: runs)")
    parser.add_argument("--notebooks-dir", default=None, help="folder with the study notebooks")
    parser.add_argument("--no-book", action="store_true", help="do not build the HTML book afterwards")
    parser.add_argument("--book-dir", default="book", help="book source folder; HTML goes to BOOK_DIR/_build/html")
    parser.add_argument("--log-output", action="store_true", help="stream notebook cell output to the log")


def cli_main(args: argparse.Namespace) -> int:
    """Run ``bmstudy run``; then build the book unless ``--no-book``.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed :func:`add_cli_arguments`.

    Returns
    -------
    int
        0 on success, 1 when a stage failed.
    """
    params = dict(parse_param(p) for p in args.param)
    t0 = time.perf_counter()
    try:
        res = run_study(args.name, args.profile, manifest=args.manifest, params=params, force=args.force,
                        stages=args.stages, runs_dir=args.runs_dir, notebooks_dir=args.notebooks_dir,
                        log_output=args.log_output)
    except StageError as exc:
        print(f"bmstudy run: {exc}", file=sys.stderr)
        return 1
    print(f"run {res.run_dir}: ran {res.ran or 'nothing'}, skipped {res.skipped or 'nothing'} "
          f"({time.perf_counter() - t0:.0f} s)")
    if not args.no_book:
        from ..reporting.book import build_book

        index = build_book(res.run_dir, book_dir=args.book_dir)
        print(f"HTML report: {index}")
    return 0
