"""Command line: ``python -m pipeline <command> [options]``; main(argv) -> exit status."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipeline import config


def _add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", default=None,
                        help=f"competition layout (default ${config.DATA_DIR_ENV} or data/)")


def _cmd_synth(args: argparse.Namespace) -> int:
    from pipeline import synthetic

    summary = synthetic.write_dataset(Path(args.out), n_train=args.n_train, n_test=args.n_test,
                                      seed=args.seed, old_format=args.old_format,
                                      quiet=args.quiet, workers=args.workers)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _cmd_stats(args: argparse.Namespace) -> int:
    from pipeline import data, stats

    paths = config.resolve_data_dir(args.data_dir)
    labels, image_ids = data.load_train(paths)
    print(stats.describe(labels, image_ids, paths))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="python -m pipeline",
                                     description="Severstal steel-defect segmentation pipeline")
    commands = parser.add_subparsers(dest="command", required=True, metavar="<command>")

    synth = commands.add_parser("synth", help="write a synthetic Severstal-format dataset")
    synth.add_argument("--out", required=True, help="output directory (the competition layout)")
    synth.add_argument("--n-train", type=int, default=1000, help="training images")
    synth.add_argument("--n-test", type=int, default=200, help="test images")
    synth.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes)")
    synth.add_argument("--old-format", action="store_true",
                       help="write train.csv in the original ImageId_ClassId format")
    synth.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    synth.add_argument("--quiet", action="store_true", help="no progress bar")
    synth.set_defaults(func=_cmd_synth)

    stats_cmd = commands.add_parser("stats", help="summarise a dataset (images, classes)")
    _add_data_dir(stats_cmd)
    stats_cmd.set_defaults(func=_cmd_stats)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and run one subcommand; errors print one line and return 1/2."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
