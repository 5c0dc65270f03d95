"""Predict throughput and memory on CPU.

1. The user's predict: ``python -m pipeline predict --compile`` as a user runs it, one process
   per run, timed on 8 and on 40 full-size images; the marginal images/s (start-up, loading and
   compiling cancel out) as a fraction of the fp32 matmul-bound limit measured in the same run,
   median of the rounds with the spread.
2. In this process, at 256x1600 (FCN32-VGG11): model-only forward (pre-decoded tensors, same
   batches) next to the end-to-end predict path (JPEG decode, ensemble, post-processing, RLE,
   CSV) in the same run, eager and with ``--compile`` (channels-last, frozen weights), each as
   a fraction of the machine's fp32 matmul-bound limit measured in the same run; the compile
   time is the first batch's.
3. ``--zoo``: each zoo model's compiled forward at 256x1600 with its FLOPs and an estimate of
   its memory traffic (every convolution's output written and read once, plus the weights),
   against the measured matmul rate and memory bandwidth: the limit that binds is the larger
   of FLOPs / rate and bytes / bandwidth.
4. Peak RSS of `predict` on 100 vs 1,000 test images and of `cv` on 200 vs 1,000 training images
   (separate processes, quarter resolution to keep it short: memory flatness does not depend
   on the input size).

The checkpoints are freshly initialised models (speed and memory do not depend on the
weights). glibc is asked to keep freed memory (``pipeline.inference.runtime``), as predict,
cv, robustness and the kernel themselves do.
Run: python bench/bench_predict.py [--images 32] [--rounds 3] [--zoo] [--skip-rss]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench_model_cpu import matmul_gflops
from pipeline import checkpoint, cli, distributed
from pipeline.config import HEIGHT, WIDTH
from pipeline.data import synthetic
from pipeline.data.dataset import SteelDataset, Transform
from pipeline.inference import postprocess, predict, submission
from pipeline.inference.config import InferenceConfig
from pipeline.inference.runtime import keep_freed_memory
from pipeline.models import forward
from pipeline.models.registry import MODELS, build_model, forward_flops, model_info
from pipeline.training.config import TrainConfig


def fake_checkpoint(path: Path, scale: float, fold: int = 0,
                    model_name: str = "fcn32_vgg11") -> None:
    """A checkpoint of a freshly initialised model for inputs at ``scale``."""
    torch.manual_seed(fold)
    model = build_model(model_name, encoder_weights="none", background_prior=0.99,
                        input_scale=scale)
    cfg = TrainConfig(model=model_name, encoder_weights="none", scale=scale)
    checkpoint.save(path, {"model": model.state_dict(),
                           "model_info": model_info(model).as_dict(),
                           "config": cfg.as_dict(), "epoch": 0, "fold": fold, "metrics": {}})


def throughput(root: Path, n_images: int, batch_size: int, workers: int, rounds: int,
               compile_models: bool) -> dict:
    """Model-only vs end-to-end images/s at 256x1600 on the same images in this process,
    median of rounds."""
    if not (root / "data").is_dir():
        synthetic.write_dataset(root / "data", n_train=1, n_test=n_images, seed=0, quiet=True)
    ckpt = root / "run" / "checkpoints" / "fold0" / "best.pt"
    if not ckpt.is_file():
        fake_checkpoint(ckpt, scale=1.0)
    device = torch.device("cpu")
    ensemble = predict.load_models([ckpt], device, InferenceConfig(compile=compile_models))
    sample = submission.read_sample(root / "data" / "sample_submission.csv")
    dataset = SteelDataset(root / "data" / "test_images", sample.image_ids, None,
                           Transform(), full_masks=True)
    images = torch.stack([dataset[i]["image"] for i in range(len(dataset))]).float().div_(255)
    params = postprocess.PostProcess(threshold=0.5, min_area=600)
    runner = ensemble.runners[0]

    def model_only() -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            for i in range(0, len(images), batch_size):
                runner(images[i:i + batch_size].contiguous(memory_format=torch.channels_last))
        return time.perf_counter() - start

    def end_to_end() -> float:
        start = time.perf_counter()
        rles = predict.predict_rles(ensemble, root / "data" / "test_images",
                                    sample.image_ids, params, distributed.Context(),
                                    InferenceConfig(batch_size=batch_size, workers=workers,
                                                    quiet=True))
        submission.write(submission.build(sample, rles), root / "submission.csv")
        return time.perf_counter() - start

    start = time.perf_counter()
    with torch.inference_mode():
        runner(images[:batch_size].contiguous(memory_format=torch.channels_last))
    first_batch = time.perf_counter() - start
    pairs = [(model_only(), end_to_end()) for _ in range(rounds)]
    mid_model, mid_e2e = (sorted(p[i] for p in pairs)[len(pairs) // 2] for i in (0, 1))
    return {"images": n_images, "batch": batch_size, "workers": workers, "rounds": rounds,
            "compiled": compile_models, "first_batch_s": first_batch,
            "model_only_img_s": n_images / mid_model, "end_to_end_img_s": n_images / mid_e2e,
            "model_only_spread": [n_images / max(p[0] for p in pairs),
                                  n_images / min(p[0] for p in pairs)],
            "overhead_pct": 100 * (mid_e2e / mid_model - 1),
            "overhead_pct_per_round": [100 * (e / m - 1) for m, e in pairs]}


def user_predict(root: Path, sizes: tuple[int, int], rounds: int, compiled: bool) -> dict:
    """Marginal images/s of ``python -m pipeline predict`` as a user runs it: one process per
    run, on ``sizes[0]`` and ``sizes[1]`` full-size test images (start-up, model loading and
    compiling cancel out in the difference); each round is one pair, median and spread."""
    for n in sizes:
        if not (root / f"user{n}" / "test_images").is_dir():
            synthetic.write_dataset(root / f"user{n}", n_train=1, n_test=n, seed=3, quiet=True,
                                    workers=1)
    ckpt = root / "run" / "checkpoints" / "fold0" / "best.pt"
    if not ckpt.is_file():
        fake_checkpoint(ckpt, scale=1.0)

    def seconds(n: int) -> float:
        argv = [sys.executable, "-m", "pipeline", "predict", "--data-dir", str(root / f"user{n}"),
                "--run-dir", str(root / "run"), "--out", str(root / f"user{n}.csv"),
                "--threshold", "0.5", "--quiet", *(["--compile"] if compiled else [])]
        start = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)
        return time.perf_counter() - start

    pairs = [(seconds(sizes[0]), seconds(sizes[1])) for _ in range(rounds)]
    rates = sorted((sizes[1] - sizes[0]) / (big - small) for small, big in pairs)
    return {"sizes": list(sizes), "rounds": rounds, "compiled": compiled,
            "seconds": [list(p) for p in pairs], "marginal_img_s": rates,
            "median_img_s": rates[len(rates) // 2], "min_img_s": rates[0],
            "max_img_s": rates[-1]}


def user_line(result: dict, gflop: float, peak: float) -> str:
    """One line of the user's predict: median marginal images/s and spread, as a fraction of
    the limit."""
    fraction = [r * gflop / peak for r in (result["median_img_s"], result["min_img_s"],
                                           result["max_img_s"])]
    kind = "--compile" if result["compiled"] else "eager"
    return (f"python -m pipeline predict {kind}: {result['median_img_s']:.3f} images/s marginal "
            f"({result['sizes'][0]} -> {result['sizes'][1]} images, median of "
            f"{result['rounds']} pairs, spread {result['min_img_s']:.3f}-"
            f"{result['max_img_s']:.3f}) = {fraction[0]:.2f} of the limit "
            f"({fraction[1]:.2f}-{fraction[2]:.2f})")


def break_even(eager: dict, compiled: dict) -> dict:
    """What compiling costs (the first batch's extra seconds), what it saves (seconds per image
    end to end) and the images after which it has paid for itself (None: it never does)."""
    extra = compiled["first_batch_s"] - eager["first_batch_s"]
    saved = 1 / eager["end_to_end_img_s"] - 1 / compiled["end_to_end_img_s"]
    return {"extra_s": extra, "saved_s_per_image": saved,
            "images": extra / saved if saved > 0 else None}


def break_even_line(trade: dict) -> str:
    images = trade["images"]
    pays = f"pays back after {images:.0f} images" if images is not None else "never pays back"
    return (f"compile: +{trade['extra_s']:.1f} s on the first batch, "
            f"{1e3 * trade['saved_s_per_image']:+.0f} ms per image end to end: {pays} per "
            "model pass")


def memory_bandwidth(repeats: int = 5, mib: int = 512) -> float:
    """Best GB/s of copying a ``mib`` MiB float tensor (read + write counted)."""
    source = torch.rand(mib * 2**20 // 4)
    target = torch.empty_like(source)
    best = float("inf")
    for _ in range(repeats + 1):
        start = time.perf_counter()
        target.copy_(source)
        best = min(best, time.perf_counter() - start)
    return 2 * source.numel() * 4 / best / 1e9


def traffic_bytes(model: torch.nn.Module, height: int, width: int) -> int:
    """Estimated bytes a forward moves: each convolution's output written and read once, plus
    the weights read once (counted on the meta device)."""
    total = [sum(p.numel() * 4 for p in model.parameters())]

    def hook(_module, _inputs, output) -> None:
        total[0] += 2 * output.numel() * 4

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, torch.nn.Conv2d)]
    with torch.device("meta"):
        model.to("meta").eval()(torch.empty(1, 3, height, width))
    for handle in handles:
        handle.remove()
    return total[0]


def zoo_rates(batch: int, repeats: int, peak_gflops: float, bandwidth: float) -> list[dict]:
    """Compiled forward images/s of every zoo model at 256x1600 and the limit that binds."""
    rows = []
    for name in MODELS:
        if name == "fcn32_vgg11":
            continue
        torch.manual_seed(0)
        model = build_model(name, background_prior=0.99).eval()
        model = model.to(memory_format=torch.channels_last)
        runner = forward.compile_for_inference(model)
        images = torch.rand(batch, 3, HEIGHT, WIDTH).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            start = time.perf_counter()
            runner(images)
            compile_s = time.perf_counter() - start
            best = float("inf")
            for _ in range(repeats):
                start = time.perf_counter()
                runner(images)
                best = min(best, time.perf_counter() - start)
        rate = batch / best
        flops = forward_flops(HEIGHT, WIDTH, name)
        traffic = traffic_bytes(build_model(name), HEIGHT, WIDTH)
        flop_s, memory_s = flops / (peak_gflops * 1e9), traffic / (bandwidth * 1e9)
        binds = "memory" if memory_s > flop_s else "compute"
        rows.append({"model": name, "images_per_s": rate, "gflop": flops / 1e9,
                     "traffic_gb": traffic / 1e9, "binds": binds, "compile_s": compile_s,
                     "fraction_of_limit": max(flop_s, memory_s) * rate})
        torch._dynamo.reset()
    return rows


def child_peak_rss(code: str) -> float:
    """Peak RSS (MiB) of a fresh Python process running ``code``.

    Read from VmHWM in /proc: ru_maxrss would carry over the parent's peak through fork.
    """
    wrapped = code + ("\nimport re; print('RSS', int(re.search(r'VmHWM:\\s+(\\d+)', "
                      "open('/proc/self/status').read()).group(1)) / 1024)")
    out = subprocess.run([sys.executable, "-c", wrapped], capture_output=True, text=True,
                         check=True).stdout
    return float(out.split("RSS")[-1])


def memory(root: Path, sizes_predict=(100, 1000), sizes_cv=(200, 1000)) -> dict:
    """Peak RSS of predict and cv in fresh processes at two dataset sizes each."""
    out = {}
    for n in sizes_predict:
        base = root / f"predict{n}"
        synthetic.write_dataset(base / "data", n_train=1, n_test=n, seed=1, quiet=True)
        fake_checkpoint(base / "run" / "checkpoints" / "fold0" / "best.pt", scale=0.25)
        out[f"predict_{n}_mib"] = child_peak_rss(
            f"from pipeline import cli; cli.main(['predict', '--data-dir', '{base}/data', "
            f"'--run-dir', '{base}/run', '--out', '{base}/s.csv', '--workers', '0', "
            "'--quiet', '--threshold', '0.5'])")
    for n in sizes_cv:
        base = root / f"cv{n}"
        synthetic.write_dataset(base / "data", n_train=n, n_test=0, seed=2, quiet=True)
        cli.main(["folds", "--data-dir", str(base / "data"), "--run-dir", str(base / "run"),
                  "--n-folds", "2"])
        for fold in (0, 1):
            fake_checkpoint(base / "run" / "checkpoints" / f"fold{fold}" / "best.pt", 0.25, fold)
        out[f"cv_{n}_mib"] = child_peak_rss(
            "from pipeline.inference import oof; from pipeline.inference.config import "
            f"InferenceConfig; oof.run_cv('{base}/run', '{base}/data', "
            "InferenceConfig(workers=0, quiet=True))")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32, help="test images at 256x1600")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=0,
                        help="loader workers of the end-to-end path (default 0: on 2 cores a "
                        "worker takes compute from the model)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds (alternating model-only / end-to-end pairs, and user "
                             "predict pairs); the median of each, with the spread")
    parser.add_argument("--no-eager", action="store_true", help="compiled rows only")
    parser.add_argument("--zoo", action="store_true", help="also every zoo model's forward")
    parser.add_argument("--zoo-only", action="store_true", help="the zoo rows alone")
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--user-sizes", default="8,40",
                        help="images of the two predict runs whose difference is timed")
    parser.add_argument("--skip-user", action="store_true",
                        help="skip timing `python -m pipeline predict` itself")
    args = parser.parse_args()
    args.zoo = args.zoo or args.zoo_only
    if args.images % args.batch_size:
        parser.error("--images must be a multiple of --batch-size (one input shape)")
    tuned = keep_freed_memory()
    gflop = forward_flops(HEIGHT, WIDTH) / 1e9
    peak_start = matmul_gflops(3)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for compiled in [] if args.zoo_only else ([] if args.no_eager else [False]) + [True]:
            key = "compiled" if compiled else "eager"
            results[key] = throughput(Path(tmp), args.images, args.batch_size, args.workers,
                                      args.rounds, compiled)
        if not (args.zoo_only or args.skip_user):
            sizes = tuple(int(v) for v in args.user_sizes.split(","))
            results["user_compiled"] = user_predict(Path(tmp), sizes, args.rounds, True)
        peak = max(peak_start, matmul_gflops(3))   # a busy neighbour lowers it, never raises
        print(f"threads {torch.get_num_threads()}, batch {args.batch_size}, {args.images} "
              f"images at 256x1600, {args.workers} loader workers, malloc "
              f"{'keeps freed memory' if tuned else 'default'}")
        print(f"fp32 matmul {peak:.0f} GFLOP/s; FCN32-VGG11 {gflop:.1f} GFLOP per image: limit "
              f"{peak / gflop:.2f} images/s")
        for key, result in [(k, results[k]) for k in ('eager', 'compiled') if k in results]:
            model, e2e = result["model_only_img_s"], result["end_to_end_img_s"]
            print(f"{key:9} model-only {model:.3f} images/s ({model * gflop / peak:.2f} of the "
                  f"limit); end-to-end {e2e:.3f} images/s ({e2e * gflop / peak:.2f}), overhead "
                  f"{result['overhead_pct']:+.1f}% median vs median (rounds "
                  + ", ".join(f"{v:+.1f}%" for v in result["overhead_pct_per_round"])
                  + f"); first batch {result['first_batch_s']:.1f} s")
            result["fraction_of_limit"] = model * gflop / peak
        if "user_compiled" in results:
            print(user_line(results["user_compiled"], gflop, peak))
        if "eager" in results and "compiled" in results:
            results["compile_trade"] = break_even(results["eager"], results["compiled"])
            print(break_even_line(results["compile_trade"]))
        results["matmul_gflops"], results["gflop_per_image"] = peak, gflop
        if args.zoo:
            bandwidth = memory_bandwidth()
            results["bandwidth_gb_s"] = bandwidth
            results["zoo"] = zoo_rates(2, args.rounds, peak, bandwidth)
            print(f"memory bandwidth (copy) {bandwidth:.1f} GB/s; zoo, compiled, batch 2")
            for row in results["zoo"]:
                print(f"  {row['model']:10} {row['images_per_s']:6.2f} images/s  "
                      f"{row['gflop']:5.1f} GFLOP  {row['traffic_gb']:5.2f} GB  "
                      f"{row['binds']}-bound, {row['fraction_of_limit']:.2f} of that limit "
                      f"(compile {row['compile_s']:.0f} s)")
        if not args.skip_rss:
            results.update(memory(Path(tmp)))
            for key, value in results.items():
                if key.endswith("_mib"):
                    print(f"peak RSS {key[:-4]:<14} {value:8.0f} MiB")
        print(json.dumps(results))


if __name__ == "__main__":
    main()
