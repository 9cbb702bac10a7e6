"""The study plan: every parameter of every stage, resolved from a profile name and overrides.

This package is the only place where profiles live. A :class:`StudyPlan` bundles one frozen parameter
set per stage (:class:`SynthParams`, :class:`PreprocessParams`, :class:`TrainConfig`,
:class:`InferenceParams`, :class:`EvalParams`) plus the study-level settings (seed, GPU use, split
fraction). :func:`resolve_plan` builds it from a profile (``tiny``, ``cpu``, ``paper``) and overrides
given as a nested mapping or as dotted ``section.field`` keys; :meth:`StudyPlan.to_dict`,
:meth:`StudyPlan.from_dict` and :meth:`StudyPlan.hash` round-trip it, and the study runner writes it
to ``runs/<name>/plan.json``.

The package imports nothing from the stage packages (they import their parameters from here). Its modules:
``checks`` (shared constants and validation), ``cohort`` (synthetic cohort), ``stages`` (preprocessing,
inference, evaluation), ``train_config`` (training); this ``__init__`` holds the plan itself.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

from ..utils import PathLike, atomic_write_json, params_hash
from .checks import (BLENDS, DIVISOR, GENERATOR_VERSION, INTERPOLATION_ORDER, NORMALISATIONS, SKULL_STRIP_BACKENDS,
                     check_patch_size)
from .cohort import SYNTH_PRESETS, SiteParams, SynthParams, default_sites, synth_params
from .stages import EvalParams, InferenceParams, PreprocessParams
from .train_config import AugmentParams, TrainConfig

__all__ = [
    "GENERATOR_VERSION", "DIVISOR", "INTERPOLATION_ORDER", "NORMALISATIONS", "SKULL_STRIP_BACKENDS", "BLENDS",
    "PROFILES", "SYNTH_PRESETS", "check_patch_size", "SiteParams", "SynthParams", "default_sites", "synth_params",
    "PreprocessParams", "AugmentParams", "TrainConfig", "InferenceParams", "EvalParams", "StudyPlan",
    "resolve_plan", "load_plan", "write_plan", "parse_override",
]


PROFILES: dict[str, dict[str, Any]] = {
    "tiny": {"gpu": False, "synth": "tiny", "preprocess": {"target_spacing": (1.0, 1.0, 1.0)}, "train": "tiny"},
    "cpu": {"gpu": False, "synth": "default", "preprocess": {"target_spacing": (1.0, 1.0, 1.0), "crop_to_brain": True},
            "train": "cpu", "inference": {"precision": "auto"}},
    "paper": {"gpu": True, "synth": "paper", "preprocess": {}, "train": "paper"},
}
_SECTIONS = ("synth", "preprocess", "train", "inference", "evaluation")
_TOP_LEVEL = ("profile", "seed", "gpu", "test_fraction", "n_jobs", "dask_scheduler")


def _section_dict(obj: Any) -> dict[str, Any]:
    d = obj.to_dict() if hasattr(obj, "to_dict") else asdict(obj)
    if isinstance(obj, SynthParams):
        d = {k: v for k, v in asdict(obj).items() if k != "sites"}
    return json.loads(json.dumps(d, default=list))  # tuples -> lists, JSON-clean


@dataclass(frozen=True)
class StudyPlan:
    """Every parameter of every stage of one study run (written as ``runs/<name>/plan.json``).

    Attributes
    ----------
    profile : the profile it was resolved from.
    seed : seeds the synthetic cohort, the split and training.
    gpu : let TensorFlow see GPUs.
    test_fraction : share of internal cases in the test set (systematic split).
    n_jobs : parallel cases in the per-case stages.
    dask_scheduler : run the per-case stages on Dask (``tcp://HOST:PORT`` or ``'local'``); None: local processes.
    synth, preprocess, train, inference, evaluation : the stages' parameter sets.
    """

    profile: str
    seed: int
    gpu: bool
    test_fraction: float
    n_jobs: int
    synth: SynthParams
    preprocess: PreprocessParams
    train: TrainConfig
    inference: InferenceParams
    evaluation: EvalParams
    dask_scheduler: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready nested dict (sections as dicts)."""
        d: dict[str, Any] = {k: getattr(self, k) for k in _TOP_LEVEL}
        for s in _SECTIONS:
            d[s] = _section_dict(getattr(self, s))
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "StudyPlan":
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        unknown = set(d) - set(_TOP_LEVEL) - set(_SECTIONS)
        if unknown:
            raise ValueError(f"unknown plan keys {sorted(unknown)}; known: {sorted(_TOP_LEVEL + _SECTIONS)}")
        synth_d = dict(d.get("synth") or {})
        name = synth_d.pop("name", "custom")
        synth = synth_params(SYNTH_PRESETS.get(name, SYNTH_PRESETS["default"]), **synth_d)
        synth = dataclasses.replace(synth, name=name, sites=None) if synth.name != name else synth
        return cls(
            profile=str(d.get("profile", "custom")), seed=int(d.get("seed", 0)), gpu=bool(d.get("gpu", False)),
            test_fraction=float(d.get("test_fraction", 0.2)), n_jobs=int(d.get("n_jobs", 2)),
            synth=synth,
            preprocess=PreprocessParams.from_dict(dict(d.get("preprocess") or {})),
            train=TrainConfig.from_dict(dict(d.get("train") or {})),
            inference=_build(InferenceParams, d.get("inference")),
            evaluation=_build(EvalParams, d.get("evaluation")),
            dask_scheduler=d.get("dask_scheduler") or None,
        )

    def hash(self) -> str:
        """Short stable hash of the whole plan."""
        return params_hash(self.to_dict())

    def section(self, name: str) -> dict[str, Any]:
        """One section as a JSON-ready dict (what a stage's fingerprint covers)."""
        if name not in _SECTIONS:
            raise ValueError(f"unknown plan section {name!r}; choose from {_SECTIONS}")
        return _section_dict(getattr(self, name))


def _build(cls: type, d: Mapping[str, Any] | None) -> Any:
    d = dict(d or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - known
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s) {sorted(unknown)}; known: {sorted(known)}")
    for k in ("splits", "mask_labels"):
        if isinstance(d.get(k), list):
            d[k] = tuple(d[k])
    return cls(**d)


def parse_override(text: str, usage: str = "override must look like KEY=VALUE (e.g. train.epochs=3)") -> tuple[str, Any]:
    """``'train.epochs=3'`` -> ``('train.epochs', 3)``; the value is JSON when it parses, else a string.

    ``usage`` opens the error message for text without ``=`` or without a key.
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ValueError(f"{usage}, got {text!r}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key, value


def _nest(overrides: Mapping[str, Any] | None) -> dict[str, dict[str, Any] | Any]:
    """Dotted keys (``train.epochs``) and nested mappings (``{"train": {...}}``) as one nested dict."""
    out: dict[str, Any] = {}
    for key, value in (overrides or {}).items():
        head, dot, tail = str(key).partition(".")
        if head in _SECTIONS:
            sec = out.setdefault(head, {})
            if dot:
                sec[tail] = value
            elif isinstance(value, Mapping):
                sec.update(value)
            else:
                raise ValueError(f"plan section {head!r} needs a mapping of fields, got {value!r}")
        elif head in _TOP_LEVEL and not dot:
            out[head] = value
        else:
            raise ValueError(f"unknown plan key {key!r}; use one of {list(_TOP_LEVEL)} or SECTION.FIELD with "
                             f"SECTION in {list(_SECTIONS)}")
    return out


def resolve_plan(profile: str = "cpu", overrides: Mapping[str, Any] | None = None) -> StudyPlan:
    """The plan of ``profile`` (``tiny`` | ``cpu`` | ``paper``) with ``overrides`` applied.

    Parameters
    ----------
    profile : study profile name (:data:`PROFILES`).
    overrides : ``{"seed": 1, "train.epochs": 3, "preprocess": {"crop_to_brain": True}}``; a study-level
        ``seed`` also seeds training unless ``train.seed`` is given.

    Returns
    -------
    StudyPlan
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown study profile {profile!r}; choose from {sorted(PROFILES)}")
    prof = PROFILES[profile]
    ov = _nest(overrides)
    seed = int(ov.get("seed", 0))
    train_ov = dict(ov.get("train", {}))
    train_ov.setdefault("seed", seed)
    synth_ov = {k: v for k, v in ov.get("synth", {}).items()}
    synth = synth_params(prof["synth"], **synth_ov)
    pre = PreprocessParams.from_dict({**PreprocessParams().to_dict(), **prof["preprocess"], **ov.get("preprocess", {})})
    return StudyPlan(
        profile=profile, seed=seed, gpu=bool(ov.get("gpu", prof["gpu"])),
        test_fraction=float(ov.get("test_fraction", 0.2)), n_jobs=int(ov.get("n_jobs", 2)),
        synth=synth, preprocess=pre, train=TrainConfig.from_profile(prof["train"], **train_ov),
        inference=_build(InferenceParams, {**prof.get("inference", {}), **ov.get("inference", {})}),
        evaluation=_build(EvalParams, ov.get("evaluation")),
        dask_scheduler=ov.get("dask_scheduler") or None,
    )


def write_plan(plan: StudyPlan, path: PathLike) -> Path:
    """Write ``plan.to_dict()`` as JSON (atomically)."""
    return atomic_write_json(path, plan.to_dict())


def load_plan(path: PathLike) -> StudyPlan:
    """Read a plan written by :func:`write_plan`; the error names the file."""
    path = Path(path)
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read the study plan {path}: {exc}") from exc
    try:
        return StudyPlan.from_dict(d)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: invalid study plan: {exc}") from exc
