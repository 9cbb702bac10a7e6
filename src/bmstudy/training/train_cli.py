"""``bmstudy train``: its options, the :class:`~bmstudy.plan.TrainConfig` they describe, and the command."""
from __future__ import annotations

import argparse
from typing import Any

from ..plan import TrainConfig
from ..precision import PRECISIONS
from .loop import train
from .model import BEST_MODEL

__all__ = ["add_cli_arguments", "config_from_args", "cli_main"]


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``bmstudy train`` options to ``parser``.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The sub-command's parser.
    """
    parser.add_argument("--preprocessed", required=True, help="folder written by `bmstudy preprocess`")
    parser.add_argument("--manifest", required=True, help="data_manifest.csv (split column selects 'train')")
    parser.add_argument("--out", required=True, help="output folder (resumed if it holds a checkpoint)")
    parser.add_argument("--profile", default="cpu", choices=TrainConfig.PROFILES)
    parser.add_argument("--encoder-weights", default=None, help="local .h5 of 3-channel ImageNet encoder weights")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--steps-per-epoch", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--patch-size", type=int, default=None, help="cubic patch edge (multiple of 32)")
    parser.add_argument("--learning-rate", type=float, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--mixed-precision", action="store_true", help="mixed_float16 on a GPU (= --precision mixed_float16)")
    parser.add_argument("--precision", choices=PRECISIONS, default=None,
                        help="Keras policy of training (default: the profile's; auto: mixed_bfloat16 on a CPU with "
                             "native bfloat16, else float32)")
    parser.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` described by parsed ``bmstudy train`` arguments.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments (see :func:`add_cli_arguments`).

    Returns
    -------
    TrainConfig
        ``TrainConfig.from_profile(args.profile)`` with the options that were given as overrides.
    """
    overrides: dict[str, Any] = {}
    for key in ("encoder_weights", "epochs", "steps_per_epoch", "batch_size", "learning_rate", "seed"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    if args.patch_size is not None:
        overrides["patch_size"] = (args.patch_size,) * 3
    if args.mixed_precision:
        overrides["mixed_precision"] = True
    if getattr(args, "precision", None) is not None:
        overrides["precision"] = args.precision
    return TrainConfig.from_profile(args.profile, **overrides)


def cli_main(args: argparse.Namespace) -> int:
    """Run ``bmstudy train``: train (or resume) and print the best model's path.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments (see :func:`add_cli_arguments`).

    Returns
    -------
    int
        The exit status (0).
    """
    from ..io.manifest import load_manifest

    config = config_from_args(args)
    out = train(args.preprocessed, load_manifest(args.manifest), args.out, config, resume=not args.no_resume)
    print(out / BEST_MODEL)
    return 0
