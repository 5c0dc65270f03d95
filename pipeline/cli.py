"""Command line: ``python -m pipeline <command> [options]``; main(argv) -> exit status."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from pipeline import config, kaggle_commands, options


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

    cfg = options.config_from_args(args)
    run = config.resolve_run_dir(cfg.run_dir)
    fold_ids = _fold_ids(args.fold, run)
    main_process = os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 writes
    if main_process:
        fileio.write_json(run.config_json, cfg.as_dict())
    for fold, best in zip(fold_ids, train.train_folds(cfg, fold_ids, resume=args.resume)):
        if best and main_process:
            print(f"fold {fold}: best epoch {best['epoch']} score {best['val_score']:.4f} "
                  f"(all-empty {best['val_baseline']:.4f}, non-empty Dice "
                  f"{best['val_nonempty']:.4f})")
    return 0


def _cmd_cv(args: argparse.Namespace) -> int:
    from pipeline import cv

    fold_ids = None if args.fold == "all" else _fold_ids(args.fold, config.resolve_run_dir(
        args.run_dir))
    report = cv.run_cv(args.run_dir, args.data_dir, fold_ids, tta=args.tta,
                       batch_size=args.batch_size, workers=args.workers,
                       min_component=args.min_component, device=args.device, quiet=args.quiet)
    run = config.resolve_run_dir(args.run_dir)
    print(cv.format_report(report))
    print(f"wrote {run.reports / 'cv.json'}, {run.postprocess_json} and pictures in {run.reports}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from pipeline import distributed, predict, submission

    paths, run = config.resolve_data_dir(args.data_dir), config.resolve_run_dir(args.run_dir)
    sample = submission.read_sample(Path(args.sample) if args.sample else paths.sample_submission)
    predict.check_test_images(paths.test_images, sample.image_ids, sample.path)
    checkpoints = ([Path(p) for p in args.checkpoints] if args.checkpoints
                   else sorted(run.checkpoints.glob("fold*/best.pt")))
    context = distributed.setup(args.device)
    models, cfg = predict.load_models(checkpoints, context.device)
    params = _postprocess(args, run, cfg.head)
    written = predict.write_submission(models, cfg, paths.test_images, sample, params, context,
                                       Path(args.out), batch_size=args.batch_size,
                                       workers=args.workers, tta=args.tta, quiet=args.quiet)
    if written:
        rles, table = written
        n_defects = sum(bool(r) for image_rles in rles.values() for r in image_rles)
        print(f"wrote {args.out}: {len(table)} rows, {len(rles)} images, {n_defects} predicted "
              f"masks ({len(models)} model(s), TTA {args.tta}); validated against {sample.path}")
    distributed.teardown(context)
    return 0


def _postprocess(args: argparse.Namespace, run: config.RunPaths, head: str):
    from pipeline.postprocess import PostProcess

    path = Path(args.postprocess) if args.postprocess else run.postprocess_json
    if args.postprocess or path.is_file():
        params = PostProcess.load(path)
    else:
        print(f"warning: {path} not found (run `make cv`); using default post-processing",
              file=sys.stderr)
        params = PostProcess(head=head)
    overrides = {name: getattr(args, name) for name in ("threshold", "min_area", "min_component")
                 if getattr(args, name) is not None}
    return params.replace(**overrides) if overrides else params


def _cmd_validate(args: argparse.Namespace) -> int:
    from pipeline import submission

    sample = submission.read_sample(Path(args.sample))
    table = submission.validate(Path(args.submission), sample)
    print(f"{args.submission}: valid {sample.format}-format submission, {len(table)} rows, "
          f"{len(sample.image_ids)} images")
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    from pipeline import data, submission

    sample = submission.read_sample(Path(args.sample))
    table = submission.validate(Path(args.submission), sample)
    scores = submission.score(submission.to_predictions(table, sample),
                              data.read_labels(Path(args.truth)))
    print(json.dumps(scores.as_dict(), indent=2) if args.json else scores.table())
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from pipeline import cv

    reports = {}
    for run_dir in args.runs:
        path = config.resolve_run_dir(run_dir).reports / "cv.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: run `make cv RUN_DIR={run_dir}`")
        reports[Path(run_dir).name] = json.loads(path.read_text())
    print(cv.compare_runs(reports))
    return 0


def _cmd_kernel(args: argparse.Namespace) -> int:
    from pipeline import pack

    out_dir = Path(args.out_dir) / args.kernel.split("/")[-1]
    script = pack.build(out_dir, args.kernel, args.title, args.weights_dataset,
                        config.code_version())
    print(f"wrote {script} ({script.stat().st_size / 1024:.0f} KiB) and "
          f"{out_dir / 'kernel-metadata.json'}")
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
    options.add_data_dir(stats_cmd)
    stats_cmd.set_defaults(func=_cmd_stats)

    folds_cmd = commands.add_parser("folds", help="write RUN_DIR/folds.csv (stratified k-fold)")
    options.add_data_dir(folds_cmd)
    options.add_run_dir(folds_cmd)
    folds_cmd.add_argument("--n-folds", type=int, default=5, help="number of folds")
    folds_cmd.add_argument("--seed", type=int, default=0, help="shuffle seed")
    folds_cmd.set_defaults(func=_cmd_folds)

    train_cmd = commands.add_parser("train", help="train FCN32-VGG11 on one, several or all folds",
                                    description="Train; under torchrun, one model on N processes.")
    train_cmd.add_argument("--fold", default="all", help="'all' or fold numbers, e.g. 0,2")
    train_cmd.add_argument("--resume", action="store_true",
                           help="continue each fold from its last.pt")
    options.add_config_flags(train_cmd)
    train_cmd.set_defaults(func=_cmd_train)

    cv_cmd = commands.add_parser("cv", help="out-of-fold scores and post-processing tuning")
    options.add_data_dir(cv_cmd)
    options.add_run_dir(cv_cmd)
    cv_cmd.add_argument("--fold", default="all", help="'all' or fold numbers, e.g. 0,2")
    cv_cmd.add_argument("--min-component", type=options.per_class(int), default=[0] * 4,
                        help="drop connected components smaller than this (pixels, per class)")
    options.add_inference_flags(cv_cmd)
    cv_cmd.set_defaults(func=_cmd_cv)

    predict_cmd = commands.add_parser("predict", help="checkpoints -> submission.csv",
                                      description="Predict the test images; under torchrun "
                                      "the images are sharded across processes.")
    options.add_data_dir(predict_cmd)
    options.add_run_dir(predict_cmd)
    predict_cmd.add_argument("--sample", default=None,
                             help="sample submission (default DATA_DIR/sample_submission.csv)")
    predict_cmd.add_argument("--checkpoints", nargs="+", default=None,
                             help="checkpoint files (default: every fold's best.pt)")
    predict_cmd.add_argument("--out", default=str(config.DEFAULT_SUBMISSION),
                             help="submission file to write")
    predict_cmd.add_argument("--postprocess", default=None,
                             help="post-processing JSON (default RUN_DIR/postprocess.json)")
    predict_cmd.add_argument("--threshold", type=options.per_class(float), default=None,
                             help="override pixel thresholds, e.g. 0.5 or argmax,0.5,0.5,0.5")
    predict_cmd.add_argument("--min-area", type=options.per_class(int), default=None,
                             help="override the empty-mask thresholds, e.g. 600,600,1000,2000")
    predict_cmd.add_argument("--min-component", type=options.per_class(int), default=None,
                             help="override the connected-component size limits")
    options.add_inference_flags(predict_cmd)
    predict_cmd.set_defaults(func=_cmd_predict)

    compare_cmd = commands.add_parser("compare", help="compare the CV reports of several runs")
    compare_cmd.add_argument("runs", nargs="+", help="run directories holding reports/cv.json")
    compare_cmd.set_defaults(func=_cmd_compare)

    kernel_cmd = commands.add_parser("kernel", help="build the offline Kaggle kernel")
    kernel_cmd.add_argument("--kernel", required=True, help="owner/slug of the kernel")
    kernel_cmd.add_argument("--weights-dataset", required=True,
                            help="owner/slug of the Kaggle dataset holding the weights")
    kernel_cmd.add_argument("--title", default="Severstal FCN32-VGG11", help="kernel title")
    kernel_cmd.add_argument("--out-dir", default="kernels", help="parent of the kernel folder")
    kernel_cmd.set_defaults(func=_cmd_kernel)

    validate_cmd = commands.add_parser("validate", help="check a submission against its sample")
    validate_cmd.add_argument("submission", help="submission.csv to check")
    validate_cmd.add_argument("--sample", required=True, help="the sample_submission.csv")
    validate_cmd.set_defaults(func=_cmd_validate)

    score_cmd = commands.add_parser("score", help="score a submission against known labels")
    score_cmd.add_argument("submission", help="submission.csv to score")
    score_cmd.add_argument("--sample", required=True, help="the sample_submission.csv")
    score_cmd.add_argument("--truth", required=True,
                           help="labels in train.csv format (test_truth.csv of synthetic data)")
    score_cmd.add_argument("--json", action="store_true", help="print the scores as JSON")
    score_cmd.set_defaults(func=_cmd_score)

    kaggle_commands.register(commands)
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
