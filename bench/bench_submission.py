"""Building and validating a submission for the real 5,506-image sample file.

Predictions: a 200x30-pixel defect on about 20% of the (image, class) pairs, drawn with a fixed
seed. Prints the best of --rounds timings of ``submission.build`` and ``submission.validate``.

    python bench/bench_submission.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from pipeline.data import rle
from pipeline.inference import submission

SAMPLE = (Path(__file__).resolve().parent.parent / "tests" / "data" / "real-sample"
          / "sample_submission_full.csv")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sample = submission.read_sample(SAMPLE)
    mask = np.zeros((256, 1600), np.uint8)
    mask[10:40, 100:300] = 1
    encoded, rng = rle.encode(mask), np.random.default_rng(0)
    predictions = {i: [encoded if rng.random() < 0.2 else "" for _ in range(4)]
                   for i in sample.image_ids}
    build, validate = [], []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "submission.csv"
        for _ in range(args.rounds):
            start = time.perf_counter()
            table = submission.build(sample, predictions)
            build.append(time.perf_counter() - start)
            submission.write(table, out)
            start = time.perf_counter()
            submission.validate(out, sample)
            validate.append(time.perf_counter() - start)
    print(f"{len(sample.image_ids):,} images, {len(table):,} rows: build {min(build):.3f} s, "
          f"validate {min(validate):.3f} s (best of {args.rounds})")


if __name__ == "__main__":
    main()
