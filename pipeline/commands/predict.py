"""``predict``: every fold's best model (or given checkpoints) -> a validated submission.csv, at
the run's tuned post-processing and the inference settings it was tuned with; ``pseudo-label``;
``segment``: the same models and post-processing on any folder of images (label PNGs)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipeline import config, distributed, options
from pipeline.inference.config import InferenceConfig

log = logging.getLogger(__name__)


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``predict``."""
    predict = commands.add_parser("predict", help="checkpoints -> submission.csv",
                                  description="Predict the test images; under torchrun the "
                                  "images are sharded across processes.")
    options.add_data_dir(predict)
    options.add_run_dir(predict)
    predict.add_argument("--sample", default=None,
                         help="sample submission (default DATA_DIR/sample_submission.csv)")
    predict.add_argument("--checkpoints", nargs="+", default=None,
                         help="checkpoint files, averaged with equal weights (default: every "
                              "fold's best.pt of the run, or of every member of an ensemble)")
    predict.add_argument("--out", default=str(config.DEFAULT_SUBMISSION),
                         help="submission file to write")
    predict.add_argument("--postprocess", default=None,
                         help="post-processing JSON (default RUN_DIR/postprocess.json)")
    predict.add_argument("--threshold", type=options.per_class(float), default=None,
                         help="override pixel thresholds, e.g. 0.5 or argmax,0.5,0.5,0.5")
    predict.add_argument("--min-area", type=options.per_class(int), default=None,
                         help="override the empty-mask thresholds, e.g. 600,600,1000,2000")
    predict.add_argument("--min-component", type=options.per_class(int), default=None,
                         help="override the connected-component size limits")
    _add_tuned_inference_flags(predict)
    predict.set_defaults(handler=predict_command)

    pseudo = commands.add_parser(
        "pseudo-label", help="confident test predictions of a gated run or ensemble -> a "
        "train.csv-format file for train --pseudo",
        description="Keeps a test image when the presence gate and the segmentation agree "
        "confidently on every class, at thresholds that reach --precision out of fold (cv's "
        "reports/oof.npz); writes OUT and OUT's .json report.")
    options.add_data_dir(pseudo)
    options.add_run_dir(pseudo, ensemble=True)
    pseudo.add_argument("--out", required=True, help="the pseudo-label CSV to write")
    pseudo.add_argument("--precision", type=float, default=0.95,
                        help="out-of-fold precision each class's confident positives and "
                             "negatives must reach (default 0.95)")
    _add_tuned_inference_flags(pseudo)
    pseudo.set_defaults(handler=pseudo_label_command)
    _register_segment(commands)


def _add_tuned_inference_flags(parser: argparse.ArgumentParser) -> None:
    """The inference flags of a command that applies a run's tuned post-processing: unset,
    TTA and decode are the ones cv tuned with; ``--accept-postprocess`` allows others."""
    options.add_accept_postprocess(parser)
    options.add_settings_flags(parser, InferenceConfig,
                               unset={"tta": "the one cv tuned with, else none",
                                      "decode": "the one cv tuned with, else scaled"})


def _register_segment(commands: argparse._SubParsersAction) -> None:
    """Add ``segment``."""
    segment = commands.add_parser(
        "segment", help="a run or ensemble -> label PNGs of any folder of images",
        description="Segment every JPEG/PNG under --input (no ground truth needed) with the "
        "run's or ensemble's models and tuned post-processing; writes OUT/<relative path>.png "
        "label masks (0 background, 1-4 the classes), OUT/segments.csv (per image and class) "
        "and OUT/segments.json (counts, skipped files, settings).")
    options.add_run_dir(segment, ensemble=True)
    segment.add_argument("--input", required=True, help="folder of .jpg/.jpeg/.png images")
    segment.add_argument("--out", required=True,
                         help="output folder (not inside --input); mirrors its subfolders")
    segment.add_argument("--glob", default="*",
                         help="only file names matching this pattern, e.g. '*.jpg' (default *)")
    segment.add_argument("--no-recursive", action="store_true",
                         help="only the images directly in --input, not its subfolders")
    segment.add_argument("--overlays", action="store_true",
                         help="also write <name>_overlay.png: the image with the classes in "
                              "colour (1 yellow, 2 cyan, 3 red, 4 green)")
    segment.add_argument("--log-every", type=_positive, default=100,
                         help="log a progress line every N images (default 100)")
    _add_tuned_inference_flags(segment)
    segment.set_defaults(handler=segment_command)


def predict_command(args: argparse.Namespace) -> int:
    """Predict the test images into ``--out``; print what was written."""
    from pipeline import fileio
    from pipeline.inference import postprocess, predict, submission
    from pipeline.inference.config import with_recorded

    fileio.check_writable(Path(args.out), "--out")  # before any image is predicted
    from pipeline.inference import ensembles
    from pipeline.training import lock

    paths, chosen = config.resolve_data_dir(args.data_dir), ensembles.resolve(args.run_dir)
    run = chosen.paths
    sample = submission.read_sample(Path(args.sample) if args.sample else paths.sample_submission)
    submission.check_test_images(paths.test_images, sample.image_ids, sample.path)
    models = ([(Path(p), 1.0) for p in args.checkpoints] if args.checkpoints
              else chosen.all_models())
    if args.checkpoints:
        lock.check_not_training(p.parent for p, _ in models)
    else:
        lock.check_runs_not_training(m.run for m in chosen.members)
    params, source = _postprocess(args, run)
    requested = options.requested(InferenceConfig, args)
    settings = with_recorded(requested, params.inference if params else {}, str(source),
                             args.accept_postprocess)
    context = distributed.setup(settings.device)
    ensemble = predict.load_models([p for p, _ in models], context.device, settings,
                                   [w for _, w in models])
    if params:
        postprocess.check_models(params, ensemble.named_digests(), str(source),
                                 args.accept_postprocess)
    params = _overridden(args, params or _default(source, ensemble.head))
    written = predict.write_submission(ensemble, paths.test_images, sample, params, context,
                                       Path(args.out), settings)
    if written:
        rles, table = written
        n_defects = sum(bool(r) for image_rles in rles.values() for r in image_rles)
        print(f"wrote {args.out}: {len(table)} rows, {len(rles)} images, {n_defects} predicted "
              f"masks ({len(ensemble)} model(s), {settings.describe()}); validated against "
              f"{sample.path}")
    distributed.teardown(context)
    return 0


def _postprocess(args: argparse.Namespace, run: config.RunPaths):
    """``(tuned post-processing or None, its path)``: --postprocess, else the run's file."""
    from pipeline.inference.postprocess import PostProcess

    path = Path(args.postprocess) if args.postprocess else run.postprocess_json
    return (PostProcess.load(path) if args.postprocess or path.is_file() else None), path


def _default(path: Path, head: str):
    from pipeline.inference.postprocess import PostProcess

    log.warning("%s not found (run `make cv`); using default post-processing", path)
    return PostProcess(head=head)


def _overridden(args: argparse.Namespace, params):
    overrides = {name: getattr(args, name) for name in ("threshold", "min_area", "min_component")
                 if getattr(args, name) is not None}
    return params.replace(**overrides) if overrides else params


def pseudo_label_command(args: argparse.Namespace) -> int:
    """Write the pseudo-labels and their report; print the per-class table."""
    from pipeline import fileio
    from pipeline.inference import ensembles, pseudo_label
    from pipeline.training import lock

    out = Path(args.out)
    fileio.check_writable(out, "--out")
    lock.check_runs_not_training(m.run for m in ensembles.resolve(args.run_dir).members)
    requested = options.requested(InferenceConfig, args)
    report = pseudo_label.label_test_images(args.run_dir, args.data_dir, out, args.precision,
                                            requested, args.accept_postprocess)
    print(report["table"])
    truth = report.get("truth")
    if truth and truth["dice"] is not None:
        print(f"against test_truth.csv: pseudo-label Dice {truth['dice']:.4f} (per class "
              f"{', '.join('-' if d is None else f'{d:.3f}' for d in truth['per_class'])}), "
              f"every class's presence right on {truth['presence_right']:.1%} of the kept images")
    print(f"wrote {out} ({report['n_kept']} of {report['n_test']} test images) and "
          f"{out.with_suffix('.json')}")
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number of at least 1")
    return value


def segment_command(args: argparse.Namespace) -> int:
    """Segment the images of ``--input`` into ``--out``; print what was written."""
    from pipeline.inference import ensembles, predict, segment
    from pipeline.inference.config import with_recorded
    from pipeline.training import lock

    input_dir, out_dir = Path(args.input), Path(args.out)
    segment.check_folders(input_dir, out_dir)   # before any model is loaded
    listing = segment.find_images(input_dir, args.glob, not args.no_recursive, args.overlays)
    if not listing.images:
        where = "" if args.no_recursive else " (subfolders included)"
        raise FileNotFoundError(f"--input {input_dir} holds no .jpg/.jpeg/.png file matching "
                                f"--glob {args.glob!r}{where}: check the folder and the pattern")
    chosen = ensembles.resolve(args.run_dir)
    lock.check_runs_not_training(m.run for m in chosen.members)
    models = chosen.all_models()
    if not models:
        raise FileNotFoundError(f"--run-dir {chosen.root} has no checkpoint "
                                f"({chosen.paths.checkpoints}/fold*/best.pt): train it first")
    from pipeline.inference.postprocess import PostProcess, check_models

    source = chosen.paths.postprocess_json
    params = PostProcess.load(source) if source.is_file() else None
    requested = options.requested(InferenceConfig, args)
    settings = with_recorded(requested, params.inference if params else {}, str(source),
                             args.accept_postprocess)
    context = distributed.setup(settings.device)
    if context.distributed:
        raise ValueError("segment runs in one process: start it with python, not torchrun")
    ensemble = predict.load_models([p for p, _ in models], context.device, settings,
                                   [w for _, w in models])
    if params:
        check_models(params, ensemble.named_digests(), str(source), args.accept_postprocess)
    about = {"run": chosen.describe(), "checkpoints": [str(p) for p, _ in models],
             "postprocess_file": str(source) if params else None}
    summary = segment.segment_folder(ensemble, params or _default(source, ensemble.head),
                                     input_dir, out_dir, listing, context.device, settings,
                                     args.overlays, args.log_every, about)
    if not summary["n_segmented"]:
        raise ValueError(f"none of the {summary['n_images']} image(s) under {input_dir} could "
                         f"be segmented: the reasons are in {out_dir / segment.SUMMARY}")
    print(f"segmented {summary['n_segmented']} of {summary['n_images']} image(s) into "
          f"{out_dir} ({len(ensemble)} model(s), {settings.describe()}): "
          f"{summary['n_skipped']} skipped (listed in {out_dir / segment.SUMMARY}), "
          f"{summary['n_ignored']} other file(s) ignored; images with class 1-4: "
          f"{', '.join(map(str, summary['images_with_class']))}")
    return 0
