"""Packed kernel: script size and start-up overhead before the first batch.

Builds the kernel, lays out a fake /kaggle/input (synthetic test images, a 5-fold weights
dataset of full-resolution FCN32-VGG11 checkpoints), runs the script in a clean environment
(another working directory, no repository on sys.path) and reads the start-up time it reports:
from the script's first line to the first batch (bootstrap, imports, models loaded).

    python bench/bench_kernel.py [--folds 5] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_predict import fake_checkpoint

from pipeline.data import synthetic
from pipeline.inference.postprocess import PostProcess
from pipeline.kaggle import pack


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        script = pack.build(root / "kernel", "me/severstal", "Severstal kernel",
                            "me/severstal-weights", "bench")
        competition = root / "input" / "severstal-steel-defect-detection"
        synthetic.write_dataset(competition, n_train=1, n_test=4, seed=0, quiet=True)
        weights = root / "input" / "weights"
        for fold in range(args.folds):
            fake_checkpoint(weights / f"fold{fold}.pt", scale=1.0, fold=fold)
        PostProcess(min_area=600).save(weights / "postprocess.json")
        (root / "working").mkdir()
        env = {"PATH": os.environ["PATH"], "HOME": tmp, "KAGGLE_INPUT_ROOT": str(root / "input"),
               "KAGGLE_WORKING_ROOT": str(root / "working")}
        startups = []
        for _ in range(args.repeats):
            out = subprocess.run([sys.executable, str(script)], cwd=root / "working", env=env,
                                 capture_output=True, text=True, check=True).stdout
            startups.append(float(re.search(r"start-up ([\d.]+) s", out).group(1)))
        size = script.stat().st_size
        print(f"script {script.name}: {size:,} bytes ({size / 1024:.0f} KiB)")
        print(f"start-up before the first batch, {args.folds} checkpoints: "
              + ", ".join(f"{s:.2f}" for s in startups) + f" s (best {min(startups):.2f} s)")


if __name__ == "__main__":
    main()
