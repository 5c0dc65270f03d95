"""Ensembles and pseudo-labels on the demo's data and CPU budget (`make bench-ensemble`).

Three members, each the demo's recipe (`configs/demo.yaml`: 8 epochs, 2 folds of `make demo`'s
400 class-balanced images of the realistic world) with one change: the demo's gated FPN itself,
a gated Unet, and a gated FPN with the sigmoid head and BCE + Dice (the 1st place's positive
weights). Same folds.csv, same epochs and steps each. Then, with the pipeline's own commands:
`cv`, `predict` and `score` (the synthetic test images have truth) for every member, for the
ensemble of all three (equal weights) and for each pair; `pseudo-label` from the three-member
ensemble (target precision 0.95; the pseudo-labels' own Dice against the test truth); the
demo's recipe again with `--pseudo` at the default share (same epochs and steps), scored the
same way. Runs already trained in --out are reused (training is deterministic on one machine),
so a stopped benchmark resumes where it stopped.

    python bench/ensembles.py [--data-dir runs/demo/data] [--out runs/bench-ensemble]
        [--workers 0] [--table results.json]
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

DEMO = ["--config", "configs/demo.yaml"]
MEMBERS = {   # name -> (what it is, training flags)
    "fpn": ("the demo's recipe: gated FPN, softmax, CE + Dice", DEMO),
    "unet": ("the demo's recipe with a Unet", [*DEMO, "--model", "unet"]),
    "fpn-sigmoid": ("the demo's recipe, sigmoid head, BCE + Dice, pos_weight 2,2,1,1.5",
                    [*DEMO, "--head", "sigmoid", "--loss", "bce+dice", "--class-weights",
                     "none", "--pos-weight", "2,2,1,1.5"]),
}
PSEUDO = "fpn-pseudo"


def pipeline(*argv, quiet: bool = False) -> str:
    """``python -m pipeline ...`` in a subprocess, as a user runs it; its stdout."""
    command = [sys.executable, "-m", "pipeline", *map(str, argv)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    if not quiet:
        print(f"  $ python -m pipeline {' '.join(map(str, argv))}", flush=True)
    return result.stdout


def trained(run: Path) -> bool:
    """Whether every fold of folds.csv has a best.pt."""
    if not (run / "folds.csv").is_file():
        return False
    with open(run / "folds.csv", newline="") as handle:
        folds = {row["fold"] for row in csv.DictReader(handle)}
    return bool(folds) and all((run / "checkpoints" / f"fold{k}" / "best.pt").is_file()
                               for k in folds)


def scored(data: Path, run: Path, workers: int, name: str) -> dict:
    """cv (unless done), predict and score of a run or ensemble folder."""
    if not (run / "reports" / "cv.json").is_file():
        pipeline("cv", "--data-dir", data, "--run-dir", run, "--workers", workers, "--quiet")
    cv = json.loads((run / "reports" / "cv.json").read_text())
    submission = run / "submission.csv"
    pipeline("predict", "--data-dir", data, "--run-dir", run, "--workers", workers, "--quiet",
             "--out", submission)
    test = json.loads(pipeline("score", submission, "--sample", data / "sample_submission.csv",
                               "--truth", data / "test_truth.csv", "--json", quiet=True))
    row = {"name": name, "oof_default": cv["default"]["score"],
           "oof_tuned": cv["tuned"]["score"], "all_empty": cv["default"]["all_empty_baseline"],
           "nonempty_tuned": cv["tuned"]["nonempty"], "test": test["score"],
           "test_all_empty": test["all_empty_baseline"]}
    print(f"{name}: OOF {row['oof_default']:.4f} / {row['oof_tuned']:.4f} (all-empty "
          f"{row['all_empty']:.4f}), test {row['test']:.4f}", flush=True)
    return row


def train(data: Path, run: Path, flags: list, folds_csv: Path, workers: int) -> float:
    """Train a member on the common folds unless it is trained; its seconds (0: reused)."""
    if trained(run):
        return 0.0
    run.mkdir(parents=True, exist_ok=True)
    shutil.copy(folds_csv, run / "folds.csv")
    start = time.perf_counter()
    pipeline("train", "--data-dir", data, "--run-dir", run, *flags, "--workers", workers,
             "--quiet")
    return time.perf_counter() - start


def run_benchmark(data: Path, out: Path, workers: int) -> dict:
    """Every row of the table, written to ``out/bench-ensemble.json`` as it grows."""
    if not (data / "train.csv").is_file():
        pipeline("synth", "--out", data, "--n-train", 400, "--n-test", 100, "--seed", 0,
                 "--class-mix", "balanced", "--quiet")
    folds_csv = out / "folds.csv"
    if not folds_csv.is_file():
        pipeline("folds", "--data-dir", data, "--run-dir", out, "--n-folds", 2)
    results: dict = {"rows": [], "data": str(data)}
    for name, (what, flags) in MEMBERS.items():
        seconds = train(data, out / name, flags, folds_csv, workers)
        results["rows"].append({**scored(data, out / name, workers, name), "what": what,
                                "train_seconds": seconds})
    groups = [c for k in (3, 2) for c in itertools.combinations(MEMBERS, k)]
    for group in groups:
        folder = out / ("ensemble-" + "+".join(group))
        pipeline("ensemble", *[a for m in group for a in ("--run-dir", out / m)], "--out", folder)
        results["rows"].append({**scored(data, folder, workers, " + ".join(group)),
                                "what": "ensemble, equal weights"})
    pseudo_csv = out / "pseudo.csv"
    printed = pipeline("pseudo-label", "--data-dir", data, "--run-dir",
                       out / ("ensemble-" + "+".join(MEMBERS)), "--out", pseudo_csv,
                       "--workers", workers, "--quiet")
    print(printed, flush=True)
    results["pseudo"] = json.loads(pseudo_csv.with_suffix(".json").read_text())
    seconds = train(data, out / PSEUDO, [*DEMO, "--pseudo", pseudo_csv], folds_csv, workers)
    results["rows"].append({**scored(data, out / PSEUDO, workers, PSEUDO), "train_seconds":
                            seconds, "what": "the demo's recipe + pseudo-labels, share 0.2"})
    (out / "bench-ensemble.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def table(results: dict) -> str:
    """The markdown table of the rows, and the pseudo-labels' figures."""
    lines = ["| run | OOF default | OOF tuned | all-empty | non-empty Dice | test | test "
             "all-empty |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in results["rows"]:
        lines.append(f"| {r['name']} | {r['oof_default']:.4f} | {r['oof_tuned']:.4f} | "
                     f"{r['all_empty']:.4f} | {r['nonempty_tuned']:.4f} | {r['test']:.4f} | "
                     f"{r['test_all_empty']:.4f} |")
    pseudo = results.get("pseudo")
    if pseudo:
        truth = pseudo.get("truth") or {}
        dice = truth.get("dice")
        lines.append(f"\npseudo-labels: {pseudo['n_kept']} of {pseudo['n_test']} test images "
                     f"kept (positives per class {pseudo['kept_positive']}); their Dice "
                     f"against the test truth "
                     f"{'-' if dice is None else f'{dice:.4f}'}, every class's presence right "
                     f"on {truth.get('presence_right', 0) or 0:.1%} of them")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default="runs/demo/data")
    parser.add_argument("--out", default="runs/bench-ensemble")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--table", default=None, help="print the table of a saved results JSON")
    args = parser.parse_args(argv)
    if args.table:
        print(table(json.loads(Path(args.table).read_text())))
        return 0
    results = run_benchmark(Path(args.data_dir), Path(args.out), args.workers)
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
