"""The model zoo on one budget: the same synthetic folds, settings and epochs for every entry.

Entries: FCN32-VGG11 (scratch), Unet and FPN on EfficientNet-Lite0 (scratch and ImageNet from
PyPI), each without and with the presence gate. For each: out-of-fold score at default and
tuned post-processing, the all-empty baseline, Dice on non-empty pairs (overall and per class),
training and predict images/s, parameters and GFLOP per 256x1600 image. Every entry runs the
pipeline's own commands (train, cv) in this process; the table is printed and written as JSON.

    python bench/zoo.py [--n-train 300] [--epochs 4] [--scale 0.25] [--out zoo.json]
        [--only fcn32,unet-imagenet]   # a subset, by entry name
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from pipeline import cli, fileio
from pipeline.config import RunPaths
from pipeline.models.registry import build_model, forward_flops

ENTRIES = {   # name -> training flags
    "fcn32": ["--model", "fcn32_vgg11", "--encoder-weights", "none"],
    "unet-scratch": ["--model", "unet", "--encoder-weights", "none"],
    "unet-imagenet": ["--model", "unet", "--encoder-weights", "imagenet"],
    "fpn-scratch": ["--model", "fpn", "--encoder-weights", "none"],
    "fpn-imagenet": ["--model", "fpn", "--encoder-weights", "imagenet"],
}


def run(*argv: object) -> None:
    """One pipeline command, in process; a failure stops the benchmark."""
    if cli.main([str(a) for a in argv]) != 0:
        raise SystemExit(f"failed: python -m pipeline {' '.join(map(str, argv))}")


def predict_rate(flags: list[str], scale: float, images: int = 16) -> float:
    """Images/s of the eval-mode forward at the input scale, batch 8, best of 2."""
    model = build_model(flags[1], encoder_weights="none").eval()
    model = model.to(memory_format=torch.channels_last)
    size = (round(256 * scale), -(-round(1600 * scale) // 32) * 32)
    batch = torch.rand(8, 3, *size)
    best = float("inf")
    with torch.inference_mode():
        for _ in range(2):
            start = time.perf_counter()
            for _ in range(images // 8):
                model(batch)
            best = min(best, time.perf_counter() - start)
    return images / best


def bench_entry(name: str, gate: bool, data: Path, root: Path, args) -> dict:
    """Train both folds, run cv, and gather the figures of one entry."""
    flags = ENTRIES[name] + (["--gate"] if gate else ["--no-gate"])
    run_dir = root / f"{name}{'-gate' if gate else ''}"
    run("folds", "--data-dir", data, "--run-dir", run_dir, "--n-folds", 2)
    start = time.perf_counter()
    run("train", "--data-dir", data, "--run-dir", run_dir, *flags, "--scale", args.scale,
        "--crop", "none", "--batch-size", 8, "--lr", 1e-3, "--background-prior", 0.97,
        "--warmup-epochs", 0.5, "--epochs", args.epochs, "--val-every", args.epochs,
        "--workers", 1, "--quiet")
    train_seconds = time.perf_counter() - start
    run("cv", "--data-dir", data, "--run-dir", run_dir, "--workers", 1, "--quiet")
    report = json.loads((RunPaths(run_dir).reports / "cv.json").read_text())
    logs = [json.loads(p.read_text()) for p in sorted((run_dir / "logs").glob("fold*.json"))]
    images_per_s = [row["images_per_s"] for log in logs for row in log]
    model = build_model(flags[1], gate=gate)
    return {"entry": f"{name}{' + gate' if gate else ''}", "default": report["default"]["score"],
            "tuned": report["tuned"]["score"],
            "baseline": report["tuned"]["all_empty_baseline"],
            "nonempty": report["tuned"]["nonempty"],
            "nonempty_per_class": report["tuned"]["nonempty_per_class"],
            "train_img_s": sum(images_per_s) / len(images_per_s),
            "train_seconds": train_seconds,
            "predict_img_s": predict_rate(flags, args.scale),
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
            "gflop": forward_flops(name=flags[1], gate=gate) / 1e9}


def table(rows: list[dict], args) -> str:
    """The results as a Markdown table."""
    lines = [f"{args.n_train} synthetic images ({args.class_mix} classes), 2 folds, scale "
             f"{args.scale}, {args.epochs} epochs, batch 8, CE, lr 1e-3; out-of-fold; per class: "
             "Dice on the class's non-empty pairs, tuned:", "",
             "| model | score default / tuned | all-empty | non-empty Dice | per class 1 / 2 / 3 "
             "/ 4 | train img/s | predict img/s | params | GFLOP (256x1600) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        per_class = " / ".join("n/a" if v != v else f"{v:.2f}" for v in r["nonempty_per_class"])
        lines.append(f"| {r['entry']} | {r['default']:.4f} / {r['tuned']:.4f} | "
                     f"{r['baseline']:.4f} | {r['nonempty']:.3f} | {per_class} | "
                     f"{r['train_img_s']:.1f} | {r['predict_img_s']:.1f} | "
                     f"{r['params_m']:.1f} M | {r['gflop']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=300)
    parser.add_argument("--class-mix", default="balanced", choices=["real", "balanced"])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--scale", type=float, default=0.25)
    parser.add_argument("--only", default=None, help="comma-separated entry names")
    parser.add_argument("--no-gate-variants", action="store_true", help="skip the gated runs")
    parser.add_argument("--out", default=None, help="write the rows as JSON here")
    parser.add_argument("--world", default="narrow", choices=["narrow", "wide"],
                        help="synthetic world (the README's table: narrow)")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(ENTRIES)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run("synth", "--out", root / "data", "--n-train", args.n_train, "--n-test", 1,
            "--class-mix", args.class_mix, "--world", args.world, "--quiet")
        for name in names:
            for gate in (False,) if args.no_gate_variants else (False, True):
                rows.append(bench_entry(name, gate, root / "data", root, args))
                print(f"{rows[-1]['entry']}: tuned {rows[-1]['tuned']:.4f}, "
                      f"{rows[-1]['train_seconds']:.0f} s of training", flush=True)
    print(table(rows, args))
    if args.out:
        fileio.write_json(Path(args.out), rows)


if __name__ == "__main__":
    main()
