"""The ablation of the training techniques on the demo's data and CPU budget (`make recipes`).

Every entry trains the demo's 2 folds of the same synthetic set (`make demo`'s: 400
class-balanced images of the default world, seed 0) with a recipe file plus flags, then runs
`cv`, all with the pipeline's own commands in this process. Entries: the public starter
kernels' recipe (the peer row, also scored at its own fixed post-processing: threshold 0.5,
min_size 3500), the base (the previous demo's recipe), the base with one technique changed,
combinations, and the demo's recipe (the best combination). Columns: out-of-fold score at
default and tuned post-processing, the all-empty baseline, Dice on non-empty pairs overall and
per class (tuned), training seconds. With ``--seeds 0,1`` each entry runs once per seed
(training order, augmentation and initialisation) and the table gives the median and the
spread (max - min).

    python bench/recipes.py [--only demo,ema] [--seeds 0,1] [--out recipes.json]
        [--n-train 400] [--world W] [--workers 0]
    python bench/recipes.py --table a.json,b.json   # the table of saved runs, no training

The synthetic set and each seed's training are deterministic on one machine, so runs saved by
several invocations (``--out``) make one table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from pipeline import cli, distributed, fileio
from pipeline.config import DataPaths, RunPaths
from pipeline.data import world
from pipeline.inference import ensembles, oof, tuning
from pipeline.inference.config import InferenceConfig

DEMO = ["--config", "configs/demo.yaml"]
# The base every technique is added to alone: the demo's recipe before it adopted the best
# combination (a gated Unet, 4 epochs, every image once per epoch, crops at random).
BASE = [*DEMO, "--model", "unet", "--epochs", "4", "--val-every", "4", "--sampler", "uniform",
        "--crop-focus", "0"]
SIGMOID_1ST = ["--head", "sigmoid", "--loss", "bce+dice", "--class-weights", "none",
               "--pos-weight", "2,2,1,1.5", "--pixel-weight", "0.75", "--dice-weight", "0.25"]
ENTRIES = {   # name -> (what it is, training flags)
    "starter": ("public starter kernels: sigmoid Unet, BCE, Adam 5e-4, batch 4, whole images, "
                "flips", ["--config", "configs/starter.yaml"]),
    "base": ("the previous demo: gated Unet, CE + Dice, 4 epochs, uniform, random crops", BASE),
    "select-tuned": ("base, validated every epoch, best.pt by the tuned score",
                     [*BASE, "--val-every", "1", "--select", "tuned"]),
    "select-default": ("base, validated every epoch, best.pt by the default score",
                       [*BASE, "--val-every", "1", "--select", "default"]),
    "ema": ("base + EMA of the weights, decay 0.95", [*BASE, "--ema-decay", "0.95"]),
    "top2": ("base, validated every epoch, best.pt the mean of the 2 best epochs",
             [*BASE, "--val-every", "1", "--average-top-k", "2"]),
    "balanced": ("base + balanced sampler (0.2 each: defect-free, class 1-4)",
                 [*BASE, "--sampler", "balanced"]),
    "crop-focus": ("base + defect-centred crops half the time", [*BASE, "--crop-focus", "0.5"]),
    "focal": ("base with focal + Dice instead of CE + Dice",
              [*BASE, "--loss", "focal+dice", "--class-weights", "none"]),
    "bce-1st": ("base with the 1st place's loss: sigmoid, BCE pos_weight 2,2,1,1.5, "
                "0.75 BCE + 0.25 Dice", [*BASE, *SIGMOID_1ST]),
    "fpn": ("base with FPN instead of Unet", [*BASE, "--model", "fpn"]),
    "epochs8": ("base, 8 epochs", [*BASE, "--epochs", "8", "--val-every", "8"]),
    "bal-crop": ("base + balanced sampler + defect-centred crops",
                 [*BASE, "--sampler", "balanced", "--crop-focus", "0.5"]),
    "fpn-crop8": ("base with FPN, defect-centred crops, 8 epochs",
                  [*BASE, "--model", "fpn", "--crop-focus", "0.5", "--epochs", "8",
                   "--val-every", "8"]),
    "demo": ("the demo's recipe (configs/demo.yaml), the best combination: FPN, balanced "
             "sampler, defect-centred crops, 8 epochs", DEMO),
}


def run(*argv: object) -> None:
    """One pipeline command, in process; a failure stops the benchmark."""
    if cli.main([str(a) for a in argv]) != 0:
        raise SystemExit(f"failed: python -m pipeline {' '.join(map(str, argv))}")


def starter_postprocessing(run_dir: Path, data: Path, workers: int) -> float:
    """The out-of-fold score at the starter kernels' fixed post-processing: every class at
    threshold 0.5 and min_size (min_area) 3500, no gate."""
    settings = InferenceConfig(workers=workers, quiet=True)
    context = distributed.setup(settings.device)
    accumulator, _, _ = oof.collect(ensembles.resolve(run_dir), DataPaths(data), [0, 1], settings,
                                    (0, 0, 0, 0), 0, context, thresholds=(0.5,), lines=False)
    return tuning.scores_at(accumulator.counts(), (0,) * 4, (3500,) * 4).score


def bench_entry(name: str, seed: int, data: Path, root: Path, args) -> dict:
    """Train both folds with one entry's flags and seed, run cv, gather the figures."""
    run_dir = root / f"{name}-seed{seed}"
    run("folds", "--data-dir", data, "--run-dir", run_dir, "--n-folds", 2)
    start = time.perf_counter()
    run("train", "--data-dir", data, "--run-dir", run_dir, *ENTRIES[name][1], "--seed", seed,
        "--workers", args.workers, "--quiet", *args.train_args.split())
    train_seconds = time.perf_counter() - start
    run("cv", "--data-dir", data, "--run-dir", run_dir, "--workers", args.workers, "--quiet")
    report = json.loads((RunPaths(run_dir).reports / "cv.json").read_text())
    row = {"entry": name, "seed": seed, "default": report["default"]["score"],
           "tuned": report["tuned"]["score"], "baseline": report["tuned"]["all_empty_baseline"],
           "nonempty": report["tuned"]["nonempty"],
           "nonempty_per_class": report["tuned"]["nonempty_per_class"],
           "train_seconds": train_seconds}
    if name == "starter":
        row["fixed"] = starter_postprocessing(run_dir, data, args.workers)
    return row


def summary(rows: list[dict]) -> dict:
    """The median of an entry's seeds for every figure, and the spread of its tuned score."""
    out = {"entry": rows[0]["entry"], "seeds": [r["seed"] for r in rows],
           "spread": max(r["tuned"] for r in rows) - min(r["tuned"] for r in rows)}
    for key in ("default", "tuned", "baseline", "nonempty", "train_seconds", "fixed"):
        if key in rows[0]:
            out[key] = statistics.median(r[key] for r in rows)
    per_class = np.array([r["nonempty_per_class"] for r in rows], dtype=float)
    # a class without pairs in every seed stays NaN ("n/a"), without numpy's all-NaN warning
    out["nonempty_per_class"] = [float(np.median(c[~np.isnan(c)])) if (~np.isnan(c)).any()
                                 else float("nan") for c in per_class.T]
    return out


def table(rows: list[dict], args) -> str:
    """The per-entry medians as a Markdown table."""
    lines = [f"{args.n_train} class-balanced synthetic images of the "
             f"{args.world or world.DEFAULT_WORLD} world, 2 folds (the demo's); out of fold; "
             "per class: Dice on the class's non-empty pairs, tuned; spread: max - min of the "
             "tuned score over the seeds (-: one seed):", "",
             "| entry | seeds | score default / tuned | spread | all-empty | tuned - all-empty "
             "| non-empty Dice | per class 1 / 2 / 3 / 4 | training s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        per_class = " / ".join("n/a" if v != v else f"{v:.2f}" for v in r["nonempty_per_class"])
        tuned = f"{r['tuned']:.4f}" + (f" (fixed 0.5/3500: {r['fixed']:.4f})" if "fixed" in r
                                       else "")
        spread = f"{r['spread']:.4f}" if len(r["seeds"]) > 1 else "-"   # one seed: none
        lines.append(f"| {r['entry']} | {','.join(map(str, r['seeds']))} | {r['default']:.4f} "
                     f"/ {tuned} | {spread} | {r['baseline']:.4f} | "
                     f"{r['tuned'] - r['baseline']:+.4f} | {r['nonempty']:.3f} | {per_class} | "
                     f"{r['train_seconds']:.0f} |")
    return "\n".join(lines)


def grouped(runs: list[dict]) -> list[dict]:
    """One summary per entry, in the order the entries first appear; a seed run twice (two
    saved files) counts once, its last run kept."""
    by_entry: dict[str, dict[int, dict]] = {}
    for row in runs:
        by_entry.setdefault(row["entry"], {})[row["seed"]] = row
    return [summary(list(seeds.values())) for seeds in by_entry.values()]


def saved_runs(paths: str) -> list[dict]:
    """The runs of comma-separated JSON files written by --out."""
    runs = []
    for name in paths.split(","):
        try:
            runs += json.loads(Path(name).read_text())
        except (OSError, ValueError) as error:
            raise SystemExit(f"--table: cannot read runs from {name}: {error}; give files "
                             "written by --out")
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=None, help="comma-separated entry names "
                        f"({', '.join(ENTRIES)}, and the --extra ones)")
    parser.add_argument("--extra", action="append", default=[], metavar="NAME=FLAGS",
                        help="an extra entry: the base recipe plus FLAGS (space-separated)")
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds")
    parser.add_argument("--n-train", type=int, default=400)
    parser.add_argument("--world", default=None, help="synthetic world (default: synth's)")
    parser.add_argument("--workers", type=int, default=0, help="loader processes (demo: 0)")
    parser.add_argument("--out", default=None, help="write every run's row as JSON here")
    parser.add_argument("--train-args", default="", help="flags added to every entry's "
                        "training (e.g. '--epochs 1 --max-steps 2' for a smoke run)")
    parser.add_argument("--table", default=None, metavar="FILES",
                        help="print the table of runs saved by --out (comma-separated files) "
                        "and stop")
    args = parser.parse_args()
    if args.table:
        print(table(grouped(saved_runs(args.table)), args))
        return
    for extra in args.extra:
        name, _, flags = extra.partition("=")
        ENTRIES[name] = (f"base + {flags}", [*BASE, *flags.split()])
    names = args.only.split(",") if args.only else list(ENTRIES)
    unknown = sorted(set(names) - set(ENTRIES))
    if unknown:
        parser.error(f"--only: unknown entries {', '.join(unknown)}; valid: {', '.join(ENTRIES)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    runs, rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        world_args = ["--world", args.world] if args.world else []
        run("synth", "--out", root / "data", "--n-train", args.n_train, "--n-test", 1,
            "--class-mix", "balanced", *world_args, "--quiet")
        for name in names:
            mine = []
            for seed in seeds:
                mine.append(bench_entry(name, seed, root / "data", root, args))
                print(f"{name} seed {seed}: tuned {mine[-1]['tuned']:.4f} (all-empty "
                      f"{mine[-1]['baseline']:.4f}), non-empty Dice {mine[-1]['nonempty']:.3f},"
                      f" {mine[-1]['train_seconds']:.0f} s of training", flush=True)
            runs += mine
            rows.append(summary(mine))
            if args.out:   # after every entry: a long run that stops keeps what it measured
                fileio.write_json(Path(args.out), runs)
    print(table(rows, args))


if __name__ == "__main__":
    main()
