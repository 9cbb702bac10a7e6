"""What each stage notebook receives: ``--param`` parsing, plan overrides versus notebook parameters.

A ``--param KEY=VALUE`` is a **plan override** when KEY is a study setting (``seed``, ``gpu``,
``test_fraction``, ``n_jobs``) or ``SECTION.FIELD`` with SECTION a plan section (``synth``,
``preprocess``, ``train``, ``inference``, ``evaluation``); it changes ``runs/<name>/plan.json``.
Any other KEY is a **notebook parameter**: a bare KEY goes to every notebook declaring it,
``STAGE.KEY`` (``03_training.foo``, ``03.foo``) to one stage. Note that ``inference.X`` is the plan
section; address the inference notebook's own parameters as ``04_inference.X``.

The runner sets the layout parameters itself: ``out_dir``, ``<key>_dir`` of each upstream stage,
``plan`` (the absolute path of ``plan.json``), ``profile`` and ``manifest`` (the data manifest, which
is hashed). A notebook that declares a study setting (e.g. ``seed``) receives the plan's value.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from ..plan import StudyPlan, parse_override
from ..utils import PathLike
from .stages import PLAN_SECTIONS, PLAN_SETTINGS, Stage, select_stages

__all__ = ["LAYOUT_PARAMS", "PLAN_OVERRIDE_SETTINGS", "notebook_parameters", "parse_param", "is_plan_key",
           "split_params", "check_notebook_parameters", "stage_parameters"]

#: Parameters the runner sets from the run folder layout (besides each stage's ``<key>_dir``).
LAYOUT_PARAMS: tuple[str, ...] = ("out_dir", "plan", "profile")
#: Study settings a ``--param`` may override (``profile`` is chosen with ``--profile``).
PLAN_OVERRIDE_SETTINGS: tuple[str, ...] = tuple(k for k in PLAN_SETTINGS if k != "profile")


def notebook_parameters(path: PathLike) -> dict[str, Any]:
    """Names and default values (as source text) declared in a notebook's ``parameters`` cell.

    Parameters
    ----------
    path : path-like
        The notebook.

    Returns
    -------
    dict
        ``{name: default source text}`` as papermill reads it.

    Raises
    ------
    ValueError
        When no cell is tagged ``parameters``.
    """
    import nbformat
    import papermill as pm

    nb = nbformat.read(str(path), as_version=4)
    if not any("parameters" in c.get("metadata", {}).get("tags", []) for c in nb.cells):
        raise ValueError(f"{path}: no cell tagged 'parameters' (papermill needs one)")
    info = pm.inspect_notebook(str(path))
    return {name: spec.get("default") for name, spec in info.items()}


def parse_param(text: str) -> tuple[str, Any]:
    """Parse ``KEY=VALUE``; VALUE is read as JSON when it parses (numbers, true/false, lists), else a string.

    Parameters
    ----------
    text : str
        ``KEY=VALUE`` or ``STAGE.KEY=VALUE``.

    Returns
    -------
    (str, object)
        The key and the parsed value.

    Raises
    ------
    ValueError
        When there is no ``=`` or no key.
    """
    return parse_override(text, usage="--param expects KEY=VALUE or STAGE.KEY=VALUE")


def is_plan_key(key: str) -> bool:
    """Whether ``key`` addresses the study plan (``seed``, ``train.epochs``) rather than a notebook.

    Parameters
    ----------
    key : str
        A ``--param`` key.

    Returns
    -------
    bool
    """
    head, dot, tail = key.partition(".")
    if not dot:
        return key in PLAN_OVERRIDE_SETTINGS
    return head in PLAN_SECTIONS and bool(tail)


def split_params(params: Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split ``--param`` values into plan overrides and notebook parameters.

    Parameters
    ----------
    params : mapping or None
        ``{KEY: value}`` as given by the user.

    Returns
    -------
    plan_overrides, notebook_params : dict, dict

    Raises
    ------
    ValueError
        For ``profile`` (chosen with ``--profile``).
    """
    plan_ov: dict[str, Any] = {}
    nb_params: dict[str, Any] = {}
    for key, value in (params or {}).items():
        if key.rpartition(".")[2] == "profile":
            raise ValueError("choose the profile with profile=/--profile, not as a parameter")
        (plan_ov if is_plan_key(key) else nb_params)[key] = value
    return plan_ov, nb_params


def check_notebook_parameters(stages: Sequence[Stage], declared: Mapping[str, Mapping[str, Any]],
                              user: Mapping[str, Any], notebooks_dir: Path) -> None:
    """Validate the notebooks' declarations and the user's notebook parameters before anything runs.

    Parameters
    ----------
    stages : sequence of Stage
        The stage list.
    declared : mapping
        ``{stage name: notebook_parameters(...)}``.
    user : mapping
        Notebook parameters from :func:`split_params`.
    notebooks_dir : Path
        Where the notebooks are (for the messages).

    Raises
    ------
    ValueError
        When a notebook reads a stage folder it does not depend on, the user sets a layout parameter or
        ``manifest``, or no (addressed) notebook declares a parameter.
    """
    dir_params = {s.dir_param: s.name for s in stages}
    for s in stages:
        for pname in declared[s.name]:
            if pname in dir_params and dir_params[pname] not in s.depends:
                raise ValueError(f"notebook {notebooks_dir / s.notebook} reads {pname!r} but stage {s.name} does "
                                 f"not depend on {dir_params[pname]}; add it to the stage's depends")
    fixed = sorted(k for k in user if k.rpartition(".")[2] in {"out_dir", "plan", *dir_params})
    if fixed:
        raise ValueError(f"{fixed}: stage folders and the plan file are set by the pipeline "
                         "(runs/<name>/<stage>); use --name/--runs-dir")
    if any(k.rpartition(".")[2] == "manifest" for k in user):
        raise ValueError("pass the data manifest with manifest=/--manifest (it is hashed), not as a parameter")
    all_keys = set().union(*declared.values()) if declared else set()
    for key in user:
        stage_part, dot, pkey = key.rpartition(".")
        if dot and stage_part:
            target = select_stages(stages, [stage_part])[0]
            if pkey not in declared[target]:
                raise ValueError(f"stage {target} declares no parameter {pkey!r}; it has {sorted(declared[target])}")
        elif key not in all_keys:
            raise ValueError(f"no notebook declares parameter {key!r}; declared: {sorted(all_keys)}")


def stage_parameters(stage: Stage, stages: Sequence[Stage], declared: Mapping[str, Any],
                     user: Mapping[str, Any], plan: StudyPlan) -> dict[str, Any]:
    """The non-layout parameters a stage receives: plan settings it declares, then the user's values.

    Parameters
    ----------
    stage : Stage
        The stage.
    stages : sequence of Stage
        The stage list (to resolve ``STAGE.KEY``).
    declared : mapping
        The stage notebook's declared parameters.
    user : mapping
        Notebook parameters from :func:`split_params`.
    plan : StudyPlan
        The run's plan (study settings a notebook declares take the plan's value).

    Returns
    -------
    dict
        Only names the notebook declares; these enter the stage's fingerprint.
    """
    values: dict[str, Any] = {k: getattr(plan, k) for k in PLAN_OVERRIDE_SETTINGS}
    for key, val in user.items():
        stage_part, dot, pkey = key.rpartition(".")
        if not dot:
            values[key] = val
        elif select_stages(stages, [stage_part])[0] == stage.name:
            values[pkey] = val
    return {k: v for k, v in values.items() if k in declared}
