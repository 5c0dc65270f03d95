"""FCN32-VGG11 speed on this CPU, against the machine's fp32 matmul rate.

Prints (a) the fp32 matmul GFLOP/s (best of several 3072 and 4096 square products), (b) the
model's FLOPs per 256x1600 forward, (c) forward-only images/s at 256x1600 (best of --repeats,
``torch.inference_mode``) eager, channels-last and channels-last + ``torch.compile``, each with
its fraction of the matmul-bound limit (images/s * GFLOP per image / matmul GFLOP/s), and
(d) training images/s (forward + backward + AdamW step) at --crop, channels-last.

"freezing" compiles with ``torch._inductor.config.freezing`` (inference only: BatchNorm folded
into the transposed convolutions, ReLU fused into oneDNN convolutions, weights prepacked).
Unless --default-malloc, glibc is told to keep freed memory (``mallopt``: no mmap, no trim):
otherwise every 100-400 MB activation is a fresh mmap whose page faults cost as much as the
convolutions (measured 1.5x on the whole forward; CPU-only runs of the pipeline want the same,
e.g. ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647`` in the environment).

    python bench/bench_model_cpu.py [--threads 2] [--batch 4] [--crop 256x384] [--repeats 3]
                                    [--no-compile] [--default-malloc]
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Callable

import torch
import torch._inductor.config

from pipeline.config import HEIGHT, WIDTH
from pipeline.inference.runtime import keep_freed_memory
from pipeline.models.losses import build_loss
from pipeline.models.registry import build_model, forward_flops


def best_time(step: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Best wall time in seconds of ``repeats`` calls of ``step`` after ``warmup`` calls."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_gflops(repeats: int) -> float:
    """Best fp32 GFLOP/s of square matmuls of sizes 3072 and 4096."""
    best = 0.0
    for size in (3072, 4096):
        a, b = torch.randn(size, size), torch.randn(size, size)
        seconds = best_time(lambda: torch.mm(a, b), repeats)
        best = max(best, 2 * size ** 3 / seconds / 1e9)
    return best


def forward_rate(variant: str, batch: int, repeats: int) -> float:
    """Forward-only images/s of a ``(batch, 3, 256, 1600)`` input in inference mode."""
    model = build_model(background_prior=0.97).eval()
    if variant != "eager":
        model = model.to(memory_format=torch.channels_last)
    if "compile" in variant:
        model = torch.compile(model)
    images = torch.rand(batch, 3, HEIGHT, WIDTH)
    with torch.inference_mode():
        # compilation happens at the first call, the only one that needs the flag
        with torch._inductor.config.patch(freezing=variant.endswith("freezing")):
            model(images)
        seconds = best_time(lambda: model(images), repeats)
    return batch / seconds


def train_rate(crop: tuple[int, int], batch: int, repeats: int, compile_model: bool) -> float:
    """Training images/s (forward + backward + AdamW step, ce loss) on channels-last crops."""
    model = build_model(background_prior=0.97).train().to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    criterion = build_loss("ce")
    forward = torch.compile(model) if compile_model else model
    images = torch.rand(batch, 3, *crop)
    masks = torch.rand(batch, 4, *crop) > 0.99

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        criterion(forward(images), masks).backward()
        optimizer.step()

    return batch / best_time(step, repeats, warmup=2)


def parse_crop(text: str) -> tuple[int, int]:
    """``"256x384"`` -> ``(256, 384)``."""
    height, width = (int(part) for part in text.lower().split("x"))
    if height % 32 or width % 32:
        raise argparse.ArgumentTypeError(f"crop {text} is not a multiple of 32 (e.g. 256x384)")
    return height, width


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--batch", type=int, default=4, help="forward batch at 256x1600")
    parser.add_argument("--train-batch", type=int, default=8)
    parser.add_argument("--crop", type=parse_crop, default=(256, 384), help="training HxW")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    parser.add_argument("--default-malloc", action="store_true",
                        help="leave glibc malloc as it is (mmap and unmap every large block)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tuned = False if args.default_malloc else keep_freed_memory()

    gflop = forward_flops(HEIGHT, WIDTH) / 1e9
    crop_gflop = forward_flops(*args.crop) / 1e9
    peak_before = matmul_gflops(args.repeats)
    variants = ["eager", "channels_last"]
    if not args.no_compile:
        variants += ["channels_last+compile", "channels_last+compile+freezing"]
    forward = {variant: forward_rate(variant, args.batch, args.repeats) for variant in variants}
    train = {f"channels_last{'+compile' if compiled else ''}":
             train_rate(args.crop, args.train_batch, args.repeats, compiled)
             for compiled in [False] + ([] if args.no_compile else [True])}
    # measured again at the end and the best kept: a busy neighbour lowers it, never raises it
    peak = max(peak_before, matmul_gflops(args.repeats))
    load = os.getloadavg()[0]

    print(f"torch {torch.__version__}, {args.threads} threads, "
          f"malloc {'keeps freed memory' if tuned else 'default'}, load average {load:.1f}" + (
              " (> threads: other processes competed, figures are pessimistic)"
              if load > args.threads + 0.5 else ""))
    print(f"(a) fp32 matmul, best of 3072/4096 products: {peak:.1f} GFLOP/s "
          f"(start {peak_before:.1f})")
    print(f"(b) forward FLOPs per {HEIGHT}x{WIDTH} image: {gflop:.1f} GFLOP "
          f"(limit {gflop / peak:.2f} s/image)")
    print(f"(c) forward at {HEIGHT}x{WIDTH}, batch {args.batch}, best of {args.repeats}")
    print(f"    {'variant':<31} {'s/image':>8} {'images/s':>9} {'of limit':>9}")
    for variant, rate in forward.items():
        print(f"    {variant:<31} {1 / rate:8.3f} {rate:9.3f} {rate * gflop / peak:9.2f}")
    height, width = args.crop
    print(f"(d) training (fwd+bwd+AdamW) at {height}x{width}, batch {args.train_batch}, "
          f"best of {args.repeats}; 'of limit' counts 3x forward FLOPs")
    for variant, rate in train.items():
        print(f"    {variant:<31} {1 / rate:8.3f} {rate:9.3f} "
              f"{rate * 3 * crop_gflop / peak:9.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
