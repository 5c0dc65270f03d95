"""Masks <-> the competition's run-length encoding.

Convention: a string of space-separated ``start length`` pairs; starts are 1-indexed and count
pixels top to bottom, then left to right (column-major / Fortran order of the (H, W) mask);
pairs are sorted, positive and do not overlap; a run may continue into the next column.
An empty string (or NaN / None) is the empty mask.
"""

from __future__ import annotations

import math
import cv2
import numpy as np

from pipeline.config import HEIGHT, WIDTH


def is_empty(rle: object) -> bool:
    """True for the encodings of an empty mask: None, NaN, '' or whitespace."""
    if rle is None:
        return True
    if isinstance(rle, float):
        return math.isnan(rle)
    return isinstance(rle, str) and not rle.strip()


def parse(rle: str, shape: tuple[int, int] = (HEIGHT, WIDTH)) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(starts, lengths)`` int64 arrays of an RLE string; starts stay 1-indexed.

    Raises ValueError naming the problem: odd count, non-integer, start < 1, length < 1,
    a run past the end of the mask, unsorted or overlapping runs.
    """
    return _runs(rle, shape)[:2]


def _runs(rle: str, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``parse`` plus the gaps between consecutive runs (shared with ``decode``)."""
    text = rle.strip()
    if text.encode("ascii", "replace").translate(None, b"0123456789 \t"):
        bad = next(tok for tok in text.split() if not (tok.isascii() and tok.isdigit()))
        raise ValueError(f"RLE holds {bad!r}, not a non-negative integer: "
                         "expected space-separated 'start length' pairs")
    values = np.fromstring(text, dtype=np.int64, sep=" ")
    if values.size % 2:
        raise ValueError(f"RLE has an odd number of values ({values.size}): "
                         "expected 'start length' pairs")
    starts, lengths = values[0::2], values[1::2]
    ends = starts + lengths  # one past the last pixel, 1-indexed
    gaps = starts[1:] - ends[:-1]
    n_pixels = shape[0] * shape[1]
    # One cheap test for the valid case; the slow path below says what is wrong.
    if values.min() < 1 or (gaps.size and gaps.min() < 0) or ends[-1] - 1 > n_pixels:
        _raise_invalid(starts, lengths, ends, gaps, shape)
    return starts, lengths, gaps


def _raise_invalid(starts: np.ndarray, lengths: np.ndarray, ends: np.ndarray,
                   gaps: np.ndarray, shape: tuple[int, int]) -> None:
    """Raise the ValueError describing the first problem of parsed runs."""
    if starts.min() < 1:
        raise ValueError("RLE start 0 found: starts are 1-indexed (add 1 to 0-indexed starts)")
    if lengths.min() < 1:
        at = int(starts[np.argmax(lengths < 1)])
        raise ValueError(f"RLE run at start {at} has length 0: lengths must be >= 1")
    if gaps.size and gaps.min() < 0:
        i = int(np.argmax(gaps < 0))
        kind = "unsorted" if starts[i + 1] < starts[i] else "overlapping"
        raise ValueError(f"RLE runs are {kind}: start {int(starts[i + 1])} follows the run "
                         f"{int(starts[i])}+{int(lengths[i])}; runs must be sorted and disjoint")
    n_pixels = shape[0] * shape[1]
    at = int(starts[np.argmax(ends - 1 > n_pixels)])
    raise ValueError(f"RLE run at start {at} ends past pixel {n_pixels} "
                     f"of a {shape[0]}x{shape[1]} mask")


def decode(rle: object, shape: tuple[int, int] = (HEIGHT, WIDTH)) -> np.ndarray:
    """The ``(H, W)`` uint8 mask (0/1) of an RLE string; empty/NaN/None gives all zeros.

    The result is a transposed view of a column-major buffer (Fortran-contiguous).
    """
    height, width = shape
    if is_empty(rle):
        return np.zeros((width, height), dtype=np.uint8).T
    if not isinstance(rle, str):
        raise ValueError(f"RLE must be a string, got {type(rle).__name__}")
    starts, lengths, gaps = _runs(rle, shape)
    # The mask alternates gaps of zeros and runs of ones: one np.repeat writes all of it.
    counts = np.empty(2 * starts.size + 1, dtype=np.int64)
    counts[0] = starts[0] - 1
    counts[1::2] = lengths
    counts[2:-1:2] = gaps
    counts[-1] = height * width + 1 - starts[-1] - lengths[-1]
    values = np.arange(counts.size, dtype=np.uint8) & 1
    return np.repeat(values, counts).reshape(width, height).T


def encode(mask: np.ndarray) -> str:
    """The RLE string of an ``(H, W)`` mask (nonzero = defect); '' for an empty mask."""
    if mask.ndim != 2:
        raise ValueError(f"encode expects an (H, W) mask, got shape {mask.shape}")
    if mask.dtype != np.uint8:
        mask = (mask != 0).view(np.uint8)
    height = mask.shape[0]
    column_max = mask.max(axis=0)
    columns = np.flatnonzero(column_max)
    if columns.size == 0:
        return ""
    if column_max[columns].max() > 1:
        mask = (mask != 0).view(np.uint8)
    first, last = int(columns[0]), int(columns[-1]) + 1
    # Only the columns from the first to the last defect column are transposed (OpenCV's
    # blocked transpose); the columns around them are empty.
    pixels = cv2.transpose(mask[:, first:last]).reshape(-1)
    changes = np.flatnonzero(pixels[1:] != pixels[:-1])
    changes += 1
    if pixels[0] or pixels[-1]:
        changes = np.concatenate([[0] if pixels[0] else [], changes,
                                  [pixels.size] if pixels[-1] else []]).astype(np.int64)
    changes += first * height
    changes[1::2] -= changes[0::2]
    changes[0::2] += 1
    return ("%d " * changes.size % tuple(changes.tolist()))[:-1]


def area(rle: object) -> int:
    """Number of pixels of an RLE string without decoding it."""
    if is_empty(rle):
        return 0
    return int(parse(rle)[1].sum())
