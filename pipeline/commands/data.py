"""Data commands: ``synth`` (a synthetic dataset), ``stats``, ``folds``, ``realism``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline import config, options
from pipeline.data.world import DEFAULT_WORLD, WORLDS


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``synth``, ``stats``, ``folds`` and ``realism``."""
    synth = commands.add_parser("synth", help="write a synthetic Severstal-format dataset")
    synth.add_argument("--out", required=True, help="output directory (the competition layout)")
    synth.add_argument("--n-train", type=int, default=1000, help="training images")
    synth.add_argument("--n-test", type=int, default=200, help="test images")
    synth.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes)")
    synth.add_argument("--class-mix", default="real", choices=["real", "balanced"],
                       help="class frequencies: the real train set's, or every class alike "
                            "(default: real)")
    synth.add_argument("--world", default=DEFAULT_WORLD, choices=list(WORLDS),
                       help="realistic: label geometry and looks calibrated to the real data; "
                            "held-out: the same labels, looks from ranges realistic never uses; "
                            "wide: the classic generator with varied exposure, contrast, gamma, "
                            "blur, noise, JPEG quality, sheet edges and defects on the border; "
                            "narrow: the classic generator's one look "
                            f"(default: {DEFAULT_WORLD})")
    synth.add_argument("--old-format", action="store_true",
                       help="write train.csv in the original ImageId_ClassId format")
    synth.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    options.add_quiet(synth)
    synth.set_defaults(handler=synth_command)

    stats = commands.add_parser("stats", help="summarise a dataset (images, classes)")
    options.add_data_dir(stats)
    stats.set_defaults(handler=stats_command)

    folds = commands.add_parser("folds", help="write RUN_DIR/folds.csv (stratified k-fold)")
    options.add_data_dir(folds)
    options.add_run_dir(folds)
    folds.add_argument("--n-folds", type=int, default=5, help="number of folds")
    folds.add_argument("--seed", type=int, default=0, help="shuffle seed")
    folds.set_defaults(handler=folds_command)

    realism = commands.add_parser("realism", help="label and image quantiles vs the real data's")
    options.add_data_dir(realism)
    realism.add_argument("--images", type=int, default=400,
                         help="train images whose looks are measured (default 400; all masks)")
    realism.set_defaults(handler=realism_command)


def synth_command(args: argparse.Namespace) -> int:
    """Write the synthetic dataset and print its summary."""
    from pipeline.data import synthetic

    summary = synthetic.write_dataset(Path(args.out), n_train=args.n_train, n_test=args.n_test,
                                      seed=args.seed, old_format=args.old_format,
                                      quiet=args.quiet, workers=args.workers,
                                      class_mix=args.class_mix, world=args.world)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def stats_command(args: argparse.Namespace) -> int:
    """Print the dataset's summary."""
    from pipeline.data import labels, stats

    paths = config.resolve_data_dir(args.data_dir)
    table, image_ids = labels.load_train(paths)
    print(stats.describe(table, image_ids, paths))
    return 0


def folds_command(args: argparse.Namespace) -> int:
    """Write folds.csv and print the class counts per fold."""
    from pipeline.data import folds, labels

    paths, run = config.resolve_data_dir(args.data_dir), config.resolve_run_dir(args.run_dir)
    table, image_ids = labels.load_train(paths)
    split = folds.make_folds(table, image_ids, n_folds=args.n_folds, seed=args.seed)
    folds.write_folds(split, run.folds_csv)
    print(folds.fold_class_counts(split).to_string())
    print(f"wrote {run.folds_csv}")
    return 0


def realism_command(args: argparse.Namespace) -> int:
    """Print the dataset's label and image quantiles next to the real competition's."""
    from pipeline.data import realism

    if args.images < 1:
        raise ValueError(f"--images must be >= 1, got {args.images}")
    paths = config.resolve_data_dir(args.data_dir)
    labels, images = realism.dataset_measures(paths.root, limit=args.images)
    print(realism.report(labels, images))
    return 0
