"""``bmstudy run``: run the study (:func:`bmstudy.study.runner.run_study`), summarise the cases, build the book.

Exit status (:mod:`bmstudy.cli`): 0 all stages ran or were up to date and every case is ok; 3 some
cases were excluded or failed in some stage (the others completed); 1 the command failed (a stage
failed, the run folder is locked by another live ``bmstudy run``, bad arguments, an I/O error).
"""
from __future__ import annotations

import argparse
import sys
import time

from ..plan import PROFILES
from .accounting import format_summary, has_problems
from .parameters import parse_param
from .runner import RunResult, StageError, run_study

__all__ = ["add_cli_arguments", "cli_main", "format_stages"]


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
    parser.add_argument("--dry-run", action="store_true",
                        help="print per stage whether it would run or be skipped, and why; execute and write nothing")
    parser.add_argument("--runs-dir", default="runs", help="folder holding the run folders (default: runs)")
    parser.add_argument("--notebooks-dir", default=None, help="folder with the study notebooks")
    parser.add_argument("--no-book", action="store_true", help="do not build the HTML book afterwards")
    parser.add_argument("--book-dir", default="book", help="book source folder; HTML goes to BOOK_DIR/_build/html")
    parser.add_argument("--log-output", action="store_true", help="stream notebook cell output to the log")


def format_stages(res: RunResult) -> str:
    """One line per stage: ``01_cohort: skip (up to date)`` / ``05_metrics: run (src changed: ...)``.

    Parameters
    ----------
    res : RunResult
        From :func:`~bmstudy.study.runner.run_study` (a dry run or a real one).

    Returns
    -------
    str
    """
    word = {"skipped": "skip", "would run": "run", "ran": "ran"}
    width = max((len(s.name) for s in res.stages), default=0)
    return "\n".join(f"{s.name:<{width}}  {word.get(s.action, s.action):<4}  ({s.reason})" for s in res.stages)


def cli_main(args: argparse.Namespace) -> int:
    """Run ``bmstudy run``; print the stages and the case summary; then build the book unless ``--no-book``.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed :func:`add_cli_arguments`.

    Returns
    -------
    int
        :data:`bmstudy.cli.EXIT_OK` (0), :data:`~bmstudy.cli.EXIT_PARTIAL` (3) when some cases were
        excluded or failed, :data:`~bmstudy.cli.EXIT_FAILED` (1) when a stage failed.
    """
    from ..cli import EXIT_FAILED, EXIT_OK, EXIT_PARTIAL

    params = dict(parse_param(p) for p in args.param)
    t0 = time.perf_counter()
    try:
        res = run_study(args.name, args.profile, manifest=args.manifest, params=params, force=args.force,
                        stages=args.stages, runs_dir=args.runs_dir, notebooks_dir=args.notebooks_dir,
                        log_output=args.log_output, dry_run=getattr(args, "dry_run", False))
    except StageError as exc:
        print(f"bmstudy run: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if getattr(args, "dry_run", False):
        print(f"dry run of {res.run_dir} (nothing executed or written):\n{format_stages(res)}")
        return EXIT_OK
    print(format_stages(res))
    print(format_summary(res.case_summary))
    print(f"run {res.run_dir}: ran {res.ran or 'nothing'}, skipped {res.skipped or 'nothing'} "
          f"({time.perf_counter() - t0:.0f} s)")
    if not args.no_book:
        from ..reporting.book import build_book

        index = build_book(res.run_dir, book_dir=args.book_dir)
        print(f"HTML report: {index}")
    return EXIT_PARTIAL if has_problems(res.case_summary) else EXIT_OK
