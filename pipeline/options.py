"""Command-line options: argparse types, shared flags, one flag per TrainConfig field."""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing

from pipeline import config


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    """``--data-dir``: the competition layout."""
    parser.add_argument("--data-dir", default=None,
                        help=f"competition layout (default ${config.DATA_DIR_ENV} or data/)")


def default_workers() -> int:
    """Leave two cores to the model's threads: loader workers only compete on small machines."""
    return max(0, min(4, (os.cpu_count() or 1) - 2))


def add_inference_flags(parser: argparse.ArgumentParser) -> None:
    """Flags shared by ``cv`` and ``predict``: TTA, batch size, workers, device, quiet."""
    parser.add_argument("--tta", default="none", choices=["none", "hflip", "hvflip"],
                        help="flip test-time augmentation")
    parser.add_argument("--batch-size", type=int, default=8, help="images per batch")
    parser.add_argument("--workers", type=int, default=default_workers(),
                        help="DataLoader worker processes (default: cores - 2, at most 4)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def add_run_dir(parser: argparse.ArgumentParser) -> None:
    """``--run-dir``: checkpoints, logs, reports."""
    parser.add_argument("--run-dir", default=None,
                        help=f"checkpoints, logs, reports (default ${config.RUN_DIR_ENV} or "
                             "runs/default/)")


def parse_size(text: str) -> tuple[int, int] | None:
    """``HEIGHTxWIDTH`` (e.g. 256x384) or ``none``."""
    if text.lower() == "none":
        return None
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not HEIGHTxWIDTH, e.g. 256x400") from None
    return height, width


def parse_floats(text: str) -> tuple[float, ...] | None:
    """Comma-separated numbers or ``none``."""
    if text.lower() == "none":
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers"
                                         ) from None


def per_class(kind: type):
    """Parse one value for every class, or 4 comma-separated values (classes 1..4)."""
    def parse(text: str):
        values = [None if v.lower() in ("none", "argmax") else kind(v) for v in text.split(",")]
        if len(values) not in (1, 4):
            raise argparse.ArgumentTypeError(f"{text!r}: give 1 value or 4 (classes 1..4)")
        return values * 4 if len(values) == 1 else values
    return parse


def or_none(kind: type):
    """A parser of ``kind`` that also accepts ``none``."""
    def parse(text: str):
        return None if text.lower() == "none" else kind(text)
    parse.__name__ = kind.__name__
    return parse


def add_config_flags(parser: argparse.ArgumentParser) -> None:
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
            kind = parse_size if field.name == "crop" else parse_floats
        else:
            kind = or_none(base) if optional else base
        shown = "x".join(map(str, default)) if field.name == "crop" and default else default
        parser.add_argument(flag, type=kind, default=default, help=f"default: {shown}")


def config_from_args(args: argparse.Namespace) -> config.TrainConfig:
    """The TrainConfig of parsed flags, with data and run directories resolved."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(config.TrainConfig)}
    values["data_dir"] = str(config.resolve_data_dir(args.data_dir).root)
    values["run_dir"] = str(config.resolve_run_dir(args.run_dir).root)
    return config.TrainConfig(**values)
