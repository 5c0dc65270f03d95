"""Scaled JPEG decode against decode-then-resize: speed and how close the pixels are.

At each input scale (1/2, 1/4, 1/8) the training and evaluation loaders read an image with
``images.read_image(path, reduce=r)`` (libjpeg's DCT scaling) and resize the rest of the way
with area interpolation; the old path decoded the full 256x1600 image and resized it. Both
run here on the same files, one after the other per image (so drift in the machine's speed
hits both alike), single-threaded OpenCV as in a loader worker: the median time per image,
the speed-up, and the mean and largest per-pixel difference in 0..255.

Images: the real competition sample (tests/data/real-sample) and a freshly generated synthetic
set. Scores on the same checkpoints with either decode: `python -m pipeline cv ... --decode
full` against the default (see the README).

    python bench/bench_decode.py [--repeats 20] [--n-synthetic 20]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from pipeline.data import images, synthetic

REAL = Path(__file__).resolve().parent.parent / "tests" / "data" / "real-sample"
SCALES = (0.5, 0.25, 0.125)


def timed(function, repeats: int) -> float:
    """Median seconds of ``function()`` over ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def compare(paths: list[Path], scale: float, repeats: int) -> dict:
    """Per-image medians of both paths at ``scale`` and the pixel differences."""
    size = (round(images.HEIGHT * scale), round(images.WIDTH * scale))
    reduce = images.reduction_for(scale)
    full_s, scaled_s, diffs, largest = [], [], [], 0
    for path in paths:
        def full():
            return images.resize(images.read_image(path), size)

        def scaled():
            return images.resize(images.read_image(path, reduce=reduce), size)

        full_s.append(timed(full, repeats))
        scaled_s.append(timed(scaled, repeats))
        delta = np.abs(full().astype(np.int16) - scaled().astype(np.int16))
        diffs.append(float(delta.mean()))
        largest = max(largest, int(delta.max()))
    return {"scale": scale, "reduce": reduce, "full_ms": 1e3 * statistics.median(full_s),
            "scaled_ms": 1e3 * statistics.median(scaled_s),
            "speedup": statistics.median(f / s for f, s in zip(full_s, scaled_s)),
            "mean_diff": statistics.mean(diffs), "max_diff": largest}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per image and path")
    parser.add_argument("--n-synthetic", type=int, default=20, help="synthetic images (0: none)")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.n_synthetic < 0:
        parser.error("--repeats must be >= 1 and --n-synthetic >= 0")
    cv2.setNumThreads(1)
    sets = {"real": sorted(REAL.glob("*_images/*.jpg"))}
    with tempfile.TemporaryDirectory() as tmp:
        if args.n_synthetic:
            synthetic.write_dataset(Path(tmp), n_train=args.n_synthetic, n_test=0, quiet=True,
                                    workers=1)
            sets["synthetic"] = sorted((Path(tmp) / "train_images").glob("*.jpg"))
        print(f"{'images':10}{'n':>4}{'scale':>7}{'decode':>8}{'full ms':>9}{'scaled ms':>11}"
              f"{'speed-up':>10}{'mean |diff|':>13}{'max |diff|':>12}")
        for name, paths in sets.items():
            if not paths:
                raise SystemExit(f"no images for the {name} set")
            for scale in SCALES:
                r = compare(paths, scale, args.repeats)
                print(f"{name:10}{len(paths):>4}{'1/%d' % round(1 / scale):>7}"
                      f"{'1/%d' % r['reduce']:>8}{r['full_ms']:>9.2f}{r['scaled_ms']:>11.2f}"
                      f"{r['speedup']:>9.1f}x{r['mean_diff']:>13.3f}{r['max_diff']:>12d}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
