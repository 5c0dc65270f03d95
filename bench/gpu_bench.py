"""FCN32-VGG11 training and prediction throughput on a GPU, with model FLOPs utilisation (MFU).

Synthetic tensors already on the device (no data loading, no JPEG decoding): it measures the
model, not the input pipeline. Training: batch --batch at --height x --width, AMP (the
pipeline's policy: bf16 where the GPU has it natively, else fp16),
channels-last, cross-entropy, fused AdamW; images/s over --steps timed steps after --warmup
untimed ones (which also absorb torch.compile). MFU = 3 x forward FLOPs x images/s / peak
(backward ~ 2x forward). Prediction: forward only, eval mode, AMP, batch --predict-batch.
``torch.cuda.synchronize()`` brackets every timer. Finishes in about 1-2 minutes on an H100.

    python bench/gpu_bench.py [--out results.json] [--no-compile] [--peak-tflops 989]
    python bench/gpu_bench.py --device cpu --steps 2 --batch 2 --height 64 --width 320  # smoke
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from pipeline.models.forward import autocast
from pipeline.models.losses import build_loss
from pipeline.models.registry import build_model, forward_flops, model_info

# Dense bf16 tensor-core peaks (TFLOP/s) from NVIDIA's data sheets; first match of the name wins.
PEAK_BF16_TFLOPS: dict[str, float] = {
    "H200": 989.0, "H100 PCIe": 756.0, "H100 NVL": 835.0, "H100": 989.0, "GH200": 989.0,
    "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10G": 70.0, "A10": 125.0,
}


def assumed_peak(device: torch.device, override: float | None) -> tuple[str, float | None]:
    """``(device name, peak bf16 TFLOP/s or None)``: the override, else the table's entry."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    if override is not None:
        return name, override
    return name, next((peak for key, peak in PEAK_BF16_TFLOPS.items() if key in name), None)


def timed(step, steps: int, warmup: int, device: torch.device) -> tuple[float, float]:
    """``(seconds of the warm-up calls, seconds per timed call)`` of ``step()``."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    sync()
    start = time.perf_counter()
    for _ in range(warmup):
        step()
    sync()
    middle = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return middle - start, (time.perf_counter() - middle) / steps


def bench_train(model: torch.nn.Module, args: argparse.Namespace,
                device: torch.device) -> tuple[float, float]:
    """``(warm-up seconds, seconds per step)`` of forward + backward + AdamW on random data."""
    model.train()
    forward = torch.compile(model) if args.compile else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=device.type == "cuda")
    criterion = build_loss("ce")
    images = torch.rand(args.batch, 3, args.height, args.width, device=device)
    masks = torch.rand(args.batch, 4, args.height, args.width, device=device) > 0.98

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast("auto" if args.amp else "none", device):
            logits = forward(images)
        criterion(logits, masks).backward()
        optimizer.step()

    return timed(step, args.steps, args.warmup, device)


def bench_predict(model: torch.nn.Module, args: argparse.Namespace,
                  device: torch.device) -> tuple[float, float]:
    """``(warm-up seconds, seconds per batch)`` of the eval-mode forward under AMP."""
    model.eval()
    forward = torch.compile(model) if args.compile else model
    images = torch.rand(args.predict_batch, 3, args.height, args.width, device=device)

    def step() -> None:
        with torch.inference_mode(), autocast("auto" if args.amp else "none", device):
            forward(images)

    return timed(step, args.steps, args.warmup, device)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=1600)
    parser.add_argument("--batch", type=int, default=16, help="training batch")
    parser.add_argument("--predict-batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30, help="timed steps of each benchmark")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps before timing")
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--no-amp", dest="amp", action="store_false", help="fp32 instead")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="peak bf16 dense TFLOP/s for MFU (default: from the GPU's name)")
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run both benchmarks, print a table, optionally write JSON."""
    args = parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = True
    name, peak = assumed_peak(device, args.peak_tflops)
    model = build_model(background_prior=0.97).to(device, memory_format=torch.channels_last)
    gflop = forward_flops(args.height, args.width) / 1e9
    train_warm, train_step = bench_train(model, args, device)
    predict_warm, predict_step = bench_predict(model, args, device)
    train_rate, predict_rate = args.batch / train_step, args.predict_batch / predict_step

    def mfu(factor: int, rate: float) -> float | None:
        return None if peak is None else factor * gflop * rate / (peak * 1e3)

    results = {
        "device": name, "torch": torch.__version__, "model": model_info(model).as_dict(),
        "height": args.height, "width": args.width, "amp_bf16": args.amp,
        "compile": args.compile, "channels_last": True, "peak_tflops": peak,
        "forward_gflop_per_image": gflop,
        "train": {"batch": args.batch, "steps": args.steps, "warmup_s": train_warm,
                  "step_s": train_step, "images_per_s": train_rate, "mfu": mfu(3, train_rate)},
        "predict": {"batch": args.predict_batch, "steps": args.steps, "warmup_s": predict_warm,
                    "batch_s": predict_step, "images_per_s": predict_rate,
                    "mfu": mfu(1, predict_rate)},
        "max_memory_gib": (torch.cuda.max_memory_allocated(device) / 2 ** 30
                           if device.type == "cuda" else None),
    }
    print_table(results)
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(results, handle, indent=2)
    return 0


def print_table(results: dict) -> None:
    """The results as a few aligned lines."""
    peak = results["peak_tflops"]
    print(f"{results['device']}, torch {results['torch']}, {results['height']}x"
          f"{results['width']}, bf16 AMP {results['amp_bf16']}, compile {results['compile']}, "
          f"channels_last; {results['forward_gflop_per_image']:.1f} GFLOP per forward; "
          f"peak {'unknown (pass --peak-tflops)' if peak is None else f'{peak:g} TFLOP/s'}")
    print(f"{'benchmark':<10} {'batch':>6} {'warm-up s':>10} {'ms/step':>9} {'images/s':>10} "
          f"{'MFU':>7}")
    for key, seconds in (("train", "step_s"), ("predict", "batch_s")):
        row = results[key]
        mfu = "n/a" if row["mfu"] is None else f"{row['mfu']:.1%}"
        print(f"{key:<10} {row['batch']:>6} {row['warmup_s']:>10.1f} {row[seconds] * 1e3:>9.1f} "
              f"{row['images_per_s']:>10.1f} {mfu:>7}")
    if results["max_memory_gib"] is not None:
        print(f"max GPU memory allocated: {results['max_memory_gib']:.1f} GiB")


if __name__ == "__main__":
    raise SystemExit(main())
