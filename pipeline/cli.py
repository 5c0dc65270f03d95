"""Command line: ``python -m pipeline <command> [options]``; main(argv) -> exit status."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
import typing
from pathlib import Path

from pipeline import config


def _add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", default=None,
                        help=f"competition layout (default ${config.DATA_DIR_ENV} or data/)")


def _add_run_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-dir", default=None,
                        help=f"checkpoints, logs, reports (default ${config.RUN_DIR_ENV} or "
                             "runs/default/)")


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


def _cmd_folds(args: argparse.Namespace) -> int:
    from pipeline import data, folds

    paths, run = config.resolve_data_dir(args.data_dir), config.resolve_run_dir(args.run_dir)
    labels, image_ids = data.load_train(paths)
    table = folds.make_folds(labels, image_ids, n_folds=args.n_folds, seed=args.seed)
    folds.write_folds(table, run.folds_csv)
    print(folds.fold_class_counts(table).to_string())
    print(f"wrote {run.folds_csv}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from pipeline import fileio, train

    cfg = _config_from_args(args)
    run = config.resolve_run_dir(cfg.run_dir)
    fold_ids = _fold_ids(args.fold, run)
    fileio.write_json(run.config_json, cfg.as_dict())
    for fold, best in zip(fold_ids, train.train_folds(cfg, fold_ids, resume=args.resume)):
        if best:
            print(f"fold {fold}: best epoch {best['epoch']} score {best['val_score']:.4f} "
                  f"(all-empty {best['val_baseline']:.4f}, non-empty Dice "
                  f"{best['val_nonempty']:.4f})")
    return 0


def _fold_ids(value: str, run: config.RunPaths) -> list[int]:
    """``--fold all`` (every fold in folds.csv) or a comma-separated list of fold numbers."""
    from pipeline import folds

    available = sorted(set(folds.read_folds(run.folds_csv)["fold"]))
    if value == "all":
        return available
    try:
        chosen = [int(v) for v in value.split(",")]
    except ValueError:
        raise ValueError(f"--fold {value!r}: give 'all' or fold numbers like 0,2") from None
    unknown = sorted(set(chosen) - set(available))
    if unknown:
        raise ValueError(f"--fold {unknown} not in {run.folds_csv} (folds {available})")
    return chosen


def _parse_size(text: str) -> tuple[int, int] | None:
    if text.lower() == "none":
        return None
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not HEIGHTxWIDTH, e.g. 256x400") from None
    return height, width


def _parse_floats(text: str) -> tuple[float, ...] | None:
    if text.lower() == "none":
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers"
                                         ) from None


def _optional(kind: type):
    def parse(text: str):
        return None if text.lower() == "none" else kind(text)
    parse.__name__ = kind.__name__
    return parse


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One ``--flag`` per TrainConfig field, defaulting to the dataclass default."""
    hints = typing.get_type_hints(config.TrainConfig)
    for field in dataclasses.fields(config.TrainConfig):
        flag, hint, default = "--" + field.name.replace("_", "-"), hints[field.name], field.default
        if field.name in ("data_dir", "run_dir"):
            default = None  # resolved from the environment when not given
        if hint is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
            continue
        args = typing.get_args(hint)
        optional = isinstance(hint, types.UnionType) and type(None) in args
        base = next((a for a in args if a is not type(None)), hint) if optional else hint
        if typing.get_origin(base) is tuple:
            kind = _parse_size if field.name == "crop" else _parse_floats
        else:
            kind = _optional(base) if optional else base
        shown = "x".join(map(str, default)) if field.name == "crop" and default else default
        parser.add_argument(flag, type=kind, default=default, help=f"default: {shown}")


def _config_from_args(args: argparse.Namespace) -> config.TrainConfig:
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(config.TrainConfig)}
    values["data_dir"] = str(config.resolve_data_dir(args.data_dir).root)
    values["run_dir"] = str(config.resolve_run_dir(args.run_dir).root)
    return config.TrainConfig(**values)


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

    folds_cmd = commands.add_parser("folds", help="write RUN_DIR/folds.csv (stratified k-fold)")
    _add_data_dir(folds_cmd)
    _add_run_dir(folds_cmd)
    folds_cmd.add_argument("--n-folds", type=int, default=5, help="number of folds")
    folds_cmd.add_argument("--seed", type=int, default=0, help="shuffle seed")
    folds_cmd.set_defaults(func=_cmd_folds)

    train_cmd = commands.add_parser("train", help="train FCN32-VGG11 on one, several or all folds",
                                    description="Train; under torchrun, one model on N processes.")
    train_cmd.add_argument("--fold", default="all", help="'all' or fold numbers, e.g. 0,2")
    train_cmd.add_argument("--resume", action="store_true",
                           help="continue each fold from its last.pt")
    _add_config_flags(train_cmd)
    train_cmd.set_defaults(func=_cmd_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and run one subcommand; errors print one line and return 1/2."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, FloatingPointError,
            RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
