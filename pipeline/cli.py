"""Command line: ``python -m pipeline <command> [options]``; main(argv) -> exit status.

``options`` builds the parser; each ``_cmd_<name>`` here runs one subcommand by calling the
package's stage modules. Errors print one line and return 1.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from pipeline import config, console, distributed, options

log = logging.getLogger(__name__)


def _cmd_synth(args: argparse.Namespace) -> int:
    from pipeline.data import synthetic

    summary = synthetic.write_dataset(Path(args.out), n_train=args.n_train, n_test=args.n_test,
                                      seed=args.seed, old_format=args.old_format,
                                      quiet=args.quiet, workers=args.workers,
                                      class_mix=args.class_mix, world=args.world)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _cmd_stats(args: argparse.Namespace) -> int:
    from pipeline.data import labels, stats

    paths = config.resolve_data_dir(args.data_dir)
    table, image_ids = labels.load_train(paths)
    print(stats.describe(table, image_ids, paths))
    return 0


def _cmd_folds(args: argparse.Namespace) -> int:
    from pipeline.data import folds, labels

    paths, run = config.resolve_data_dir(args.data_dir), config.resolve_run_dir(args.run_dir)
    table, image_ids = labels.load_train(paths)
    split = folds.make_folds(table, image_ids, n_folds=args.n_folds, seed=args.seed)
    folds.write_folds(split, run.folds_csv)
    print(folds.fold_class_counts(split).to_string())
    print(f"wrote {run.folds_csv}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from pipeline.training import train

    cfg = options.config_from_args(args)
    run = config.resolve_run_dir(cfg.run_dir)
    fold_ids = _fold_ids(args.fold, run)
    main_process = distributed.is_main_process()  # under torchrun only rank 0 writes
    # train_fold writes config.json once a fold holds its lock and has passed its checks.
    for fold, best in zip(fold_ids, train.train_folds(cfg, fold_ids, resume=args.resume)):
        if best and main_process:
            print(f"fold {fold}: best epoch {best['epoch']} score {best['val_score']:.4f} "
                  f"(all-empty {best['val_baseline']:.4f}, non-empty Dice "
                  f"{best['val_nonempty']:.4f})")
    return 0


def _cmd_cv(args: argparse.Namespace) -> int:
    from pipeline import fileio
    from pipeline.inference import oof, reports

    run = config.resolve_run_dir(args.run_dir)
    fileio.check_writable(run.postprocess_json, "--run-dir")  # before the OOF predictions
    fold_ids = None if args.fold == "all" else _fold_ids(args.fold, run)
    report = oof.run_cv(args.run_dir, args.data_dir, fold_ids, tta=args.tta,
                        batch_size=args.batch_size, workers=args.workers,
                        min_component=args.min_component, device=args.device, amp=args.amp,
                        quiet=args.quiet, compile_models=args.compile, decode=args.decode)
    print(reports.format_report(report))
    print(f"wrote {run.reports / 'cv.json'}, {run.postprocess_json} and pictures in {run.reports}")
    return 0


def _cmd_robustness(args: argparse.Namespace) -> int:
    from pipeline.data import shifts
    from pipeline.inference import robustness

    run = config.resolve_run_dir(args.run_dir)
    names = shifts.parse(args.shifts)
    fold_ids = None if args.fold == "all" else _fold_ids(args.fold, run)
    report = robustness.run_robustness(args.run_dir, args.data_dir, names, fold_ids,
                                       tta=args.tta, batch_size=args.batch_size,
                                       workers=args.workers, device=args.device, amp=args.amp,
                                       quiet=args.quiet, images_per_fold=args.images_per_fold,
                                       compile_models=args.compile, decode=args.decode)
    print(robustness.format_table(report))
    if report["below_baseline"]:
        log.warning("below the all-empty baseline under shift(s): %s",
                    ", ".join(report["below_baseline"]))
    print(f"wrote {run.reports / 'robustness.json'} and {run.reports / 'robustness.png'}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from pipeline import fileio
    from pipeline.inference import predict, submission

    fileio.check_writable(Path(args.out), "--out")  # before any image is predicted
    paths, run = config.resolve_data_dir(args.data_dir), config.resolve_run_dir(args.run_dir)
    sample = submission.read_sample(Path(args.sample) if args.sample else paths.sample_submission)
    predict.check_test_images(paths.test_images, sample.image_ids, sample.path)
    checkpoints = ([Path(p) for p in args.checkpoints] if args.checkpoints
                   else run.find_checkpoints())
    context = distributed.setup(args.device)
    ensemble = predict.load_models(checkpoints, context.device, compile_models=args.compile)
    params = _postprocess(args, run, ensemble.head)
    written = predict.write_submission(ensemble, paths.test_images, sample, params, context,
                                       Path(args.out), batch_size=args.batch_size,
                                       workers=args.workers, tta=args.tta, amp=args.amp,
                                       quiet=args.quiet, decode=args.decode)
    if written:
        rles, table = written
        n_defects = sum(bool(r) for image_rles in rles.values() for r in image_rles)
        print(f"wrote {args.out}: {len(table)} rows, {len(rles)} images, {n_defects} predicted "
              f"masks ({len(ensemble)} model(s), TTA {args.tta}); validated against "
              f"{sample.path}")
    distributed.teardown(context)
    return 0


def _postprocess(args: argparse.Namespace, run: config.RunPaths, head: str):
    from pipeline.inference.postprocess import PostProcess

    path = Path(args.postprocess) if args.postprocess else run.postprocess_json
    if args.postprocess or path.is_file():
        params = PostProcess.load(path)
    else:
        log.warning("%s not found (run `make cv`); using default post-processing", path)
        params = PostProcess(head=head)
    overrides = {name: getattr(args, name) for name in ("threshold", "min_area", "min_component")
                 if getattr(args, name) is not None}
    return params.replace(**overrides) if overrides else params


def _cmd_validate(args: argparse.Namespace) -> int:
    from pipeline.inference import submission

    sample = submission.read_sample(Path(args.sample))
    table = submission.validate(Path(args.submission), sample)
    print(f"{args.submission}: valid {sample.format}-format submission, {len(table)} rows, "
          f"{len(sample.image_ids)} images")
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    from pipeline.data import labels
    from pipeline.inference import submission

    sample = submission.read_sample(Path(args.sample))
    table = submission.validate(Path(args.submission), sample)
    scores = submission.score(submission.to_predictions(table, sample),
                              labels.read_labels(Path(args.truth)))
    print(json.dumps(scores.as_dict(), indent=2) if args.json else scores.table())
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from pipeline.inference import reports

    found = {}
    for run_dir in args.runs:
        path = config.resolve_run_dir(run_dir).reports / "cv.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: run `make cv RUN_DIR={run_dir}`")
        found[Path(run_dir).name] = json.loads(path.read_text())
    print(reports.compare_runs(found))
    return 0


def _cmd_download(args: argparse.Namespace) -> int:
    from pipeline.kaggle import transfer

    transfer.download(config.resolve_data_dir(args.data_dir), quiet=args.quiet)
    return 0


def _cmd_submit(args: argparse.Namespace) -> int:
    from pipeline.kaggle import actions

    run = config.resolve_run_dir(args.run_dir)
    timing = {"wait": args.wait, "poll_seconds": args.poll_seconds, "timeout": args.timeout,
              "quiet": args.quiet}
    if args.file and (args.kernel or args.kernel_dir or args.kernel_version):
        raise ValueError("--file uploads a file; --kernel-dir/--kernel/--kernel-version submit "
                         "a kernel version: pass one or the other")
    if args.file:
        actions.submit(Path(args.file), config.resolve_data_dir(args.data_dir), run,
                       args.message, **timing)
    else:
        actions.submit_kernel_version(args.kernel, args.kernel_version,
                                      Path(args.kernel_dir) if args.kernel_dir else None,
                                      args.kernel_file, args.message, run, **timing)
    return 0


def _cmd_upload_weights(args: argparse.Namespace) -> int:
    from pipeline.kaggle import datasets

    checkpoints = [Path(p) for p in args.checkpoints] if args.checkpoints else None
    datasets.upload_weights(config.resolve_run_dir(args.run_dir), checkpoints, args.dataset,
                            args.title, args.message, args.public, args.quiet,
                            args.wait_seconds)
    return 0


def _cmd_kernel(args: argparse.Namespace) -> int:
    from pipeline.kaggle import api, pack

    api.check_ref(args.kernel, "--kernel", "kernel")
    out_dir = Path(args.out_dir or Path("kernels") / args.kernel.split("/")[1])
    script = pack.build(out_dir, args.kernel, args.title, args.weights_dataset,
                        config.code_version(), compile_models=args.compile)
    print(f"wrote {script} ({script.stat().st_size / 1024:.0f} KiB) and "
          f"{out_dir / 'kernel-metadata.json'}")
    return 0


def _cmd_push_kernel(args: argparse.Namespace) -> int:
    from pipeline.kaggle import push

    push.push_kernel(Path(args.kernel_dir), args.quiet)
    return 0


def _cmd_kernel_status(args: argparse.Namespace) -> int:
    from pipeline.kaggle import push

    push.kernel_status(args.kernel)
    return 0


def _fold_ids(value: str, run: config.RunPaths) -> list[int]:
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


HANDLERS = {
    "synth": _cmd_synth, "stats": _cmd_stats, "folds": _cmd_folds, "train": _cmd_train,
    "cv": _cmd_cv, "robustness": _cmd_robustness, "predict": _cmd_predict, "compare": _cmd_compare,
    "validate": _cmd_validate, "score": _cmd_score, "download": _cmd_download,
    "submit": _cmd_submit, "upload-weights": _cmd_upload_weights, "kernel": _cmd_kernel,
    "push-kernel": _cmd_push_kernel, "kernel-status": _cmd_kernel_status,
}


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and run one subcommand; errors print one line and return 1/2."""
    args = options.build_parser().parse_args(argv)
    console.setup()
    try:
        return HANDLERS[args.command](args)
    except (ValueError, OSError, FloatingPointError, RuntimeError) as error:
        log.error("%s", error)
        return 1
