"""``runs/<name>/provenance.json``: what ran, with which code, packages, plan and data.

The runner rewrites the file after every stage. It records the git commit and package versions of
the last invocation, the plan (``plan.json`` and its hash), the data manifest (path and SHA-256), the
user's parameters and, per stage, its fingerprint, parameters, status and start/end times together
with the commit that stage executed with.
"""
from __future__ import annotations

import datetime as _dt
import json
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..plan import StudyPlan
from ..utils import PathLike, atomic_write_json, get_logger

log = get_logger("bmstudy.study.provenance")

__all__ = ["PROVENANCE_FILE", "PLAN_FILE", "PROVENANCE_PACKAGES", "FINGERPRINT_PACKAGES", "REPO_ROOT", "now", "git_commit",
           "package_versions", "read_stage_records", "new_provenance", "save_provenance"]

PROVENANCE_FILE = "provenance.json"
PLAN_FILE = "plan.json"
#: The repository holding this package (editable install): src/bmstudy/study/ -> repository root.
REPO_ROOT = Path(__file__).resolve().parents[3]

#: Packages whose versions go into provenance.json (missing ones are recorded as null).
PROVENANCE_PACKAGES: tuple[str, ...] = (
    "bmstudy", "tensorflow-cpu", "tensorflow", "keras", "segmentation-models-3D",
    "classification-models-3D", "volumentations-3D", "numpy", "scipy", "pandas", "scikit-learn",
    "scikit-image", "statsmodels", "nibabel", "SimpleITK", "matplotlib", "seaborn", "papermill",
    "nbformat", "ipykernel", "jupyter-book",
)
#: Packages whose versions enter every stage's fingerprint (an upgrade re-runs the study): the pinned
#: packages that compute results. Not bmstudy itself (its modules' source is fingerprinted) nor the
#: book builder (it only renders).
FINGERPRINT_PACKAGES: tuple[str, ...] = tuple(p for p in PROVENANCE_PACKAGES if p not in ("bmstudy", "jupyter-book"))


def now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def git_commit(repo: PathLike | None = None) -> dict[str, Any]:
    """The commit of the repository holding this package.

    Parameters
    ----------
    repo : path-like, optional
        Repository folder; default :data:`REPO_ROOT`.

    Returns
    -------
    dict
        ``{"commit": sha or None, "dirty": bool or None}`` (``None`` when git is unavailable).
    """
    root = Path(repo) if repo is not None else REPO_ROOT
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             encoding="utf-8", errors="replace", timeout=20, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=20,
                               check=True).stdout.strip()
        return {"commit": sha, "dirty": bool(dirty)}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def package_versions(names: Iterable[str] = PROVENANCE_PACKAGES) -> dict[str, str | None]:
    """Installed versions via :mod:`importlib.metadata`.

    Parameters
    ----------
    names : iterable of str
        Distribution names.

    Returns
    -------
    dict
        ``{name: version or None}`` (``None`` when a package is absent).
    """
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def read_stage_records(path: PathLike) -> dict[str, Any]:
    """The per-stage records of an existing ``provenance.json`` (empty when absent or unreadable).

    Parameters
    ----------
    path : path-like
        The provenance file.

    Returns
    -------
    dict
        ``{stage name: record}``.
    """
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        stages = json.loads(path.read_text(encoding="utf-8")).get("stages", {})
        return dict(stages) if isinstance(stages, dict) else {}
    except (json.JSONDecodeError, AttributeError) as exc:
        log.warning("ignoring unreadable %s (%s); all stages will run", path, exc)
        return {}


def new_provenance(*, name: str, run_dir: Path, profile: str, plan: StudyPlan, plan_path: Path,
                   manifest_path: Path | None, manifest_hash: str | None, user: Mapping[str, Any],
                   force: bool, git: Mapping[str, Any], previous: Mapping[str, Any]) -> dict[str, Any]:
    """The provenance record of one invocation of the runner.

    Parameters
    ----------
    name, run_dir, profile : str, Path, str
        The run.
    plan, plan_path : StudyPlan, Path
        The resolved plan and where it was written.
    manifest_path, manifest_hash : Path or None, str or None
        The user's data manifest (``None``: synthesised by the cohort stage).
    user : mapping
        The user's ``--param`` values (plan overrides and notebook parameters).
    force : bool
        Whether up-to-date stages are re-run.
    git : mapping
        :func:`git_commit` of this invocation.
    previous : mapping
        :func:`read_stage_records` of the last invocation (kept for stages that do not run).

    Returns
    -------
    dict
        JSON-ready; :func:`save_provenance` writes it.
    """
    return {
        "run": name,
        "run_dir": str(run_dir),
        "profile": profile,
        "created": now(),
        "git": dict(git),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
        "plan": {"path": plan_path.name, "hash": plan.hash()},
        "manifest": {"path": str(manifest_path) if manifest_path else None, "sha256": manifest_hash,
                     "source": "user" if manifest_path else "synthetic (01_cohort)"},
        "user_parameters": dict(user),
        "force": force,
        "stages": dict(previous),
    }


def save_provenance(path: PathLike, provenance: dict[str, Any]) -> Path:
    """Stamp ``updated`` and write ``provenance`` atomically.

    Parameters
    ----------
    path : path-like
        ``runs/<name>/provenance.json``.
    provenance : dict
        From :func:`new_provenance` (modified in place).

    Returns
    -------
    Path
    """
    provenance["updated"] = now()
    return atomic_write_json(path, provenance)
