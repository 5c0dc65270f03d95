"""RLE encode/decode speed: pipeline.rle against the common Kaggle-kernel numpy code.

Times every mask of the real sample (train.csv, rle_vectors.csv and the non-empty rows of
test_predictions_oldformat.csv) and the masks of a freshly generated synthetic dataset, side by
side in one run, and prints per-set medians and the median of the per-mask speed-ups.

    python bench/bench_rle.py [--repeats 7] [--n-synthetic 100]
"""

from __future__ import annotations

import argparse
import tempfile
import timeit
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.data import labels, rle, synthetic
from pipeline.config import HEIGHT, WIDTH

REAL = Path(__file__).resolve().parent.parent / "tests" / "data" / "real-sample"


def reference_decode(encoded: str) -> np.ndarray:
    """The common kernel decoder: split, then a slice assignment per run."""
    s = encoded.split()
    starts, lengths = [np.asarray(x, dtype=int) for x in (s[0::2], s[1::2])]
    starts -= 1
    ends = starts + lengths
    img = np.zeros(HEIGHT * WIDTH, dtype=np.uint8)
    for lo, hi in zip(starts, ends):
        img[lo:hi] = 1
    return img.reshape(WIDTH, HEIGHT).T


def reference_encode(mask: np.ndarray) -> str:
    """The common kernel encoder: np.where on the padded, flattened (column-major) mask."""
    pixels = mask.T.flatten()
    pixels = np.concatenate([[0], pixels, [0]])
    runs = np.where(pixels[1:] != pixels[:-1])[0] + 1
    runs[1::2] -= runs[::2]
    return " ".join(str(x) for x in runs)


def real_rles() -> list[str]:
    """Every non-empty RLE string of the real sample."""
    frames = [labels.read_labels(REAL / "train.csv"),
              pd.read_csv(REAL / "rle_vectors.csv", keep_default_na=False),
              labels.read_labels(REAL / "test_predictions_oldformat.csv")]
    strings = pd.concat([f["EncodedPixels"] for f in frames])
    return [s for s in strings if s]


def synthetic_rles(n_images: int) -> list[str]:
    """The non-empty RLE strings of a synthetic dataset of n_images training images."""
    with tempfile.TemporaryDirectory() as tmp:
        synthetic.write_dataset(Path(tmp), n_train=n_images, n_test=0, seed=0, quiet=True)
        return list(labels.read_labels(Path(tmp) / "train.csv")["EncodedPixels"])


def best_time(func, arg, repeats: int, number: int = 10) -> float:
    """Best-of-repeats seconds per call, each repeat timing ``number`` calls."""
    return min(timeit.repeat(lambda: func(arg), repeat=repeats, number=number)) / number


def measure(strings: list[str], repeats: int) -> pd.DataFrame:
    """Per-mask decode and encode times (microseconds) of both implementations."""
    rows = []
    for encoded in strings:
        mask = np.ascontiguousarray(rle.decode(encoded))
        assert reference_encode(mask) == rle.encode(mask) == encoded
        assert np.array_equal(reference_decode(encoded), mask)
        rows.append({
            "runs": encoded.count(" ") // 2 + 1,
            "ref_decode_us": 1e6 * best_time(reference_decode, encoded, repeats),
            "decode_us": 1e6 * best_time(rle.decode, encoded, repeats),
            "ref_encode_us": 1e6 * best_time(reference_encode, mask, repeats),
            "encode_us": 1e6 * best_time(rle.encode, mask, repeats),
        })
    return pd.DataFrame(rows)


def summarize(name: str, times: pd.DataFrame) -> dict:
    """Medians and the median per-mask speed-up of one set of masks."""
    return {
        "set": name, "masks": len(times), "median runs": int(times["runs"].median()),
        "decode ref us": times["ref_decode_us"].median(),
        "decode us": times["decode_us"].median(),
        "decode speed-up": (times["ref_decode_us"] / times["decode_us"]).median(),
        "encode ref us": times["ref_encode_us"].median(),
        "encode us": times["encode_us"].median(),
        "encode speed-up": (times["ref_encode_us"] / times["encode_us"]).median(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--n-synthetic", type=int, default=150,
                        help="synthetic training images whose masks are timed")
    parser.add_argument("--max-real", type=int, default=100,
                        help="at most this many real masks (evenly spaced)")
    args = parser.parse_args()
    real = real_rles()
    real = real[::max(1, len(real) // args.max_real)]
    sets = {"real sample": measure(real, args.repeats),
            "synthetic": measure(synthetic_rles(args.n_synthetic), args.repeats)}
    sets["all"] = pd.concat(sets.values())
    table = pd.DataFrame([summarize(name, times) for name, times in sets.items()])
    print(table.to_string(index=False, float_format=lambda v: f"{v:.1f}"))


if __name__ == "__main__":
    main()
