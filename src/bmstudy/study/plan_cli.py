"""``bmstudy plan``: print the resolved study plan (profile + overrides) as JSON.

The printed plan is what ``bmstudy run`` with the same ``--profile`` and plan ``--param`` values
writes to ``runs/<name>/plan.json``.
"""
from __future__ import annotations

import argparse
import json
from typing import Sequence

from ..plan import PROFILES, StudyPlan, parse_override, resolve_plan
from .parameters import PLAN_OVERRIDE_SETTINGS, is_plan_key
from .stages import PLAN_SECTIONS

__all__ = ["plan_from_args", "add_cli_arguments", "cli_main"]


def plan_from_args(profile: str, params: Sequence[str] = ()) -> StudyPlan:
    """The plan of ``profile`` with ``KEY=VALUE`` overrides.

    Parameters
    ----------
    profile : str
        Study profile (:data:`bmstudy.plan.PROFILES`).
    params : sequence of str
        ``KEY=VALUE`` with KEY a study setting or ``SECTION.FIELD``; VALUE parsed as JSON when possible.

    Returns
    -------
    StudyPlan

    Raises
    ------
    ValueError
        For a key that is not a plan key (e.g. a notebook parameter) or an invalid value.
    """
    overrides = dict(parse_override(p) for p in params)
    bad = sorted(k for k in overrides if not is_plan_key(k))
    if bad:
        raise ValueError(f"{bad}: not plan keys; use one of {list(PLAN_OVERRIDE_SETTINGS)} or SECTION.FIELD with "
                         f"SECTION in {list(PLAN_SECTIONS)} (notebook parameters go to `bmstudy run --param`)")
    return resolve_plan(profile, overrides)


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``bmstudy plan``.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The sub-command's parser.
    """
    parser.add_argument("--profile", default="cpu", choices=sorted(PROFILES), help="study profile (default: cpu)")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="plan override: seed, gpu, test_fraction, n_jobs or SECTION.FIELD (e.g. "
                             "train.epochs=3, synth.n_internal=20); VALUE is parsed as JSON when possible; repeatable")


def cli_main(args: argparse.Namespace) -> int:
    """Print the resolved plan as JSON.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed :func:`add_cli_arguments`.

    Returns
    -------
    int
        0.
    """
    plan = plan_from_args(args.profile, args.param)
    print(json.dumps(plan.to_dict(), indent=2))
    return 0
