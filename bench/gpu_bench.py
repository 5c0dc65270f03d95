"""Training and prediction throughput of every registered model on a GPU, with MFU.

FCN32-VGG11 and each zoo architecture on its default encoder (random weights, nothing is
downloaded), at --height x --width (256x1600), on synthetic tensors already on the device: it
measures the models, not the input pipeline. Training: batch --batch, the pipeline's precision
policy (``forward.autocast``: bf16 where the GPU has it natively, else fp16 with a GradScaler,
full precision on the CPU), channels-last, the training config's default head and loss
(softmax + cross-entropy, what ``make zoo`` trains), fused AdamW; images/s over --steps timed
steps after --warmup untimed ones (which also absorb torch.compile). Prediction: eval mode,
inference_mode, AMP, batch --predict-batch, one pass. MFU = 3 x forward FLOPs x images/s / peak
for training (backward ~ 2x forward), 1 x for prediction; FLOPs from ``registry.forward_flops``.
Kernel minutes: 5,506 test images x 5 folds x 2 flips at the measured predict rate (on this
GPU: Kaggle's own GPUs are slower), flagged past Kaggle's limit of about an hour.
``torch.cuda.synchronize()`` brackets every timer; a model that fails (out of memory, a compile
error) gets its error in its row and the next model runs. Rows print as they finish and the
JSON is rewritten after each, so a run stopped at a time limit keeps what it measured.

    python bench/gpu_bench.py [--models all|fcn32_vgg11,unet] [--out results.json]
        [--no-compile] [--no-amp] [--peak-tflops 989]
    python bench/gpu_bench.py --device cpu --models fcn32_vgg11 --steps 1 --warmup 1 \
        --batch 2 --predict-batch 2 --height 64 --width 320   # smoke

On a lent GPU machine, bench/gpu_bench.sh is the one command. Time on an H100/H200, all 8
models, defaults (compile on, 20 timed steps after 5 warm-up): an estimate, not yet measured, of
5-9 minutes, nearly all of it torch.compile (it counts: a training and an eval graph per model,
some 40-70 s a model together, shown as warm-up s); the timed steps take seconds a model.
Without compile (--no-compile) about 1-2 minutes.
"""

from __future__ import annotations

import argparse
import gc
import time
from pathlib import Path

import torch

from pipeline import fileio
from pipeline.training.config import TrainConfig
from pipeline.models.forward import amp_dtype, autocast
from pipeline.models.losses import build_loss
from pipeline.models.registry import MODELS, build_model, forward_flops, model_info

KAGGLE_TEST_IMAGES, KAGGLE_PASSES, KAGGLE_LIMIT_MIN = 5506, 5 * 2, 60.0
TARGET_TRAIN_MFU, TARGET_PREDICT_RATE = 0.40, 1500.0   # issue 12, on an H100/H200-class GPU
# Dense tensor-core peaks (TFLOP/s) from NVIDIA's data sheets: bf16, or fp16 on GPUs without
# bf16 (V100, T4, P100); first match of the name wins.
PEAK_TFLOPS: dict[str, float] = {
    "H200": 989.0, "H100 PCIe": 756.0, "H100 NVL": 835.0, "H100": 989.0, "GH200": 989.0,
    "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10G": 70.0, "A10": 125.0,
    "V100": 125.0, "T4": 65.0, "P100": 18.7,
}
COLUMNS = (("model", 14), ("encoder", 25), ("GFLOP/fwd", 9), ("train img/s", 11),
           ("train MFU", 9), ("pred img/s", 10), ("pred MFU", 8), ("peak GiB", 8),
           ("kernel min", 10), ("warm-up s", 9))


def assumed_peak(device: torch.device, override: float | None) -> tuple[str, float | None]:
    """``(device name, peak TFLOP/s or None)``: the override, else the table's entry."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    if override is not None:
        return name, override
    return name, next((peak for key, peak in PEAK_TFLOPS.items() if key in name), None)


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step, steps: int, warmup: int, device: torch.device) -> tuple[float, float]:
    """``(seconds of the warm-up calls, seconds per timed call)`` of ``step()``."""
    sync(device)
    start = time.perf_counter()
    for _ in range(warmup):
        step()
    sync(device)
    middle = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return middle - start, (time.perf_counter() - middle) / steps


def bench_train(model: torch.nn.Module, args: argparse.Namespace,
                device: torch.device) -> tuple[float, float]:
    """``(warm-up seconds, seconds per step)`` of forward + loss + backward + fused AdamW."""
    cfg = TrainConfig()
    model.train()
    forward = torch.compile(model) if args.compile else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                  fused=True)
    scaler = torch.amp.GradScaler("cuda", enabled=args.dtype == torch.float16)
    criterion = build_loss(cfg.loss, cfg.head)
    images = torch.rand(args.batch, 3, args.height, args.width, device=device)
    images = images.contiguous(memory_format=torch.channels_last)
    masks = torch.rand(args.batch, 4, args.height, args.width, device=device) > 0.98

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(args.amp, device):
            logits = forward(images)
        scaler.scale(criterion(logits, masks)).backward()
        scaler.step(optimizer)
        scaler.update()

    return timed(step, args.steps, args.warmup, device)


def bench_predict(model: torch.nn.Module, args: argparse.Namespace,
                  device: torch.device) -> tuple[float, float]:
    """``(warm-up seconds, seconds per batch)`` of one eval-mode forward pass under AMP."""
    model.eval()
    forward = torch.compile(model) if args.compile else model
    images = torch.rand(args.predict_batch, 3, args.height, args.width, device=device)
    images = images.contiguous(memory_format=torch.channels_last)

    def step() -> None:
        with torch.inference_mode(), autocast(args.amp, device):
            forward(images)

    return timed(step, args.steps, args.warmup, device)


def bench_model(name: str, args: argparse.Namespace, device: torch.device,
                peak: float | None) -> dict:
    """The row of one model: FLOPs, training and predict rates, MFU, peak memory, kernel time."""
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    flops = forward_flops(args.height, args.width, name, TrainConfig().head)
    model = build_model(name, head=TrainConfig().head, encoder_weights="none",
                        background_prior=0.97).to(device, memory_format=torch.channels_last)
    row = {"model": name, "encoder": model_info(model).encoder, "forward_flops": flops}
    train_warm, train_step = bench_train(model, args, device)
    predict_warm, predict_step = bench_predict(model, args, device)
    train_rate, predict_rate = args.batch / train_step, args.predict_batch / predict_step
    kernel_minutes = KAGGLE_TEST_IMAGES * KAGGLE_PASSES / predict_rate / 60

    def mfu(factor: int, rate: float) -> float | None:
        return None if peak is None else factor * flops * rate / (peak * 1e12)

    return {**row, "train_warmup_s": train_warm, "train_step_s": train_step,
            "train_images_per_s": train_rate, "train_mfu": mfu(3, train_rate),
            "predict_warmup_s": predict_warm, "predict_batch_s": predict_step,
            "predict_images_per_s": predict_rate, "predict_mfu": mfu(1, predict_rate),
            "peak_gib": (torch.cuda.max_memory_allocated(device) / 2 ** 30
                         if device.type == "cuda" else None),
            "kernel_minutes": kernel_minutes, "warmup_s": train_warm + predict_warm,
            "kernel_over_limit": kernel_minutes > KAGGLE_LIMIT_MIN, "error": None}


def safe_row(name: str, args: argparse.Namespace, device: torch.device,
             peak: float | None) -> dict:
    """``bench_model``, or a row carrying the error's first line; memory freed either way."""
    try:
        row = bench_model(name, args, device, peak)
    except Exception as error:  # out of memory, compile errors: report, go on to the next
        message = (str(error).strip().splitlines() or [""])[0]
        row = {"model": name, "encoder": MODELS[name].default_encoder,
               "error": f"{type(error).__name__}: {message}"[:300]}
    torch._dynamo.reset()   # a fresh compile cache per model: the zoo models share forward()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def format_row(row: dict) -> str:
    """One aligned table line of a model's row (its error in place of the figures)."""
    def number(key: str, spec: str, scale: float = 1.0) -> str:
        return "n/a" if row.get(key) is None else format(row[key] * scale, spec)

    head = [row["model"], row["encoder"]]
    if row["error"]:
        cells = head + [f"FAILED {row['error']}"]
    else:
        minutes = number("kernel_minutes", ",.1f") + (" !" if row["kernel_over_limit"] else "")
        cells = head + [number("forward_flops", ".1f", 1e-9),
                        number("train_images_per_s", ",.1f"), number("train_mfu", ".1%"),
                        number("predict_images_per_s", ",.1f"), number("predict_mfu", ".1%"),
                        number("peak_gib", ".1f"), minutes, number("warmup_s", ",.0f")]
    widths = [width for _, width in COLUMNS]
    return " ".join(cell.ljust(width) if i < 2 else cell.rjust(width)
                    for i, (cell, width) in enumerate(zip(cells, widths + [0])))


def target_lines(rows: list[dict]) -> list[str]:
    """One line per issue-12 target with the measured figure and met/missed (FCN32-VGG11)."""
    fcn32 = next((r for r in rows if r["model"] == "fcn32_vgg11" and not r["error"]), None)
    lines = []
    for what, key, target, spec in (("training MFU", "train_mfu", TARGET_TRAIN_MFU, ".1%"),
                                    ("predict images/s per pass", "predict_images_per_s",
                                     TARGET_PREDICT_RATE, ",.0f")):
        value = None if fcn32 is None else fcn32[key]
        verdict = "not measured" if value is None else (
            f"{value:{spec}}: {'met' if value >= target else 'missed'}")
        lines.append(f"target FCN32-VGG11 {what} >= {target:{spec}}: {verdict}")
    zoo = [r for r in rows if r["model"] != "fcn32_vgg11" and not r["error"]
           and r["train_mfu"] is not None]
    if zoo:
        met = [r["model"] for r in zoo if r["train_mfu"] >= TARGET_TRAIN_MFU]
        lines.append(f"target zoo training MFU >= {TARGET_TRAIN_MFU:.0%}: met by {len(met)} of "
                     f"{len(zoo)} ({', '.join(met) or 'none'})")
    return lines


def model_names(value: str) -> list[str]:
    """``all`` or comma-separated registry names, checked; the error lists the valid ones."""
    names = list(MODELS) if value == "all" else [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown model(s) {', '.join(unknown) or value!r}; "
                                         f"valid: all or any of {', '.join(MODELS)}")
    return names


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=model_names, default="all",
                        help=f"all (default) or a comma-separated subset of {', '.join(MODELS)}")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=1600)
    parser.add_argument("--batch", type=int, default=16, help="training batch")
    parser.add_argument("--predict-batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="timed steps of each benchmark")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps before timing")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="torch.compile each model (default: on for CUDA, off on the CPU)")
    parser.add_argument("--no-amp", dest="use_amp", action="store_false",
                        help="full precision instead of the AMP policy")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="peak dense TFLOP/s for MFU (default: from the GPU's name)")
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    args = parser.parse_args(argv)   # argparse passes the string default through type= too
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be >= 1 and --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    """Benchmark each model in turn, print a row per model as it goes, write JSON."""
    args = parse_args(argv)
    device = torch.device(args.device)
    args.compile = device.type == "cuda" if args.compile is None else args.compile
    args.amp = "auto" if args.use_amp else "none"
    args.dtype = amp_dtype(args.amp, device)
    torch.backends.cudnn.benchmark = True
    name, peak = assumed_peak(device, args.peak_tflops)
    dtype = str(args.dtype or torch.float32).removeprefix("torch.")
    results = {"device": name, "torch": torch.__version__, "dtype": dtype,
               "compile": args.compile, "channels_last": True, "height": args.height,
               "width": args.width, "batch": args.batch, "predict_batch": args.predict_batch,
               "steps": args.steps, "warmup": args.warmup, "peak_tflops": peak,
               "kernel_images": KAGGLE_TEST_IMAGES, "kernel_passes": KAGGLE_PASSES, "models": []}
    print(f"{name}, torch {torch.__version__}, {dtype}, compile {'on' if args.compile else 'off'}"
          f", channels_last, {args.height}x{args.width}, batch {args.batch} / predict "
          f"{args.predict_batch}; peak "
          f"{'unknown (pass --peak-tflops)' if peak is None else f'{peak:g} TFLOP/s'}; "
          f"kernel min: {KAGGLE_TEST_IMAGES:,} images x {KAGGLE_PASSES} passes "
          f"(! past {KAGGLE_LIMIT_MIN:.0f})", flush=True)
    print(" ".join(t.ljust(w) if i < 2 else t.rjust(w)
                   for i, (t, w) in enumerate(COLUMNS)), flush=True)
    start = time.perf_counter()
    for model in args.models:
        results["models"].append(safe_row(model, args, device, peak))
        print(format_row(results["models"][-1]), flush=True)
        if args.out:
            fileio.write_json(Path(args.out), results)
    print(f"{len(args.models)} models in {time.perf_counter() - start:,.0f} s (warm-up s: the "
          "untimed steps, torch.compile included)", flush=True)
    if device.type == "cuda":
        for line in target_lines(results["models"]):
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
