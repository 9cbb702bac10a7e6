"""``bmstudy`` command line: one sub-command per stage.

Each stage module defines ``add_cli_arguments(parser)`` and ``cli_main(args) -> int`` and must not
import TensorFlow at module level (so ``bmstudy --help`` stays fast).

Exit status, the same for every command: :data:`EXIT_OK` (0) everything done and every case ok;
:data:`EXIT_PARTIAL` (3) some cases were excluded or failed while the others completed;
:data:`EXIT_FAILED` (1) the command itself failed (bad arguments or data, a failed stage, a locked
folder, an I/O error such as a read-only or full output folder: one line naming the path, no
traceback); 2 usage errors (argparse); 130 interrupted (Ctrl-C).
"""
from __future__ import annotations

import argparse
import importlib
import sys
import traceback

#: Exit codes of every ``bmstudy`` command (see the module docstring).
EXIT_OK, EXIT_PARTIAL, EXIT_FAILED = 0, 3, 1
EXIT_INTERRUPTED = 130

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("bmstudy.synthetic.cohort", "generate the synthetic BM cohort and its manifest"),
    "validate": ("bmstudy.io.manifest", "validate a data manifest"),
    "split": ("bmstudy.io.split", "80/20 systematic-sampling split of the internal site"),
    "preprocess": ("bmstudy.preprocessing.cohort", "alignment check, resampling, skull stripping, Z-score, QC"),
    "train": ("bmstudy.training.train_cli", "train the 3D U-Net (ResNet-34 encoder)"),
    "predict": ("bmstudy.inference.predictor", "sliding-window prediction; masks back in the input's space"),
    "evaluate": ("bmstudy.evaluation.evaluate", "per-patient and lesion-wise metrics for a prediction folder"),
    "plan": ("bmstudy.study.plan_cli", "print the resolved study plan (profile + overrides) as JSON"),
    "run": ("bmstudy.study.run_cli", "run the study notebooks with papermill into runs/<name>/"),
    "book": ("bmstudy.reporting.book", "build the Jupyter Book HTML report from a run"),
}


#: Sub-commands whose per-case loop can run on a Dask cluster (``--dask-scheduler``).
DASK_COMMANDS: tuple[str, ...] = ("synth", "preprocess", "predict", "evaluate")


def build_parser() -> argparse.ArgumentParser:
    """The ``bmstudy`` parser with one sub-parser per entry of :data:`COMMANDS`.

    Returns
    -------
    argparse.ArgumentParser
    """
    from . import __version__

    parser = argparse.ArgumentParser(prog="bmstudy", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"bmstudy {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name == module:  # stage not available in this build
                continue
            raise
        p = sub.add_parser(name, help=help_text, description=help_text)
        mod.add_cli_arguments(p)
        if name in DASK_COMMANDS:
            p.add_argument("--dask-scheduler", default=None, metavar="ADDR",
                           help="run the per-case work on Dask: tcp://HOST:PORT of a scheduler, or 'local'")
        p.set_defaults(_module=mod)
    return parser


def _run_command(args: argparse.Namespace) -> int:
    """The sub-command, inside a Dask executor context when ``--dask-scheduler`` was given."""
    scheduler = getattr(args, "dask_scheduler", None)
    if not scheduler:
        return int(args._module.cli_main(args) or 0)
    from .executors import use_executor

    jobs = getattr(args, "jobs", None) or getattr(args, "n_jobs", None) or 1
    with use_executor(scheduler, max(1, int(jobs))):
        return int(args._module.cli_main(args) or 0)


def main(argv: list[str] | None = None) -> int:
    """Run ``bmstudy`` with ``argv``.

    Parameters
    ----------
    argv : list of str, optional
        Arguments without the program name; default ``sys.argv[1:]``.

    Returns
    -------
    int
        The sub-command's exit status (:data:`EXIT_OK`, :data:`EXIT_PARTIAL`, :data:`EXIT_FAILED`); 1
        after any exception, printed as one line ``bmstudy COMMAND: error: ...`` (an ``OSError`` names
        the path it concerns; an unexpected exception type also prints its traceback); 2 without a
        sub-command; 130 on Ctrl-C.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return _run_command(args)
    except KeyboardInterrupt:
        print(f"bmstudy {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as exc:  # FileNotFoundError, PermissionError, disk full, read-only file system
        print(f"bmstudy {args.command}: error: {os_error_message(exc)}", file=sys.stderr)
        return EXIT_FAILED
    except (ValueError, RuntimeError, KeyError) as exc:
        print(f"bmstudy {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:  # noqa: BLE001 - a bug: keep the traceback, but one exit code
        traceback.print_exc()
        print(f"bmstudy {args.command}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED


def os_error_message(exc: OSError) -> str:
    """One line for an ``OSError``: what failed and the path(s) it names.

    Parameters
    ----------
    exc : OSError
        E.g. ``PermissionError(13, 'Permission denied', '/out/x.csv')``.

    Returns
    -------
    str
        ``/out/x.csv: Permission denied (PermissionError)``; an exception without a file name (the
        stage modules' own messages, which name their files) is printed as it is.
    """
    if exc.filename is None:
        return str(exc)
    paths = str(exc.filename) + (f" -> {exc.filename2}" if getattr(exc, "filename2", None) else "")
    return f"{paths}: {exc.strerror or exc} ({type(exc).__name__})"


if __name__ == "__main__":
    sys.exit(main())
