"""What every study notebook does first: one call instead of a setup cell per notebook.

``ctx = bmstudy.study.notebook_setup(out_dir, plan=plan, profile=profile)`` creates the stage's output
folder, loads the run's :class:`~bmstudy.plan.StudyPlan` (the ``plan.json`` the runner passes, else the
run folder's, else the plan of ``profile`` for interactive use), hides GPUs unless the plan allows
them, sets display options and returns the book reporter bound to the output folder.
"""
from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..plan import StudyPlan, load_plan, resolve_plan
from ..utils import PathLike
from .provenance import PLAN_FILE

__all__ = ["NotebookContext", "notebook_setup", "find_plan"]


@dataclass
class NotebookContext:
    """A stage notebook's settings and helpers.

    Attributes
    ----------
    out_dir : Path
        The stage's output folder (created).
    plan : StudyPlan
        The run's plan: every setting a notebook reads.
    plan_path : Path or None
        The ``plan.json`` it came from (``None`` when resolved from a profile).
    show_table, show_figure : callable
        Display a table / figure and, with a ``name``, publish it to the book's results page
        (:func:`bmstudy.reporting.publish.notebook_reporter`).
    """

    out_dir: Path
    plan: StudyPlan
    plan_path: Path | None
    show_table: Callable[..., None]
    show_figure: Callable[..., None]


def find_plan(out_dir: PathLike, plan: PathLike | None = None) -> Path | None:
    """The plan file: ``plan`` if given, else ``plan.json`` in the run folder (``out_dir``'s parent).

    Parameters
    ----------
    out_dir : path-like
        The stage's output folder.
    plan : path-like, optional
        An explicit plan file.

    Returns
    -------
    Path or None
        ``None`` when no plan is given and the run folder has none.

    Raises
    ------
    FileNotFoundError
        When ``plan`` is given but does not exist.
    """
    if plan:
        p = Path(plan)
        if not p.is_file():
            raise FileNotFoundError(f"study plan not found: {p}")
        return p
    candidate = Path(out_dir).parent / PLAN_FILE
    return candidate if candidate.is_file() else None


def notebook_setup(out_dir: PathLike, *, gpu: bool | None = None, plan: PathLike | None = None,
                   profile: str = "cpu") -> NotebookContext:
    """Prepare a study notebook: output folder, plan, display options and the book reporter.

    Parameters
    ----------
    out_dir : path-like
        The stage's output folder.
    gpu : bool, optional
        ``False`` hides GPUs from TensorFlow (must run before TensorFlow is imported); ``None`` takes
        the plan's ``gpu``.
    plan : path-like, optional
        Path of ``plan.json``; empty: the run folder's ``plan.json``, else the plan of ``profile``
        (interactive use outside a run).
    profile : str
        Profile resolved when there is no plan file.

    Returns
    -------
    NotebookContext

    Raises
    ------
    FileNotFoundError
        When ``plan`` names a missing file.
    ValueError
        When the plan file is invalid or ``profile`` unknown.
    """
    import pandas as pd

    from ..reporting.publish import notebook_reporter

    out = Path(out_dir)
    path = find_plan(out, plan)
    study_plan = load_plan(path) if path is not None else resolve_plan(profile)
    use_gpu = study_plan.gpu if gpu is None else bool(gpu)
    if not use_gpu and "tensorflow" not in sys.modules:
        os.environ["CUDA_VISIBLE_DEVICES"] = "-1"
    warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets: text bars
    pd.set_option("display.max_columns", 40)
    pd.set_option("display.width", 200)
    _inline_matplotlib()
    show_table, show_figure = notebook_reporter(out)
    if study_plan.dask_scheduler:  # per-case stages of this kernel run on the Dask cluster
        from ..executors import set_default_executor

        set_default_executor(study_plan.dask_scheduler, study_plan.n_jobs)
    return NotebookContext(out, study_plan, path, show_table, show_figure)


def _inline_matplotlib() -> None:
    """``%matplotlib inline`` when running under IPython; nothing otherwise."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython ships with ipykernel
        return
    ip: Any = get_ipython()
    if ip is not None:
        ip.run_line_magic("matplotlib", "inline")
