"""More learning per CPU second? The demo's training step eager and compiled, channels-last or
not, and what the loader costs beside it (`make bench-train`).

The step is the trainer's: the demo's model (a gated FPN on EfficientNet-Lite0, built by the
registry from configs/demo.yaml), its loss (CE + Dice with class weights and the gate's BCE),
AdamW, a (8, 3, 128, 384) batch. For each variant: the first step's seconds (for
``torch.compile``, the compilation), then the median and spread (min - max) of the next
``--steps`` steps, and the break-even: how many steps the compiled step needs to win back its
compile time. The loader's share: the median seconds to make one batch of the demo's training
items (JPEG decode at the input scale, masks, resize, crop, flips, strong augmentation) from a
synthetic set, against the step's seconds: the most a decoded-image cache could save.

    python bench/bench_train_step.py [--steps 12] [--rounds 3] [--no-compile]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from pipeline import settings
from pipeline.config import DataPaths
from pipeline.data import labels, synthetic
from pipeline.data.dataset import SteelDataset, Transform, collate
from pipeline.models import forward
from pipeline.models.losses import build_loss
from pipeline.models.registry import build_model
from pipeline.training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def demo_config() -> TrainConfig:
    """The demo's training settings, from its recipe file."""
    return TrainConfig.from_dict(settings.read_file(ROOT / "configs" / "demo.yaml"),
                                 "configs/demo.yaml")


def make_step(cfg: TrainConfig, channels_last: bool, compiled: bool):
    """A function doing one training step of the demo's model on a given batch."""
    torch.manual_seed(0)
    model = build_model(cfg.model, head=cfg.head, encoder=cfg.encoder, encoder_weights="none",
                        background_prior=cfg.background_prior, input_scale=cfg.scale,
                        gate=cfg.gate)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    loss_fn = build_loss(cfg.loss, cfg.head, cfg.class_weights,
                         cls_weight=cfg.cls_weight if cfg.gate else None)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    net = torch.compile(model) if compiled else model
    model.train()

    def step(images: torch.Tensor, masks: torch.Tensor) -> float:
        logits, presence = forward.forward_padded(net, images)
        loss = loss_fn(logits, masks, presence)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()
    return step


def time_variant(cfg: TrainConfig, channels_last: bool, compiled: bool, steps: int) -> dict:
    """First-step seconds and the median / spread of the following steps."""
    images = torch.rand(cfg.batch_size, 3, *cfg.crop)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    masks = (torch.rand(cfg.batch_size, 4, *cfg.crop) > 0.97).to(torch.uint8)
    step = make_step(cfg, channels_last, compiled)
    start = time.perf_counter()
    step(images, masks)
    first = time.perf_counter() - start
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step(images, masks)
        times.append(time.perf_counter() - start)
    return {"first": first, "median": statistics.median(times), "min": min(times),
            "max": max(times)}


def loader_seconds(cfg: TrainConfig, batches: int) -> list[float]:
    """Seconds to make each of ``batches`` batches of the demo's training items."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        n = cfg.batch_size * batches
        synthetic.write_dataset(root, n_train=n, n_test=0, seed=0, quiet=True, workers=1,
                                class_mix="balanced")
        table, ids = labels.load_train(DataPaths(root))
        dataset = SteelDataset(root / "train_images", ids, labels.rle_table(table, ids),
                               Transform(scale=cfg.scale, crop=cfg.crop, flips=True,
                                         augment=cfg.augment))
        out = []
        for b in range(batches):
            start = time.perf_counter()
            collate([dataset[i] for i in range(b * cfg.batch_size, (b + 1) * cfg.batch_size)])
            out.append(time.perf_counter() - start)
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every variant")
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()
    cfg = demo_config()
    print(f"the demo's step: {cfg.model} + gate on EfficientNet-Lite0, batch {cfg.batch_size}, "
          f"crops {cfg.crop[0]}x{cfg.crop[1]}, {torch.get_num_threads()} threads", flush=True)
    variants = [(False, False), (True, False)] + ([] if args.no_compile else [(True, True)])
    results = {}
    for rnd in range(args.rounds):   # rounds alternate the variants: a busy minute hits all
        for channels_last, compiled in variants:
            name = f"{'compiled' if compiled else 'eager'}, " \
                   f"{'channels-last' if channels_last else 'contiguous'}"
            results.setdefault(name, []).append(time_variant(cfg, channels_last, compiled,
                                                             args.steps))
            r = results[name][-1]
            print(f"round {rnd + 1}: {name}: first step {r['first']:.2f} s, then "
                  f"{r['median']:.3f} s/step", flush=True)
    eager = statistics.median(r["median"] for r in results["eager, channels-last"])
    print("\n| step | first step s (round 1) | s/step median | spread of the rounds' medians "
          "| images/s | break-even steps vs eager channels-last |\n|---|---|---|---|---|---|")
    for name, rows in results.items():
        # round 1's first step holds the compilation; later rounds reuse this process's
        # compiled code, so a median of first steps would hide it
        first = rows[0]["first"]
        median = statistics.median(r["median"] for r in rows)
        spread = f"{min(r['median'] for r in rows):.3f} - {max(r['median'] for r in rows):.3f}"
        gain = eager - median
        even = "n/a" if "compiled" not in name else (
            f"{(first - eager) / gain:.0f}" if gain > 0 else "never (slower)")
        print(f"| {name} | {first:.2f} | {median:.3f} | {spread} | "
              f"{cfg.batch_size / median:.1f} | {even} |")
    load = loader_seconds(cfg, 8)
    print(f"\nloading a batch of {cfg.batch_size} training items (decode, masks, resize, crop, "
          f"flips, {cfg.augment} augmentation): median {statistics.median(load):.3f} s "
          f"(spread {min(load):.3f} - {max(load):.3f}), "
          f"{statistics.median(load) / eager:.1%} of an eager step")


if __name__ == "__main__":
    main()
