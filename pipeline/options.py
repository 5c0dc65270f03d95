"""Command-line options: argparse types, shared flags, one flag per TrainConfig field, and the
parser of every subcommand (``build_parser``). Parsing only: ``cli`` runs the commands."""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing

from pipeline import config
from pipeline.data.images import DECODES
from pipeline.models.forward import AMP_MODES


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    """``--data-dir``: the competition layout."""
    parser.add_argument("--data-dir", default=None,
                        help=f"competition layout (default ${config.DATA_DIR_ENV} or data/)")


def add_run_dir(parser: argparse.ArgumentParser) -> None:
    """``--run-dir``: checkpoints, logs, reports."""
    parser.add_argument("--run-dir", default=None,
                        help=f"checkpoints, logs, reports (default ${config.RUN_DIR_ENV} or "
                             "runs/default/)")


def add_quiet(parser: argparse.ArgumentParser) -> None:
    """``--quiet``: no progress bars."""
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def default_workers() -> int:
    """Leave two cores to the model's threads: loader workers only compete on small machines."""
    return max(0, min(4, (os.cpu_count() or 1) - 2))


def add_inference_flags(parser: argparse.ArgumentParser) -> None:
    """Flags shared by ``cv``, ``predict`` and ``robustness``."""
    parser.add_argument("--tta", default="none", choices=["none", "hflip", "hvflip"],
                        help="flip test-time augmentation (default: none)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per batch (default: 8)")
    parser.add_argument("--workers", type=int, default=default_workers(),
                        help="DataLoader worker processes (default: cores - 2, at most 4)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--amp", default="auto", choices=AMP_MODES,
                        help="mixed precision on CUDA (default: auto: bf16 where fast, else fp16)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the models: pays "
                        "back its compile time (~10-60 s per model) on long runs only")
    parser.add_argument("--decode", default="scaled", choices=DECODES, help="scaled: JPEGs "
                        "decoded at 1/2, 1/4 or 1/8 size where the input scale allows; full: "
                        "at 256x1600, then resized (default: scaled)")
    add_quiet(parser)


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


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One ``--flag`` per TrainConfig field: its meaning, its default and any fixed choices."""
    hints = typing.get_type_hints(config.TrainConfig)
    for field in dataclasses.fields(config.TrainConfig):
        flag, hint, default = "--" + field.name.replace("_", "-"), hints[field.name], field.default
        meaning = field.metadata["help"]
        if field.name in ("data_dir", "run_dir"):
            parser.add_argument(flag, default=None, help=meaning)
            continue
        if hint is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default,
                                help=f"{meaning} (default: {'on' if default else 'off'})")
            continue
        fixed = config.choices(hint)
        args = typing.get_args(hint)
        optional = isinstance(hint, types.UnionType) and type(None) in args
        base = next((a for a in args if a is not type(None)), hint) if optional else hint
        if fixed:
            kind = str
        elif typing.get_origin(base) is tuple:
            kind = parse_size if field.name == "crop" else parse_floats
        else:
            kind = or_none(base) if optional else base
        parser.add_argument(flag, type=kind, default=default, choices=fixed,
                            help=f"{meaning} (default: {_shown(default)})")


def config_from_args(args: argparse.Namespace) -> config.TrainConfig:
    """The TrainConfig of parsed flags, with data and run directories resolved."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(config.TrainConfig)}
    values["data_dir"] = str(config.resolve_data_dir(args.data_dir).root)
    values["run_dir"] = str(config.resolve_run_dir(args.run_dir).root)
    return config.TrainConfig(**values)


def _data_commands(commands: argparse._SubParsersAction) -> None:
    synth = commands.add_parser("synth", help="write a synthetic Severstal-format dataset")
    synth.add_argument("--out", required=True, help="output directory (the competition layout)")
    synth.add_argument("--n-train", type=int, default=1000, help="training images")
    synth.add_argument("--n-test", type=int, default=200, help="test images")
    synth.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes)")
    synth.add_argument("--class-mix", default="real", choices=["real", "balanced"],
                       help="class frequencies: the real train set's, or every class alike "
                            "(default: real)")
    synth.add_argument("--world", default="wide", choices=["wide", "narrow"],
                       help="wide: varied exposure, contrast, gamma, blur, noise, JPEG quality, "
                            "sheet edges and defects on the border; narrow: one look "
                            "(the original generator)")
    synth.add_argument("--old-format", action="store_true",
                       help="write train.csv in the original ImageId_ClassId format")
    synth.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    add_quiet(synth)

    stats = commands.add_parser("stats", help="summarise a dataset (images, classes)")
    add_data_dir(stats)

    folds = commands.add_parser("folds", help="write RUN_DIR/folds.csv (stratified k-fold)")
    add_data_dir(folds)
    add_run_dir(folds)
    folds.add_argument("--n-folds", type=int, default=5, help="number of folds")
    folds.add_argument("--seed", type=int, default=0, help="shuffle seed")


def _model_commands(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser("train", help="train on one, several or all folds",
                                description="Train; under torchrun, one model on N processes.")
    train.add_argument("--fold", default="all", help="'all' or fold numbers, e.g. 0,2")
    train.add_argument("--resume", action="store_true", help="continue each fold from its last.pt")
    add_config_flags(train)

    cv = commands.add_parser("cv", help="out-of-fold scores and post-processing tuning")
    add_data_dir(cv)
    add_run_dir(cv)
    cv.add_argument("--fold", default="all", help="'all' or fold numbers, e.g. 0,2")
    cv.add_argument("--min-component", type=per_class(int), default=[0] * 4,
                    help="drop connected components smaller than this (pixels, per class)")
    add_inference_flags(cv)

    predict = commands.add_parser("predict", help="checkpoints -> submission.csv",
                                  description="Predict the test images; under torchrun the "
                                  "images are sharded across processes.")
    add_data_dir(predict)
    add_run_dir(predict)
    predict.add_argument("--sample", default=None,
                         help="sample submission (default DATA_DIR/sample_submission.csv)")
    predict.add_argument("--checkpoints", nargs="+", default=None,
                         help="checkpoint files (default: every fold's best.pt)")
    predict.add_argument("--out", default=str(config.DEFAULT_SUBMISSION),
                         help="submission file to write")
    predict.add_argument("--postprocess", default=None,
                         help="post-processing JSON (default RUN_DIR/postprocess.json)")
    predict.add_argument("--threshold", type=per_class(float), default=None,
                         help="override pixel thresholds, e.g. 0.5 or argmax,0.5,0.5,0.5")
    predict.add_argument("--min-area", type=per_class(int), default=None,
                         help="override the empty-mask thresholds, e.g. 600,600,1000,2000")
    predict.add_argument("--min-component", type=per_class(int), default=None,
                         help="override the connected-component size limits")
    add_inference_flags(predict)


def _report_commands(commands: argparse._SubParsersAction) -> None:
    compare = commands.add_parser("compare", help="compare the CV reports of several runs")
    compare.add_argument("runs", nargs="+", help="run directories holding reports/cv.json")

    validate = commands.add_parser("validate", help="check a submission against its sample")
    validate.add_argument("submission", help="submission.csv to check")
    validate.add_argument("--sample", required=True, help="the sample_submission.csv")

    score = commands.add_parser("score", help="score a submission against known labels")
    score.add_argument("submission", help="submission.csv to score")
    score.add_argument("--sample", required=True, help="the sample_submission.csv")
    score.add_argument("--truth", required=True,
                       help="labels in train.csv format (test_truth.csv of synthetic data)")
    score.add_argument("--json", action="store_true", help="print the scores as JSON")

    robustness = commands.add_parser(
        "robustness", help="out-of-fold scores under input shifts vs the all-empty baseline")
    add_data_dir(robustness)
    add_run_dir(robustness)
    robustness.add_argument("--shifts", default="all",
                            help="'all' or shift names, e.g. none,blur,jpeg-q20 (default: all)")
    robustness.add_argument("--fold", default="all", help="'all' or fold numbers, e.g. 0,2")
    robustness.add_argument("--images-per-fold", type=int, default=None,
                            help="score only the first N validation images of each fold "
                                 "(default: all)")
    add_inference_flags(robustness)


def _kaggle_commands(commands: argparse._SubParsersAction) -> None:
    download = commands.add_parser("download", help="download + check the competition data")
    add_data_dir(download)
    add_quiet(download)

    submit = commands.add_parser(
        "submit", help="submit a kernel version (code competitions, this one), or a file")
    submit.add_argument("--kernel-dir", default=None,
                        help="the kernel folder push-kernel pushed: submit the version it "
                             "recorded (default mode)")
    submit.add_argument("--kernel", default=None, help="owner/slug: submit this kernel")
    submit.add_argument("--kernel-version", type=int, default=None,
                        help="its version number (default: the last one pushed)")
    submit.add_argument("--kernel-file", default="submission.csv", help="the file it writes")
    submit.add_argument("--file", default=None,
                        help="upload this submission.csv instead (only for competitions that "
                             "accept files; Severstal does not)")
    submit.add_argument("--message", default=None, help="description (code version + CV added)")
    submit.add_argument("--wait", action="store_true", help="wait for the public score")
    submit.add_argument("--poll-seconds", type=float, default=60.0,
                        help="seconds between checks")
    submit.add_argument("--timeout", type=float, default=12 * 3600.0,
                        help="longest wait in seconds (a code submission reruns the kernel: "
                             "hours); after it the submission stays queued on Kaggle")
    add_data_dir(submit)
    add_run_dir(submit)
    add_quiet(submit)

    upload = commands.add_parser("upload-weights", help="weights + post-processing -> dataset")
    upload.add_argument("--dataset", required=True, help="owner/slug of the Kaggle dataset")
    upload.add_argument("--checkpoints", nargs="+", default=None,
                        help="checkpoint files (default RUN_DIR/checkpoints/fold*/best.pt)")
    upload.add_argument("--title", default=None, help="dataset title (default from the slug)")
    upload.add_argument("--message", default=None, help="version notes")
    upload.add_argument("--public", action="store_true", help="make a new dataset public")
    upload.add_argument("--wait-seconds", type=float, default=1800.0,
                        help="longest wait for Kaggle to process the upload")
    add_run_dir(upload)
    add_quiet(upload)

    kernel = commands.add_parser("kernel", help="build the offline Kaggle kernel")
    kernel.add_argument("--kernel", required=True, help="owner/slug of the kernel")
    kernel.add_argument("--weights-dataset", required=True,
                        help="owner/slug of the Kaggle dataset holding the weights")
    kernel.add_argument("--title", default=None,
                        help="kernel title; must slugify to the slug (default made from it)")
    kernel.add_argument("--out-dir", default=None,
                        help="the kernel folder to write (default kernels/<slug>)")
    kernel.add_argument("--compile", action="store_true", help="torch.compile the kernel's models")

    push = commands.add_parser("push-kernel", help="push a built kernel (internet off)")
    push.add_argument("--kernel-dir", required=True, help="holds kernel-metadata.json + script")
    add_quiet(push)

    status = commands.add_parser("kernel-status", help="a kernel version's run status")
    status.add_argument("--kernel", required=True,
                        help="owner/slug (its latest version) or owner/slug/N (version N)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand; ``args.command`` names the one chosen."""
    parser = argparse.ArgumentParser(prog="python -m pipeline",
                                     description="Severstal steel-defect segmentation pipeline")
    commands = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    _data_commands(commands)
    _model_commands(commands)
    _report_commands(commands)
    _kaggle_commands(commands)
    return parser
