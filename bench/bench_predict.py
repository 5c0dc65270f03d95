"""Predict throughput and memory on CPU.

1. Throughput at 256x1600: model-only forward (pre-decoded tensors, same batches) next to the
   end-to-end predict path (JPEG decode, ensemble, post-processing, RLE, CSV) in the same run.
2. Peak RSS of `predict` on 100 vs 1,000 test images and of `cv` on 200 vs 1,000 training images
   (separate processes, quarter resolution to keep it short: memory flatness does not depend
   on the input size).

The checkpoints are freshly initialised FCN32-VGG11 models (speed and memory do not depend on
the weights). Run: python bench/bench_predict.py [--images 32] [--rounds 3] [--skip-rss]
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

from pipeline import checkpoint, cli, distributed
from pipeline.config import TrainConfig
from pipeline.data import synthetic
from pipeline.data.dataset import SteelDataset, Transform
from pipeline.inference import postprocess, predict, submission
from pipeline.models.registry import build_model, model_info


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


def throughput(root: Path, n_images: int, batch_size: int, workers: int, rounds: int) -> dict:
    """Model-only vs end-to-end images/s at 256x1600 on the same images, best of rounds."""
    synthetic.write_dataset(root / "data", n_train=1, n_test=n_images, seed=0, quiet=True)
    ckpt = root / "run" / "checkpoints" / "fold0" / "best.pt"
    fake_checkpoint(ckpt, scale=1.0)
    device = torch.device("cpu")
    ensemble = predict.load_models([ckpt], device)
    sample = submission.read_sample(root / "data" / "sample_submission.csv")
    dataset = SteelDataset(root / "data" / "test_images", sample.image_ids, None,
                           Transform(), full_masks=True)
    images = torch.stack([dataset[i]["image"] for i in range(len(dataset))]).float().div_(255)
    params = postprocess.PostProcess(threshold=0.5, min_area=600)

    def model_only() -> float:
        start = time.perf_counter()
        model = ensemble.models[0]
        with torch.inference_mode():
            for i in range(0, len(images), batch_size):
                model(images[i:i + batch_size].contiguous(memory_format=torch.channels_last))
        return time.perf_counter() - start

    def end_to_end() -> float:
        start = time.perf_counter()
        rles = predict.predict_rles(ensemble, root / "data" / "test_images",
                                    sample.image_ids, params, distributed.Context(),
                                    batch_size=batch_size, workers=workers, quiet=True)
        submission.write(submission.build(sample, rles), root / "submission.csv")
        return time.perf_counter() - start

    model_only()  # warm-up
    pairs = [(model_only(), end_to_end()) for _ in range(rounds)]
    best_model, best_e2e = min(p[0] for p in pairs), min(p[1] for p in pairs)
    return {"images": n_images, "batch": batch_size, "workers": workers, "rounds": rounds,
            "model_only_img_s": n_images / best_model, "end_to_end_img_s": n_images / best_e2e,
            "overhead_pct": 100 * (best_e2e / best_model - 1),
            "overhead_pct_per_round": [100 * (e / m - 1) for m, e in pairs]}


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
            f"from pipeline.inference import oof; oof.run_cv('{base}/run', '{base}/data', "
            "workers=0, quiet=True)")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32, help="test images at 256x1600")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating model-only / end-to-end rounds; best of each")
    parser.add_argument("--skip-rss", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = throughput(Path(tmp), args.images, args.batch_size, args.workers,
                            args.rounds)
        print(f"threads {torch.get_num_threads()}, batch {args.batch_size}, "
              f"{args.images} images at 256x1600")
        print(f"model-only forward   {result['model_only_img_s']:.3f} images/s")
        print(f"end-to-end predict   {result['end_to_end_img_s']:.3f} images/s "
              f"(overhead {result['overhead_pct']:+.1f}% best vs best; per round "
              + ", ".join(f"{v:+.1f}%" for v in result["overhead_pct_per_round"]) + ")")
        if not args.skip_rss:
            result.update(memory(Path(tmp)))
            for key, value in result.items():
                if key.endswith("_mib"):
                    print(f"peak RSS {key[:-4]:<14} {value:8.0f} MiB")
        print(json.dumps(result))


if __name__ == "__main__":
    main()
