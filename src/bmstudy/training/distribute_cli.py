"""``python -m bmstudy.training.distribute_cli``: ``bmstudy train`` with ``--strategy`` and ``--set FIELD=VALUE``.

The options of ``bmstudy train`` (:func:`bmstudy.training.train_cli.add_cli_arguments`) plus
``--strategy {auto,default,mirrored,multi_worker}`` (see :mod:`bmstudy.training.distribute`) and
``--set FIELD=VALUE`` for any other :class:`~bmstudy.plan.TrainConfig` field. Run the same command on
every machine of a ``multi_worker`` cluster, each with its own ``TF_CONFIG``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
from typing import Any, Sequence

from ..plan import TrainConfig
from .distribute import STRATEGIES

__all__ = ["main"]


def _field_value(text: str) -> tuple[str, Any]:
    """``FIELD=VALUE`` as ``(field, value)``; VALUE parsed as JSON when it is JSON."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"--set expects FIELD=VALUE, got {text!r}")
    try:
        return key.strip(), json.loads(raw)
    except json.JSONDecodeError:
        return key.strip(), raw


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bmstudy.training.distribute_cli``: ``bmstudy train``'s options plus ``--strategy`` and ``--set``.

    Parameters
    ----------
    argv : sequence of str or None
        Arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status (0).
    """
    from ..io.manifest import load_manifest
    from .loop import train
    from .train_cli import add_cli_arguments, config_from_args
    from .model import BEST_MODEL

    parser = argparse.ArgumentParser(prog="python -m bmstudy.training.distribute_cli",
                                     description="bmstudy train with a tf.distribute strategy")
    add_cli_arguments(parser)
    with contextlib.suppress(argparse.ArgumentError):  # kept working once `bmstudy train` has --strategy
        parser.add_argument("--strategy", default=None, choices=STRATEGIES,
                            help="tf.distribute strategy (multi_worker reads TF_CONFIG)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="any other TrainConfig field (VALUE parsed as JSON, else taken as a string)")
    args = parser.parse_args(argv)
    config = config_from_args(args)
    changes = dict(_field_value(text) for text in args.set)
    if args.strategy is not None:
        changes["strategy"] = args.strategy
    config = TrainConfig.from_dict({**config.to_dict(), **changes}) if changes else config
    out = train(args.preprocessed, load_manifest(args.manifest), args.out, config, resume=not args.no_resume)
    print(out / BEST_MODEL)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
