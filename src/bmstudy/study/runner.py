"""Study orchestration: execute the study notebooks in order with papermill into ``runs/<name>/``.

Each stage (:data:`~bmstudy.study.stages.STAGES`) is one notebook (``notebooks/NN_<key>.ipynb``).
:func:`run_study` resolves the run's :class:`~bmstudy.plan.StudyPlan` from the profile and the plan
overrides among ``params`` and writes it to ``runs/<name>/plan.json`` before the first stage. Each
notebook then receives, among the names its ``parameters`` cell declares: ``plan`` (the absolute path
of ``plan.json``), ``profile``, ``out_dir``, ``<key>_dir`` of every upstream stage, ``manifest`` and the
user's notebook parameters (see :mod:`bmstudy.study.parameters`). Outputs go to
``runs/<name>/<stage>/``; the executed notebook is ``runs/<name>/<stage>.ipynb``.

Incremental runs: a stage whose fingerprint (:mod:`bmstudy.study.fingerprint`: notebook, parameters,
plan slice, manifest and the files it names, package versions, the source of the ``bmstudy`` modules
its kernel loaded, upstream fingerprints) matches its last successful execution is skipped (unless
``force``), so a change re-runs only the stages it reaches and their dependents; ``dry_run`` /
``bmstudy run --dry-run`` says per stage what would run and why. ``runs/<name>/provenance.json``
(:mod:`bmstudy.study.provenance`) is rewritten after every stage.

Resume: a stage left ``running`` by a process that died (SIGKILL, power loss) is *interrupted*; with
unchanged inputs its output folder is kept (training resumes from its checkpoint, per-case stages skip
finished cases) after removing the temp files of interrupted atomic writes. One ``bmstudy run`` per
run folder at a time (:func:`bmstudy.io.locks.folder_lock`); a dead holder's lock is taken over.
At the end, each stage's per-case status table is summarised (:mod:`bmstudy.study.accounting`).
"""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..plan import PROFILES, StudyPlan, resolve_plan, write_plan
from ..utils import PathLike, clean_stale_temps, file_sha256, get_logger
from .accounting import run_summary
from .fingerprint import (MODULE_RECORD, changed_inputs, fingerprint, input_digest,  # noqa: F401
                          input_file_hashes, module_record_cell, notebook_source_hash, read_module_record,
                          source_hashes, stage_inputs)
from .parameters import (check_notebook_parameters, notebook_parameters, parse_param,  # noqa: F401
                         split_params, stage_parameters)
from .provenance import (FINGERPRINT_PACKAGES, PLAN_FILE, PROVENANCE_FILE, git_commit,  # noqa: F401
                         new_provenance, now, package_versions, read_stage_records, save_provenance)
from .errors import StageError, stage_error
from .stages import STAGES, Stage, check_stage_graph, select_stages

log = get_logger("bmstudy.study.runner")

__all__ = ["KERNEL_NAME", "INPUT_HASH_CACHE", "StageError", "StageResult", "RunResult", "default_notebooks_dir",
           "run_study"]

KERNEL_NAME = "python3"
#: Hash cache of the input files a data manifest names (path + size + mtime_ns -> sha256), in the run folder.
INPUT_HASH_CACHE = ".input_hashes.json"


@dataclass
class StageResult:
    """What happened to one stage in this invocation (``action``: ``ran``, ``skipped``; ``would run`` in a dry run)."""

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
    case_summary: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def ran(self) -> list[str]:
        """Names of the stages executed."""
        return [s.name for s in self.stages if s.action == "ran"]

    @property
    def skipped(self) -> list[str]:
        """Names of the stages skipped as up to date."""
        return [s.name for s in self.stages if s.action == "skipped"]

    @property
    def would_run(self) -> list[str]:
        """Names of the stages a dry run would execute."""
        return [s.name for s in self.stages if s.action == "would run"]


@dataclass
class _Run:
    """Everything resolved before the first stage runs; fingerprints are updated as stages execute."""

    run_dir: Path
    nb_dir: Path
    stages: Sequence[Stage]
    plan: StudyPlan
    previous: dict[str, Any]
    params: dict[str, dict[str, Any]]  # per stage, layout included (what papermill passes)
    defaults: dict[str, dict[str, Any]]  # per stage, declared but not passed
    base: dict[str, dict[str, Any]]  # per stage: stage_inputs arguments except upstream and src
    fingerprints: dict[str, str] = field(default_factory=dict)
    digests: dict[str, dict[str, Any]] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def prov_path(self) -> Path:
        return self.run_dir / PROVENANCE_FILE

    def predict(self, stage: Stage, src_files: Mapping[str, str] | None = None) -> str:
        """Fingerprint of ``stage`` from its current inputs, the modules it loaded last time (or
        ``src_files``) and the current fingerprints of its upstream stages; stored and returned."""
        if src_files is None:
            src_files = (self.previous.get(stage.name) or {}).get("src_files") or {}
        inputs = stage_inputs(stage, **self.base[stage.name], src=source_hashes(src_files),
                              upstream={d: self.fingerprints[d] for d in stage.depends})
        self.fingerprints[stage.name] = fingerprint(inputs)
        self.digests[stage.name] = input_digest(inputs)
        return self.fingerprints[stage.name]

    def up_to_date(self, name: str) -> tuple[bool, str]:
        """Whether a stage's last execution is still valid, and why (not)."""
        prev = self.previous.get(name) or {}
        if not prev:
            return False, "never ran"
        if prev.get("status") in ("running", "interrupted"):
            return False, "interrupted (the process that ran it is gone)"
        if prev.get("status") != "ok":
            return False, "previous execution failed"
        if prev.get("fingerprint") != self.fingerprints[name]:
            return False, _change_reason(changed_inputs(prev.get("inputs"), self.digests[name]))
        if not (self.run_dir / f"{name}.ipynb").is_file() or not (self.run_dir / name).is_dir():
            return False, "outputs missing"
        return True, "up to date"


def _change_reason(what: Sequence[str]) -> str:
    """``inputs changed: plan.train, upstream 02_b; src changed: bmstudy/x.py; 3 input files changed``."""
    plain = [w for w in what if " changed" not in w]
    parts = (["inputs changed: " + ", ".join(plain)] if plain else []) + [w for w in what if " changed" in w]
    return "; ".join(parts) or "inputs changed (notebook, parameters, plan, manifest, code or upstream stage)"


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
             manifest_path: Path | None, manifest_hash: str | None, dry_run: bool = False) -> _Run:
    """Each stage's parameters and (predicted) fingerprint, in stage order."""
    run = _Run(run_dir, nb_dir, stage_list, plan, read_stage_records(run_dir / PROVENANCE_FILE), {}, {}, {})
    packages = package_versions(FINGERPRINT_PACKAGES)
    files: dict[str, str] | None = None
    for s in stage_list:
        decl = declared[s.name]
        takes_manifest = "manifest" in decl
        if takes_manifest and files is None:
            files = input_file_hashes(manifest_path, run_dir / INPUT_HASH_CACHE, save=not dry_run)
        chosen = stage_parameters(s, stage_list, decl, user, plan)
        run.base[s.name] = {"notebook_hash": notebook_source_hash(nb_dir / s.notebook), "parameters": chosen,
                            "plan": plan, "manifest_hash": manifest_hash if takes_manifest else None,
                            "packages": packages, "files": (files or {}) if takes_manifest else {}}
        run.predict(s)
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


def _prepare(name: str, profile: str, nb_dir: Path, stage_list: Sequence[Stage], manifest: PathLike | None,
             params: Mapping[str, Any] | None, stages: Sequence[str] | None,
             runs_dir: PathLike) -> tuple[Path, StudyPlan, Any]:
    """Everything checked before anything is written: returns the run folder, the plan and a resolver."""
    manifest_path, manifest_hash = _check_inputs(name, profile, nb_dir, stage_list, manifest)
    plan_overrides, nb_user = split_params(params)
    declared = {s.name: notebook_parameters(nb_dir / s.notebook) for s in stage_list}
    check_notebook_parameters(stage_list, declared, nb_user, nb_dir)
    select_stages(stage_list, stages)  # unknown stages fail before anything is written
    plan = resolve_plan(profile, plan_overrides)
    run_dir = (Path(runs_dir) / name).resolve()

    def resolver(dry_run: bool = False) -> tuple[_Run, Path | None, str | None]:
        run = _resolve(run_dir, nb_dir, stage_list, plan, profile, declared, nb_user, manifest_path,
                       manifest_hash, dry_run)
        return run, manifest_path, manifest_hash

    return run_dir, plan, resolver


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
    dry_run: bool = False,
) -> RunResult:
    """Execute the study notebooks into ``runs_dir/name``; skip up-to-date stages; resume interrupted ones.

    Parameters
    ----------
    name : str
        Run folder name (a plain folder name).
    profile : str
        Study profile (:data:`bmstudy.plan.PROFILES`: ``tiny``, ``cpu``, ``paper``).
    manifest : path-like, optional
        User data manifest (it and every file it names are hashed); default: the cohort stage
        synthesises a cohort for the profile.
    params : mapping, optional
        ``--param`` values: plan overrides (``seed``, ``train.epochs``) and notebook parameters
        (``KEY`` for every stage declaring it, ``STAGE.KEY`` for one); see :mod:`bmstudy.study.parameters`.
    force : bool
        Re-run selected stages even when up to date (an interrupted stage then starts afresh).
    stages : sequence of str, optional
        Run only these stages (names, keys or ``NN`` prefixes) and the upstream stages that are not up to date.
    runs_dir, notebooks_dir : path-like
        Where run folders go; where the notebooks are (default :func:`default_notebooks_dir`).
    stage_list : sequence of Stage
        The study's stages.
    log_output, start_timeout : bool, int
        Stream notebook cell output to the log; seconds to wait for a kernel to start.
    dry_run : bool
        Decide run/skip per stage (``action`` ``would run`` / ``skipped``, with the reason) and write
        nothing, take no lock.

    Returns
    -------
    RunResult
        With :attr:`RunResult.case_summary` (:func:`bmstudy.study.accounting.run_summary`).

    Raises
    ------
    ValueError, FileNotFoundError
        Bad profile, stage, parameter, plan key, notebook or manifest (checked before any stage runs).
    bmstudy.io.locks.LockError
        When another live ``bmstudy run`` holds the run folder (names its PID and start time).
    StageError
        At the first failing stage (later stages do not run).
    """
    nb_dir = Path(notebooks_dir) if notebooks_dir is not None else default_notebooks_dir()
    run_dir, plan, resolver = _prepare(name, profile, nb_dir, stage_list, manifest, params, stages, runs_dir)
    if dry_run:
        return _dry_run(resolver(True)[0], stages, force)
    from ..io.locks import folder_lock

    with folder_lock(run_dir, "run folder"):
        clean_stale_temps(run_dir, recursive=False)  # e.g. a provenance.json write cut short by a kill
        run, manifest_path, manifest_hash = resolver()
        selected = _selection(run, stages)
        plan_path = write_plan(plan, run_dir / PLAN_FILE)
        run.provenance = new_provenance(name=name, run_dir=run_dir, profile=profile, plan=plan, plan_path=plan_path,
                                        manifest_path=manifest_path, manifest_hash=manifest_hash,
                                        user=dict(params or {}), force=force, git=git_commit(),
                                        previous=run.previous)
        result = RunResult(run_dir=run_dir, plan=plan)
        try:
            _run_stages(run, selected, result, force=force, log_output=log_output, start_timeout=start_timeout)
        finally:
            result.case_summary = run_summary(run_dir, stage_list)
            run.provenance["case_summary"] = result.case_summary
            save_provenance(run.prov_path, run.provenance)
    return result


def _run_stages(run: _Run, selected: set[str], result: RunResult, *, force: bool, log_output: bool,
                start_timeout: int) -> None:
    """Skip or execute each selected stage in order, appending to ``result.stages``."""
    for s in run.stages:
        run.predict(s)  # upstream stages of this invocation may have new fingerprints
        if s.name not in selected:
            continue
        ok, why = run.up_to_date(s.name)
        if ok and not force:
            result.stages.append(_skip(run, s, why))
            continue
        result.stages.append(_execute(run, s, "forced" if force and ok else why, force=force,
                                      log_output=log_output, start_timeout=start_timeout))


def _dry_run(run: _Run, wanted: Sequence[str] | None, force: bool) -> RunResult:
    """What :func:`run_study` would do: ``would run`` / ``skipped`` per selected stage, with the reason."""
    selected = _selection(run, wanted)
    result = RunResult(run_dir=run.run_dir, plan=run.plan)
    will_run: set[str] = set()
    for s in run.stages:
        if s.name not in selected:
            continue
        ok, why = run.up_to_date(s.name)
        upstream = [d for d in s.depends if d in will_run]
        if ok and upstream:  # its upstream re-runs; whether its outputs change is known only then
            ok, why = False, "upstream re-runs: " + ", ".join(upstream)
        if ok and not force:
            result.stages.append(StageResult(s.name, "skipped", run.fingerprints[s.name], why))
            continue
        will_run.add(s.name)
        result.stages.append(StageResult(s.name, "would run", run.fingerprints[s.name], "forced" if ok else why))
    result.case_summary = run_summary(run.run_dir, run.stages) if run.run_dir.is_dir() else {}
    return result


def _skip(run: _Run, stage: Stage, why: str) -> StageResult:
    """Record an up-to-date stage as skipped."""
    log.info("stage %s: skipped (%s)", stage.name, why)
    prev = run.previous[stage.name]
    run.provenance["stages"][stage.name] = {**prev, "last_action": "skipped"}
    return StageResult(stage.name, "skipped", run.fingerprints[stage.name], why,
                       executed_notebook=run.run_dir / f"{stage.name}.ipynb")


def _start(run: _Run, stage: Stage, fp: str, *, force: bool) -> bool:
    """Prepare the stage folder: keep it when resuming the same inputs, else start afresh; True when resuming."""
    out_dir = run.run_dir / stage.name
    prev = run.previous.get(stage.name) or {}
    resume = (prev.get("status") in ("failed", "running", "interrupted") and prev.get("fingerprint") == fp
              and not force and out_dir.is_dir())
    if resume:
        log.info("stage %s: resuming the %s execution of %s in %s (its finished work is kept)", stage.name,
                 "interrupted" if prev.get("status") != "failed" else "failed", prev.get("started"), out_dir)
        clean_stale_temps(out_dir)
    elif out_dir.exists():
        shutil.rmtree(out_dir)  # stale outputs of other inputs must not leak into this execution
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MODULE_RECORD).unlink(missing_ok=True)
    return resume


def _execute(run: _Run, stage: Stage, why: str, *, force: bool, log_output: bool,
             start_timeout: int) -> StageResult:
    """Execute one stage with papermill; record it in the provenance; raise :class:`StageError` on failure."""
    import papermill as pm

    source = run.nb_dir / stage.notebook
    out_dir = run.run_dir / stage.name
    fp = run.fingerprints[stage.name]
    prev_src = (run.previous.get(stage.name) or {}).get("src_files") or {}
    resume = _start(run, stage, fp, force=force)
    executed = run.run_dir / f"{stage.name}.ipynb"
    failed_nb = run.run_dir / f"{stage.name}.failed.ipynb"
    tmp_nb = run.run_dir / f".{stage.name}.running.ipynb"
    failed_nb.unlink(missing_ok=True)
    entry = {"fingerprint": fp, "inputs": run.digests[stage.name], "plan_sections": list(stage.plan_sections),
             "notebook": str(source), "parameters": run.params[stage.name], "started": now(), "finished": None,
             "notebook_defaults": run.defaults[stage.name], "status": "running", "last_action": "ran",
             "reason": why, "resumed": resume, "pid": os.getpid(), "src_files": prev_src,
             "git": run.provenance["git"]}  # the code this execution ran with
    run.provenance["stages"][stage.name] = entry
    save_provenance(run.prov_path, run.provenance)
    log.info("stage %s: running %s (%s)", stage.name, source, why)
    t0 = time.perf_counter()
    try:
        pm.execute_notebook(_with_module_record(source, out_dir), str(tmp_nb), parameters=run.params[stage.name],
                            kernel_name=KERNEL_NAME, progress_bar=False, log_output=log_output, cwd=str(out_dir),
                            start_timeout=start_timeout)
    except BaseException as exc:  # noqa: BLE001 - record, then re-raise as StageError
        if tmp_nb.exists():
            os.replace(tmp_nb, failed_nb)
        entry.update(status="failed", finished=now(), seconds=round(time.perf_counter() - t0, 2),
                     error=f"{type(exc).__name__}: {exc}"[:2000])
        save_provenance(run.prov_path, run.provenance)
        if isinstance(exc, (KeyboardInterrupt, OSError)) and not _is_kernel_error(exc):
            raise
        raise stage_error(stage.name, source, exc, failed_nb) from exc
    seconds = time.perf_counter() - t0
    os.replace(tmp_nb, executed)
    src_files = read_module_record(out_dir)
    entry.update(status="ok", finished=now(), seconds=round(seconds, 2), src_files=src_files,
                 fingerprint=run.predict(stage, src_files), inputs=run.digests[stage.name])
    save_provenance(run.prov_path, run.provenance)
    log.info("stage %s: done in %.1f s (%d bmstudy modules recorded)", stage.name, seconds, len(src_files))
    return StageResult(stage.name, "ran", entry["fingerprint"], why, seconds, executed)


def _is_kernel_error(exc: BaseException) -> bool:
    """Whether an exception came from the notebook's code (papermill) rather than the runner's own I/O."""
    from papermill.exceptions import PapermillExecutionError

    return isinstance(exc, PapermillExecutionError)


def _with_module_record(source: Path, out_dir: Path) -> Any:
    """The stage notebook with the hidden last cell that records the ``bmstudy`` modules it loaded."""
    import nbformat

    nb = nbformat.read(str(source), as_version=4)
    nb.cells.append(module_record_cell(out_dir))
    return nb
