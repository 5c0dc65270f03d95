"""Command-line options shared by the commands: argparse types, the common flags, and one flag
per field of a settings dataclass (``TrainConfig``, ``InferenceConfig``) with its meaning,
default and choices. Parsing only: ``pipeline.commands`` holds each command's parser and handler.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing

from pipeline import config, settings


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    """``--data-dir``: the competition layout."""
    parser.add_argument("--data-dir", default=None,
                        help=f"competition layout (default ${config.DATA_DIR_ENV} or data/)")


def add_run_dir(parser: argparse.ArgumentParser, ensemble: bool = False) -> None:
    """``--run-dir``: checkpoints, logs, reports (``ensemble``: or an ensemble folder)."""
    what = "a run's folder or an ensemble folder" if ensemble else "checkpoints, logs, reports"
    parser.add_argument("--run-dir", default=None,
                        help=f"{what} (default ${config.RUN_DIR_ENV} or runs/default/)")


def add_accept_postprocess(parser: argparse.ArgumentParser) -> None:
    """``--accept-postprocess``: apply post-processing to models or settings it was not
    tuned for (``postprocess.check_models``, ``inference.config.with_recorded``)."""
    parser.add_argument("--accept-postprocess", action="store_true",
                        help="use the post-processing even for checkpoints or inference "
                             "settings other than those it was tuned for (default: refused)")


def add_quiet(parser: argparse.ArgumentParser) -> None:
    """``--quiet``: no progress bars."""
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def add_fold(parser: argparse.ArgumentParser) -> None:
    """``--fold``: all folds or some."""
    parser.add_argument("--fold", default="all", help="'all' or fold numbers, e.g. 0,2")


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


def _shown(value: object) -> str:
    if isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return "x".join(map(str, value))
    return "none" if value is None else str(value)


def _value_type(name: str, hint: object):
    """The argparse ``type`` of a field's flag."""
    base, optional = settings.base_type(hint)
    if typing.get_origin(base) is tuple:
        return parse_size if name == "crop" else parse_floats
    return or_none(base) if optional else base


def add_settings_flags(parser: argparse.ArgumentParser, cls: type, skip: tuple = (),
                       unset: dict[str, str] | None = None) -> None:
    """One ``--flag`` per field of the settings dataclass ``cls``: its meaning, its default and
    its registry's choices. ``unset``: fields whose flag defaults to None, with what that
    means shown as the default (e.g. the value a run recorded)."""
    hints, unset = typing.get_type_hints(cls), unset or {}
    for item in dataclasses.fields(cls):
        if item.name in skip:
            continue
        name, meaning, default = settings.flag(item.name), item.metadata["help"], item.default
        shown = unset.get(item.name, _shown(default))
        default = None if item.name in unset else default
        if hints[item.name] is bool:
            parser.add_argument(name, action=argparse.BooleanOptionalAction, default=default,
                                help=f"{meaning} (default: {'on' if default else 'off'})")
            continue
        allowed = settings.field_choices(item)
        kind = str if allowed else _value_type(item.name, hints[item.name])
        parser.add_argument(name, type=kind, default=default, choices=allowed,
                            help=f"{meaning} (default: {shown})")


def settings_from_args(cls: type, args: argparse.Namespace, **fixed) -> typing.Any:
    """The ``cls`` settings of parsed flags (fields absent from ``args`` keep their default;
    ``fixed`` values win)."""
    values = {item.name: getattr(args, item.name) for item in dataclasses.fields(cls)
              if hasattr(args, item.name)}
    return cls(**{**values, **fixed})


def requested(cls: type, args: argparse.Namespace) -> dict:
    """The flags of ``cls``'s fields as given: None where one was not given (for settings that
    default to a run's recorded value, see ``inference.config.with_recorded``)."""
    return {item.name: getattr(args, item.name) for item in dataclasses.fields(cls)}


def fold_ids(value: str, run: config.RunPaths) -> list[int]:
    """``--fold all`` (every fold in folds.csv) or a comma-separated list of fold numbers."""
    from pipeline.data import folds

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
