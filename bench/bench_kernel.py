"""Packed kernel: script size and start-up overhead before the first batch.

Builds the kernel, lays out a fake /kaggle/input (synthetic test images, a 5-fold weights
dataset staged as `make upload-weights` does, full-resolution models), runs the script in a clean
environment (another working directory, no repository on sys.path; for a zoo model, smp and
timm made unimportable, as on Kaggle, so the exported programs run) and reads the start-up time
it reports: from the script's first line to the first batch (bootstrap, imports, models loaded).

    python bench/bench_kernel.py [--folds 5] [--repeats 3] [--model unet]
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
from pipeline.config import RunPaths
from pipeline.kaggle import pack
from pipeline.kaggle.weights import stage_weights

# Kaggle's Python has torch but neither smp nor timm: make them unimportable in the kernel.
BLOCKER = """
import importlib.abc, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("segmentation_models_pytorch", "timm"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Block())
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="fcn32_vgg11")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        script = pack.build(root / "kernel", "me/severstal-kernel", None,
                            "me/severstal-weights", "bench")
        competition = root / "input" / "severstal-steel-defect-detection"
        synthetic.write_dataset(competition, n_train=1, n_test=4, seed=0, quiet=True)
        run = RunPaths(root / "run")
        for fold in range(args.folds):
            fake_checkpoint(run.fold_dir(fold) / "best.pt", 1.0, fold, args.model)
        PostProcess(min_area=600).save(run.postprocess_json)
        run.config_json.write_text("{}")
        weights = root / "input" / "weights"
        stage_weights(run, run.find_checkpoints(), "me/severstal-weights", "weights", weights)
        sizes = {p.suffix: 0 for p in weights.glob("fold*")}
        for path in weights.glob("fold*"):
            sizes[path.suffix] += path.stat().st_size
        (root / "working").mkdir()
        (root / "site").mkdir()
        (root / "site" / "sitecustomize.py").write_text(BLOCKER)
        env = {"PATH": os.environ["PATH"], "HOME": tmp, "KAGGLE_INPUT_ROOT": str(root / "input"),
               "KAGGLE_WORKING_ROOT": str(root / "working"), "PYTHONPATH": str(root / "site")}
        startups = []
        for _ in range(args.repeats):
            out = subprocess.run([sys.executable, str(script)], cwd=root / "working", env=env,
                                 capture_output=True, text=True, check=True).stdout
            startups.append(float(re.search(r"start-up ([\d.]+) s", out).group(1)))
        size = script.stat().st_size
        print(f"script {script.name}: {size:,} bytes ({size / 1024:.0f} KiB)")
        print(f"weights dataset, {args.model}: " + ", ".join(
            f"{n / 2 ** 20:.1f} MiB of {suffix} files" for suffix, n in sorted(sizes.items())))
        print(f"start-up before the first batch, {args.folds} {args.model} models: "
              + ", ".join(f"{s:.2f}" for s in startups) + f" s (best {min(startups):.2f} s)")


if __name__ == "__main__":
    main()
