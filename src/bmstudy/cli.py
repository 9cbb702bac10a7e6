"""``bmstudy`` command line: one sub-command per stage.

Each stage module defines ``add_cli_arguments(parser)`` and ``cli_main(args) -> int`` and must not
import TensorFlow at module level (so ``bmstudy --help`` stays fast).
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("bmstudy.synthetic.cohort", "generate the synthetic BM cohort and its manifest"),
    "validate": ("bmstudy.io.manifest", "validate a data manifest"),
    "split": ("bmstudy.io.split", "80/20 systematic-sampling split of the internal site"),
    "preprocess": ("bmstudy.preprocessing.cohort", "alignment check, resampling, skull stripping, Z-score, QC"),
    "train": ("bmstudy.training.loop", "train the 3D U-Net (ResNet-34 encoder)"),
    "predict": ("bmstudy.inference.predictor", "sliding-window prediction; masks back in the input's space"),
    "evaluate": ("bmstudy.evaluation.evaluate", "per-patient and lesion-wise metrics for a prediction folder"),
    "plan": ("bmstudy.study.plan_cli", "print the resolved study plan (profile + overrides) as JSON"),
    "run": ("bmstudy.study.runner", "run the study notebooks with papermill into runs/<name>/"),
    "book": ("bmstudy.reporting.book", "build the Jupyter Book HTML report from a run"),
}


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
        p.set_defaults(_module=mod)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``bmstudy`` with ``argv``.

    Parameters
    ----------
    argv : list of str, optional
        Arguments without the program name; default ``sys.argv[1:]``.

    Returns
    -------
    int
        The sub-command's exit status; 1 after a ``ValueError``, ``FileNotFoundError`` or
        ``RuntimeError`` (printed as ``bmstudy COMMAND: error: ...``); 2 without a sub-command.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args._module.cli_main(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"bmstudy {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
