"""Command line: ``python -m pipeline <command> [options]``; main(argv) -> exit status.

Each command's parser and handler live together in ``pipeline.commands`` (one module per
family); here the parser is built from them and one handler is run. Errors print one line and
return 1; Ctrl-C prints one line and returns 130.
"""

from __future__ import annotations

import argparse
import logging

from pipeline import console
from pipeline.commands import data, evaluate, export, kaggle, predict, train

log = logging.getLogger(__name__)

FAMILIES = (data, train, evaluate, predict, export, kaggle)


def build_parser(defaults: dict[str, dict] | None = None) -> argparse.ArgumentParser:
    """The argument parser of every subcommand; ``args.handler`` runs the one chosen.
    ``defaults``: command -> parser defaults (a recipe file's settings, which flags override)."""
    parser = argparse.ArgumentParser(prog="python -m pipeline",
                                     description="Severstal steel-defect segmentation pipeline")
    commands = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    for family in FAMILIES:
        family.register(commands)
    for command, values in (defaults or {}).items():
        commands.choices[command].set_defaults(**values)
    return parser


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The parsed arguments, with a command's file of defaults (``train --config``) applied
    under the flags given."""
    args = build_parser().parse_args(argv)
    defaults_from = getattr(args, "defaults_from", None)
    defaults = defaults_from(args) if defaults_from else {}
    return build_parser({args.command: defaults}).parse_args(argv) if defaults else args


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and run one subcommand; errors print one line and return 1/2, and
    Ctrl-C prints one line and returns 130 (128 + SIGINT, as a shell reports it)."""
    console.setup()
    try:
        args = parse(argv)
        return args.handler(args)
    except (ValueError, OSError, FloatingPointError, RuntimeError) as error:
        log.error("%s", error)
        return 1
    except KeyboardInterrupt:   # locks are released and finished files kept on the way out
        log.error("interrupted")
        return 130
