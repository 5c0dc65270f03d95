"""Evaluation commands: ``cv`` (out-of-fold scores and post-processing tuning), ``robustness``
(the same under input shifts), ``compare`` (runs side by side), ``report`` (one HTML page of a
run), ``validate`` and ``score`` (a submission file)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from pipeline import config, options
from pipeline.data.shifts import SHIFTS
from pipeline.inference.config import InferenceConfig

log = logging.getLogger(__name__)


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``cv``, ``robustness``, ``compare``, ``ensemble``, ``report``, ``validate`` and
    ``score``."""
    cv = commands.add_parser("cv", help="out-of-fold scores and post-processing tuning")
    options.add_data_dir(cv)
    options.add_run_dir(cv, ensemble=True)
    options.add_fold(cv)
    cv.add_argument("--min-component", type=options.per_class(int), default=[0] * 4,
                    help="drop connected components smaller than this (pixels, per class)")
    options.add_settings_flags(cv, InferenceConfig)
    cv.set_defaults(handler=cv_command)

    robustness = commands.add_parser(
        "robustness", help="out-of-fold scores under input shifts vs the all-empty baseline")
    options.add_data_dir(robustness)
    options.add_run_dir(robustness, ensemble=True)
    robustness.add_argument("--shifts", default="all",
                            help=f"'all' or shift names ({', '.join(SHIFTS)}), e.g. "
                                 "none,blur,jpeg-q20 (default: all)")
    options.add_fold(robustness)
    robustness.add_argument("--images-per-fold", type=int, default=None,
                            help="score only the first N validation images of each fold "
                                 "(default: all)")
    options.add_accept_postprocess(robustness)
    options.add_settings_flags(robustness, InferenceConfig,
                               unset={"tta": "the run's, from cv", "decode": "the run's"})
    robustness.set_defaults(handler=robustness_command)

    compare = commands.add_parser("compare", help="compare the CV reports of several runs")
    compare.add_argument("runs", nargs="+", help="run or ensemble folders holding reports/cv.json"
                         " (an ensemble's members are listed before it)")
    compare.set_defaults(handler=compare_command)

    _add_report(commands)

    ensemble = commands.add_parser(
        "ensemble", help="an ensemble folder of several runs, which cv, predict, robustness, "
        "compare, upload-weights and kernel take as --run-dir",
        description="Members must share folds.csv and have been through cv. Run `cv --run-dir "
        "OUT` next: it tunes the ensemble's post-processing out of fold.")
    ensemble.add_argument("--run-dir", action="append", required=True, dest="members",
                          metavar="RUN_DIR", help="a member run folder (give two or more)")
    ensemble.add_argument("--weights", type=options.parse_floats, default=None,
                          help="one weight per member, e.g. 2,1 (default: equal)")
    ensemble.add_argument("--out", required=True, help="the ensemble folder to write")
    ensemble.set_defaults(handler=ensemble_command)

    validate = commands.add_parser("validate", help="check a submission against its sample")
    validate.add_argument("submission", help="submission.csv to check")
    validate.add_argument("--sample", required=True, help="the sample_submission.csv")
    validate.set_defaults(handler=validate_command)

    score = commands.add_parser("score", help="score a submission against known labels")
    score.add_argument("submission", help="submission.csv to score")
    score.add_argument("--sample", required=True, help="the sample_submission.csv")
    score.add_argument("--truth", required=True,
                       help="labels in train.csv format (test_truth.csv of synthetic data)")
    score.add_argument("--json", action="store_true", help="print the scores as JSON")
    score.set_defaults(handler=score_command)


def _add_report(commands: argparse._SubParsersAction) -> None:
    """``report RUN_DIR [--out FILE]``."""
    report = commands.add_parser(
        "report", help="one self-contained HTML page of a run or ensemble (after cv)",
        description="Config, training curves, default vs tuned scores, post-processing, score "
        "breakdown, stability and robustness on one page; pictures embedded, no network.")
    report.add_argument("run_dir", metavar="RUN_DIR",
                        help="a run or ensemble folder holding reports/cv.json")
    report.add_argument("--out", default=None,
                        help="the page to write (default: RUN_DIR/reports/report.html)")
    report.set_defaults(handler=report_command)


def cv_command(args: argparse.Namespace) -> int:
    """Out-of-fold predictions, tuning, reports; print the report."""
    from pipeline import fileio
    from pipeline.inference import oof, reports

    run = config.resolve_run_dir(args.run_dir)
    fileio.check_writable(run.postprocess_json, "--run-dir")  # before the OOF predictions
    fold_ids = None if args.fold == "all" else options.fold_ids(args.fold, run)
    settings = options.settings_from_args(InferenceConfig, args)
    _check_not_training(args.run_dir, fold_ids)
    report = oof.run_cv(args.run_dir, args.data_dir, settings, fold_ids,
                        min_component=args.min_component)
    print(reports.format_report(report))
    print(f"wrote {run.reports / 'cv.json'}, {run.postprocess_json} and pictures in {run.reports}")
    return 0


def robustness_command(args: argparse.Namespace) -> int:
    """OOF scores under every chosen shift; print the table."""
    from pipeline.data import shifts
    from pipeline.inference import robustness

    run = config.resolve_run_dir(args.run_dir)
    names = shifts.parse(args.shifts)
    fold_ids = None if args.fold == "all" else options.fold_ids(args.fold, run)
    _check_not_training(args.run_dir, fold_ids)
    report = robustness.run_robustness(args.run_dir, args.data_dir, names, fold_ids,
                                       requested=options.requested(InferenceConfig, args),
                                       images_per_fold=args.images_per_fold,
                                       accept=args.accept_postprocess)
    print(robustness.format_table(report))
    if report["below_baseline"]:
        log.warning("below the all-empty baseline under shift(s): %s",
                    ", ".join(report["below_baseline"]))
    print(f"wrote {run.reports / 'robustness.json'} and {run.reports / 'robustness.png'}")
    return 0


def _check_not_training(run_dir: str | None, fold_ids: list[int] | None) -> None:
    """Refuse the folds (default: all) of the run or its members that a running ``train``
    holds: their best.pt may be replaced while read."""
    from pipeline.inference import ensembles
    from pipeline.training import lock

    lock.check_runs_not_training([m.run for m in ensembles.resolve(run_dir).members], fold_ids)


def compare_command(args: argparse.Namespace) -> int:
    """Print the runs' CV reports side by side (an ensemble's members first, then it)."""
    from pipeline.inference import reports

    found = {}
    for run_dir in args.runs:
        path = config.resolve_run_dir(run_dir).reports / "cv.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: run `make cv RUN_DIR={run_dir}`")
        report = json.loads(path.read_text())
        for member in report.get("members", []):
            found[f"  {member['name']} (w {member['weight']:g})"] = member
        found[Path(run_dir).name] = report
    print(reports.compare_runs(found))
    return 0


def report_command(args: argparse.Namespace) -> int:
    """Write the run's HTML page; print its path."""
    from pipeline import fileio
    from pipeline.inference import html_report

    if args.out is not None and Path(args.out).is_dir():
        raise IsADirectoryError(f"--out {args.out} is a directory: give a file name, e.g. "
                                f"{Path(args.out) / html_report.REPORT_FILE}")
    if args.out is not None:
        fileio.check_writable(Path(args.out), "--out")
    path = html_report.write(args.run_dir, args.out)
    print(f"wrote {path}")
    return 0


def ensemble_command(args: argparse.Namespace) -> int:
    """Write the ensemble folder; print its members."""
    from pipeline.inference import ensembles

    source = ensembles.create(args.members, args.weights, args.out)
    print(f"wrote {source.root / ensembles.ENSEMBLE_FILE}: {source.describe()}; next: "
          f"python -m pipeline cv --run-dir {source.root}")
    return 0


def validate_command(args: argparse.Namespace) -> int:
    """Check a submission against its sample."""
    from pipeline.inference import submission

    sample = submission.read_sample(Path(args.sample))
    table = submission.validate(Path(args.submission), sample)
    print(f"{args.submission}: valid {sample.format}-format submission, {len(table)} rows, "
          f"{len(sample.image_ids)} images")
    return 0


def score_command(args: argparse.Namespace) -> int:
    """Score a submission against known labels."""
    from pipeline.data import labels
    from pipeline.inference import submission

    sample = submission.read_sample(Path(args.sample))
    table = submission.validate(Path(args.submission), sample)
    truth = labels.read_labels(Path(args.truth))
    if len(truth) and not set(truth["ImageId"]) & set(sample.image_ids):
        raise ValueError(f"--truth {args.truth} labels none of the {len(sample.image_ids)} "
                         f"images of {args.sample} (e.g. it has {truth['ImageId'].iloc[0]}, the "
                         f"submission {sample.image_ids[0]}): pass the labels of these images "
                         "(test_truth.csv of a synthetic set)")
    scores = submission.score(submission.to_predictions(table, sample), truth)
    print(json.dumps(scores.as_dict(), indent=2) if args.json else scores.table())
    return 0
