"""Study orchestration: execute the study notebooks in order with papermill into ``runs/<name>/``.

Each stage is one notebook (``notebooks/NN_<key>.ipynb``). A stage receives the parameters its
``parameters`` cell declares, from (lowest to highest precedence) the study profile defaults, the
layout of the run folder (``out_dir`` and ``<key>_dir`` of every upstream stage) and the user's
``--param KEY=VALUE`` / ``--param STAGE.KEY=VALUE`` overrides. Outputs go to ``runs/<name>/<stage>/``;
the executed notebook is ``runs/<name>/<stage>.ipynb``.

Incremental runs: a stage's fingerprint is the hash of its notebook source (cell types, sources and
tags; outputs ignored), its non-layout parameters, the data manifest's content hash (stages that take
``manifest``) and the fingerprints of its upstream stages. A stage whose fingerprint matches the last
successful execution is skipped (unless ``force``), so changing one parameter re-runs only the stages
that declare it and their dependents. ``runs/<name>/provenance.json`` records the git commit, package
versions, parameters, manifest hash and per-stage start/end times; it is rewritten after every stage.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..utils import PathLike, atomic_write_json, file_sha256, get_logger

log = get_logger("bmstudy.study.runner")

PROVENANCE_FILE = "provenance.json"
KERNEL_NAME = "python3"

#: Packages whose versions go into provenance.json (missing ones are recorded as null).
PROVENANCE_PACKAGES: tuple[str, ...] = (
    "bmstudy", "tensorflow-cpu", "tensorflow", "keras", "segmentation-models-3D",
    "classification-models-3D", "volumentations-3D", "numpy", "scipy", "pandas", "scikit-learn",
    "scikit-image", "statsmodels", "nibabel", "SimpleITK", "matplotlib", "seaborn", "papermill",
    "nbformat", "ipykernel", "jupyter-book",
)


@dataclass(frozen=True)
class Stage:
    """One study stage: a notebook, the stages whose outputs it reads, and its output folder name."""

    name: str
    notebook: str
    depends: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """Name without the ``NN_`` order prefix (``03_training`` -> ``training``)."""
        head, _, tail = self.name.partition("_")
        return tail if head.isdigit() and tail else self.name

    @property
    def dir_param(self) -> str:
        """Parameter through which downstream notebooks receive this stage's output folder."""
        return f"{self.key}_dir"


#: The study, in execution order.
STAGES: tuple[Stage, ...] = (
    Stage("01_cohort", "01_cohort.ipynb"),
    Stage("02_preprocessing", "02_preprocessing.ipynb", ("01_cohort",)),
    Stage("03_training", "03_training.ipynb", ("01_cohort", "02_preprocessing")),
    Stage("04_inference", "04_inference.ipynb", ("01_cohort", "03_training")),
    Stage("05_metrics", "05_metrics.ipynb", ("01_cohort", "04_inference")),
    Stage("06_subgroups", "06_subgroups.ipynb", ("01_cohort", "05_metrics")),
    Stage("07_timing", "07_timing.ipynb", ("01_cohort", "04_inference", "05_metrics")),
)

#: Study-level defaults per profile (a notebook receives only the keys its parameters cell declares).
PROFILES: dict[str, dict[str, Any]] = {
    "tiny": {"profile": "tiny", "seed": 0, "gpu": False},
    "cpu": {"profile": "cpu", "seed": 0, "gpu": False},
    "paper": {"profile": "paper", "seed": 0, "gpu": True},
}


class StageError(RuntimeError):
    """A stage failed; the message names the stage, the notebook and the failing cell."""

    def __init__(self, message: str, stage: str, notebook: Path, cell_index: int | None = None,
                 executed_notebook: Path | None = None) -> None:
        super().__init__(message)
        self.stage = stage
        self.notebook = notebook
        self.cell_index = cell_index
        self.executed_notebook = executed_notebook


@dataclass
class StageResult:
    """What happened to one stage in this invocation."""

    name: str
    action: str  # "ran" | "skipped" | "failed"
    fingerprint: str
    reason: str
    seconds: float = 0.0
    executed_notebook: Path | None = None


@dataclass
class RunResult:
    """Outcome of :func:`run_study`."""

    run_dir: Path
    stages: list[StageResult] = field(default_factory=list)

    @property
    def ran(self) -> list[str]:
        return [s.name for s in self.stages if s.action == "ran"]

    @property
    def skipped(self) -> list[str]:
        return [s.name for s in self.stages if s.action == "skipped"]


# ----------------------------------------------------------------------------- helpers
def default_notebooks_dir() -> Path:
    """``$BMSTUDY_NOTEBOOKS``, else the repository's ``notebooks/`` (editable install), else ``./notebooks``."""
    env = os.environ.get("BMSTUDY_NOTEBOOKS")
    if env:
        return Path(env)
    repo_nb = Path(__file__).resolve().parents[2] / "notebooks"
    return repo_nb if repo_nb.is_dir() else Path.cwd() / "notebooks"


def notebook_source_hash(path: PathLike) -> str:
    """Hash of a notebook's cell types, sources and tags (outputs and execution counts ignored)."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    cells = [
        [c.cell_type, c.source, sorted(c.get("metadata", {}).get("tags", []))] for c in nb.cells
    ]
    return hashlib.sha256(json.dumps(cells, sort_keys=True).encode()).hexdigest()


def notebook_parameters(path: PathLike) -> dict[str, Any]:
    """Names and default values (as source text) declared in the notebook's ``parameters`` cell."""
    import nbformat
    import papermill as pm

    nb = nbformat.read(str(path), as_version=4)
    if not any("parameters" in c.get("metadata", {}).get("tags", []) for c in nb.cells):
        raise ValueError(f"{path}: no cell tagged 'parameters' (papermill needs one)")
    info = pm.inspect_notebook(str(path))
    return {name: spec.get("default") for name, spec in info.items()}


def parse_param(text: str) -> tuple[str, Any]:
    """Parse ``KEY=VALUE``; VALUE is read as JSON when it parses (numbers, true/false, lists), else a string."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ValueError(f"--param expects KEY=VALUE or STAGE.KEY=VALUE, got {text!r}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key, value


def _stable_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def git_commit(repo: PathLike | None = None) -> dict[str, Any]:
    """``{"commit": sha or None, "dirty": bool or None}`` of the repository holding this package."""
    root = Path(repo) if repo is not None else Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, encoding="utf-8", errors="replace", timeout=20, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=20, check=True).stdout.strip()
        return {"commit": sha, "dirty": bool(dirty)}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def package_versions(names: Iterable[str] = PROVENANCE_PACKAGES) -> dict[str, str | None]:
    """Installed versions via importlib.metadata (``None`` when a package is absent)."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _select(stages: Sequence[Stage], wanted: Sequence[str] | None) -> list[str]:
    if not wanted:
        return [s.name for s in stages]
    chosen: list[str] = []
    for w in wanted:
        hits = [s.name for s in stages if w in (s.name, s.key) or s.name.startswith(f"{w}_")]
        if len(hits) != 1:
            raise ValueError(f"unknown stage {w!r}; stages are {[s.name for s in stages]}")
        chosen.append(hits[0])
    return chosen


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
    profiles: Mapping[str, Mapping[str, Any]] = PROFILES,
    log_output: bool = False,
    start_timeout: int = 120,
) -> RunResult:
    """Execute the study notebooks into ``runs_dir/name``; skip up-to-date stages.

    ``params`` maps ``KEY`` (every stage declaring it) or ``STAGE.KEY`` (one stage) to a value.
    ``stages`` restricts the run to some stages (names, keys or ``NN`` prefixes); their upstream
    stages are added when not up to date. Raises :class:`StageError` at the first failing stage.
    """
    import papermill as pm

    if profile not in profiles:
        raise ValueError(f"unknown profile {profile!r}; choose from {sorted(profiles)}")
    if not name or Path(name).name != name or name.startswith("."):
        raise ValueError(f"run name must be a plain folder name, got {name!r}")
    nb_dir = Path(notebooks_dir) if notebooks_dir is not None else default_notebooks_dir()
    by_name = {s.name: s for s in stage_list}
    for s in stage_list:
        for d in s.depends:
            if d not in by_name or list(by_name).index(d) >= list(by_name).index(s.name):
                raise ValueError(f"stage {s.name}: dependency {d!r} must be an earlier stage")
        if not (nb_dir / s.notebook).is_file():
            raise FileNotFoundError(f"stage {s.name}: notebook {nb_dir / s.notebook} not found")

    manifest_path = Path(manifest).resolve() if manifest else None
    if manifest_path is not None and not manifest_path.is_file():
        raise FileNotFoundError(f"data manifest {manifest_path} not found")
    manifest_hash = file_sha256(manifest_path) if manifest_path else None

    run_dir = (Path(runs_dir) / name).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    prov_path = run_dir / PROVENANCE_FILE
    previous: dict[str, Any] = {}
    if prov_path.is_file():
        try:
            previous = json.loads(prov_path.read_text(encoding="utf-8")).get("stages", {})
        except (json.JSONDecodeError, AttributeError) as exc:
            log.warning("ignoring unreadable %s (%s); all stages will run", prov_path, exc)

    # -- resolve each stage's parameters and fingerprint
    declared = {s.name: notebook_parameters(nb_dir / s.notebook) for s in stage_list}
    dir_params = {s.dir_param: s.name for s in stage_list}
    for s in stage_list:
        for pname in declared[s.name]:
            if pname in dir_params and dir_params[pname] not in s.depends:
                raise ValueError(f"notebook {nb_dir / s.notebook} reads {pname!r} but stage {s.name} does not "
                                 f"depend on {dir_params[pname]}; add it to the stage's depends")
    user = dict(params or {})
    layout_names = {"out_dir"} | set(dir_params)
    fixed = sorted(k for k in user if k.rpartition(".")[2] in layout_names)
    if fixed:
        raise ValueError(f"{fixed}: stage folders are set by the pipeline (runs/<name>/<stage>); use --name/--runs-dir")
    if any(k.rpartition(".")[2] == "manifest" for k in user):
        raise ValueError("pass the data manifest with manifest=/--manifest (it is hashed), not as a parameter")
    all_keys = set().union(*declared.values()) if declared else set()
    for key in user:
        stage_part, dot, pkey = key.rpartition(".")
        if dot and stage_part:
            target = _select(stage_list, [stage_part])[0]
            if pkey not in declared[target]:
                raise ValueError(f"stage {target} declares no parameter {pkey!r}; it has {sorted(declared[target])}")
        elif key not in all_keys:
            raise ValueError(f"no notebook declares parameter {key!r}; declared: {sorted(all_keys)}")

    base = dict(profiles[profile])
    base["manifest"] = str(manifest_path) if manifest_path else ""
    stage_params: dict[str, dict[str, Any]] = {}
    fingerprints: dict[str, str] = {}
    for s in stage_list:
        layout = {"out_dir": str(run_dir / s.name)}
        for d in s.depends:
            layout[by_name[d].dir_param] = str(run_dir / d)
        values = dict(base)
        for key, val in user.items():
            stage_part, dot, pkey = key.rpartition(".")
            if not dot:
                values[key] = val
            elif _select(stage_list, [stage_part])[0] == s.name:
                values[pkey] = val
        chosen = {k: v for k, v in values.items() if k in declared[s.name]}
        fp_params = {k: v for k, v in chosen.items() if k != "manifest"}
        chosen.update({k: v for k, v in layout.items() if k in declared[s.name]})
        stage_params[s.name] = chosen
        fingerprints[s.name] = _stable_hash({
            "notebook": notebook_source_hash(nb_dir / s.notebook),
            "params": fp_params,
            "manifest": manifest_hash if "manifest" in declared[s.name] else None,
            "upstream": {d: fingerprints[d] for d in s.depends},
        })

    def up_to_date(sname: str) -> tuple[bool, str]:
        prev = previous.get(sname) or {}
        if not prev:
            return False, "never ran"
        if prev.get("status") != "ok":
            return False, "previous execution failed"
        if prev.get("fingerprint") != fingerprints[sname]:
            return False, "inputs changed (notebook, parameters, manifest or upstream stage)"
        if not (run_dir / f"{sname}.ipynb").is_file() or not (run_dir / sname).is_dir():
            return False, "outputs missing"
        return True, "up to date"

    selected = set(_select(stage_list, stages))
    if stages:  # pull in stale upstream stages
        changed = True
        while changed:
            changed = False
            for s in stage_list:
                if s.name in selected:
                    for d in s.depends:
                        if d not in selected and not up_to_date(d)[0]:
                            log.info("stage %s is not up to date; adding it (needed by %s)", d, s.name)
                            selected.add(d)
                            changed = True

    provenance: dict[str, Any] = {
        "run": name,
        "run_dir": str(run_dir),
        "profile": profile,
        "created": _now(),
        "git": git_commit(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
        "manifest": {"path": str(manifest_path) if manifest_path else None, "sha256": manifest_hash,
                     "source": "user" if manifest_path else "synthetic (01_cohort)"},
        "user_parameters": user,
        "force": force,
        "stages": dict(previous),
    }

    def save_provenance() -> None:
        provenance["updated"] = _now()
        atomic_write_json(prov_path, provenance)

    result = RunResult(run_dir=run_dir)
    for s in stage_list:
        if s.name not in selected:
            continue
        ok, why = up_to_date(s.name)
        if ok and not force:
            log.info("stage %s: skipped (%s)", s.name, why)
            ran_with = (previous[s.name].get("git") or {}).get("commit")
            if ran_with and provenance["git"].get("commit") and ran_with != provenance["git"]["commit"]:
                log.info("stage %s executed with commit %s; the code is now at %s (its notebook and inputs "
                         "are unchanged; `--stages %s --force` re-runs it with this code)",
                         s.name, ran_with[:10], provenance["git"]["commit"][:10], s.name)
            result.stages.append(StageResult(s.name, "skipped", fingerprints[s.name], why,
                                             executed_notebook=run_dir / f"{s.name}.ipynb"))
            provenance["stages"][s.name] = {**previous[s.name], "last_action": "skipped"}
            continue
        why = "forced" if force and ok else why
        out_dir = run_dir / s.name
        prev = previous.get(s.name) or {}
        resume = prev.get("status") == "failed" and prev.get("fingerprint") == fingerprints[s.name] and not force
        if out_dir.exists() and not resume:
            shutil.rmtree(out_dir)  # stale outputs of other inputs must not leak into this execution
        out_dir.mkdir(parents=True, exist_ok=True)
        executed = run_dir / f"{s.name}.ipynb"
        failed_nb = run_dir / f"{s.name}.failed.ipynb"
        tmp_nb = run_dir / f".{s.name}.running.ipynb"
        failed_nb.unlink(missing_ok=True)
        entry = {"fingerprint": fingerprints[s.name], "notebook": str(nb_dir / s.notebook),
                 "parameters": stage_params[s.name], "started": _now(), "finished": None,
                 "notebook_defaults": {k: v for k, v in declared[s.name].items() if k not in stage_params[s.name]},
                 "status": "running", "last_action": "ran", "reason": why,
                 "git": provenance["git"]}  # the code this execution ran; the run-level "git" is the last invocation's
        provenance["stages"][s.name] = entry
        save_provenance()
        log.info("stage %s: running %s (%s)", s.name, nb_dir / s.notebook, why)
        t0 = time.perf_counter()
        try:
            pm.execute_notebook(str(nb_dir / s.notebook), str(tmp_nb), parameters=stage_params[s.name],
                                kernel_name=KERNEL_NAME, progress_bar=False, log_output=log_output,
                                cwd=str(out_dir), start_timeout=start_timeout)
        except BaseException as exc:  # noqa: BLE001 - record, then re-raise as StageError
            seconds = time.perf_counter() - t0
            if tmp_nb.exists():
                os.replace(tmp_nb, failed_nb)
            entry.update(status="failed", finished=_now(), seconds=round(seconds, 2),
                         error=f"{type(exc).__name__}: {exc}"[:2000])
            save_provenance()
            result.stages.append(StageResult(s.name, "failed", fingerprints[s.name], why, seconds, failed_nb))
            if isinstance(exc, KeyboardInterrupt):
                raise
            raise _stage_error(s, nb_dir / s.notebook, exc, failed_nb) from exc
        seconds = time.perf_counter() - t0
        os.replace(tmp_nb, executed)
        entry.update(status="ok", finished=_now(), seconds=round(seconds, 2))
        save_provenance()
        log.info("stage %s: done in %.1f s", s.name, seconds)
        result.stages.append(StageResult(s.name, "ran", fingerprints[s.name], why, seconds, executed))
    save_provenance()
    return result


def _stage_error(stage: Stage, notebook: Path, exc: BaseException, failed_nb: Path) -> StageError:
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
    parser.add_argument("--name", default="default", help="run folder name under --runs-dir (default: default)")
    parser.add_argument("--profile", default="cpu", choices=sorted(PROFILES),
                        help="tiny (CI), cpu (2-core CPU study, default) or paper (paper settings, GPU box)")
    parser.add_argument("--manifest", help="data manifest CSV (default: synthesise a cohort for the profile)")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="override a notebook parameter (KEY for every stage declaring it, or STAGE.KEY); "
                             "VALUE is parsed as JSON when possible; repeatable")
    parser.add_argument("--stages", nargs="+", metavar="STAGE", help="run only these stages (e.g. 05 06_subgroups)")
    parser.add_argument("--force", action="store_true", help="re-run stages even when up to date")
    parser.add_argument("--runs-dir", default="runs", help="folder holding the run folders (default: runs)")
    parser.add_argument("--notebooks-dir", default=None, help="folder with the study notebooks")
    parser.add_argument("--no-book", action="store_true", help="do not build the HTML book afterwards")
    parser.add_argument("--book-dir", default="book", help="book source folder; HTML goes to BOOK_DIR/_build/html")
    parser.add_argument("--log-output", action="store_true", help="stream notebook cell output to the log")


def cli_main(args: argparse.Namespace) -> int:
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
