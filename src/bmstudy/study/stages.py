"""The study's stages: one notebook each, in pipeline order, with what each reads.

A :class:`Stage` names its notebook, the earlier stages whose output folders it reads, a one-line
description (shown in the book's pipeline diagram) and the parts of the study plan it reads (which
enter its fingerprint, so changing ``train.epochs`` re-runs the training stage and its dependents
only). :data:`STAGES` is the study in execution order.

This module imports nothing but :mod:`bmstudy.plan`, so the book (:mod:`bmstudy.reporting.book`) can
draw the pipeline without importing the runner.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Sequence

from ..plan import StudyPlan

__all__ = ["Stage", "STAGES", "PLAN_SECTIONS", "PLAN_SETTINGS", "PLAN_KEYS", "select_stages",
           "check_stage_graph"]


def _plan_fields() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(settings, sections)`` of :class:`~bmstudy.plan.StudyPlan`: scalar fields and parameter sets."""
    hints = typing.get_type_hints(StudyPlan)
    names = [f.name for f in dataclasses.fields(StudyPlan)]
    sections = tuple(n for n in names if dataclasses.is_dataclass(hints[n]))
    return tuple(n for n in names if n not in sections), sections


#: Study-level plan settings (``profile``, ``seed``, ``gpu``, ``test_fraction``, ``n_jobs``).
#: Plan sections: one parameter set per stage family (``synth``, ``preprocess``, ``train``,
#: ``inference``, ``evaluation``).
PLAN_SETTINGS, PLAN_SECTIONS = _plan_fields()
#: Every top-level key of ``plan.json``: the names a notebook must read from ``ctx.plan``, never
#: declare as its own parameters.
PLAN_KEYS: tuple[str, ...] = PLAN_SETTINGS + PLAN_SECTIONS


@dataclass(frozen=True)
class Stage:
    """One study stage.

    Parameters
    ----------
    name : str
        ``NN_<key>``; the order prefix sorts the stages.
    notebook : str
        File name of the stage's notebook in the notebooks folder.
    depends : tuple of str
        Earlier stages whose output folders this stage reads (passed as ``<key>_dir``).
    description : str
        One line saying what the stage does (the book's pipeline diagram).
    plan_sections : tuple of str
        The plan settings and sections the stage reads (:data:`PLAN_KEYS`); they enter its fingerprint.
    status_table : str
        Its per-case status table, relative to its output folder (``status`` column: ok / excluded /
        failed); summarised at the end of a run (:mod:`bmstudy.study.accounting`). Empty: none.
    """

    name: str
    notebook: str
    depends: tuple[str, ...] = ()
    description: str = ""
    plan_sections: tuple[str, ...] = ()
    status_table: str = ""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.plan_sections) - set(PLAN_KEYS))
        if unknown:
            raise ValueError(f"stage {self.name}: unknown plan section(s) {unknown}; choose from {list(PLAN_KEYS)}")

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
    Stage("01_cohort", "01_cohort.ipynb", (),
          "manifest or synthetic cohort; systematic split; Table 1",
          ("seed", "test_fraction", "synth"), "synthetic/synth_status.csv"),
    Stage("02_preprocessing", "02_preprocessing.ipynb", ("01_cohort",),
          "alignment check, resample, skull strip, Z-score, QC",
          ("preprocess", "n_jobs"), "preprocess_report.csv"),
    Stage("03_training", "03_training.ipynb", ("01_cohort", "02_preprocessing"),
          "3D U-Net (ResNet-34 encoder) training curves",
          ("train", "gpu", "seed")),
    Stage("04_inference", "04_inference.ipynb", ("01_cohort", "03_training"),
          "sliding window predictions, timings",
          ("inference", "gpu"), "timings.csv"),
    Stage("05_metrics", "05_metrics.ipynb", ("01_cohort", "04_inference"),
          "per-patient metrics, Table 2, Figure 3, lesion-wise detection",
          ("evaluation",), "metrics.csv"),
    Stage("06_subgroups", "06_subgroups.ipynb", ("01_cohort", "05_metrics"),
          "subgroups (Figure 4): Mann-Whitney, DeLong, patient-level tests",
          ("evaluation", "seed")),
    Stage("07_timing", "07_timing.ipynb", ("01_cohort", "04_inference", "05_metrics"),
          "model vs manual time (Table 3)", ("evaluation",)),
)


def select_stages(stages: Sequence[Stage], wanted: Sequence[str] | None) -> list[str]:
    """Stage names matching ``wanted`` (names, keys or ``NN`` prefixes); all stages when empty.

    Parameters
    ----------
    stages : sequence of Stage
        The stage list.
    wanted : sequence of str or None
        E.g. ``["05", "subgroups", "07_timing"]``.

    Returns
    -------
    list of str
        The matching stage names, in the order of ``wanted``.

    Raises
    ------
    ValueError
        When an entry matches no stage or more than one.
    """
    if not wanted:
        return [s.name for s in stages]
    chosen: list[str] = []
    for w in wanted:
        hits = [s.name for s in stages if w in (s.name, s.key) or s.name.startswith(f"{w}_")]
        if len(hits) != 1:
            raise ValueError(f"unknown stage {w!r}; stages are {[s.name for s in stages]}")
        chosen.append(hits[0])
    return chosen


def check_stage_graph(stages: Sequence[Stage]) -> None:
    """Check that every dependency names an earlier stage.

    Parameters
    ----------
    stages : sequence of Stage
        The stage list, in execution order.

    Raises
    ------
    ValueError
        Naming the stage and the dependency that is unknown or not earlier.
    """
    order = [s.name for s in stages]
    for s in stages:
        for d in s.depends:
            if d not in order or order.index(d) >= order.index(s.name):
                raise ValueError(f"stage {s.name}: dependency {d!r} must be an earlier stage")
