"""Deterministic synthetic steel-strip dataset in the exact Severstal competition layout.

Every image is drawn from its own ``np.random.default_rng([seed, index, split])``, so the
output is byte-for-byte the same for a seed, whatever the number of worker processes.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from functools import partial
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from pipeline import fileio
from pipeline.data import pidlock, realistic, realistic_look
from pipeline.config import HEIGHT, N_CLASSES, WIDTH
from pipeline.data.render import CLASS_MIXES, layout_masks, render_image, sample_layout
from pipeline.data.rle import encode
from pipeline.data.world import DEFAULT_WORLD, WORLDS, apply_look, jpeg_quality, touch_borders

TRAIN, TEST = 0, 1
LOCK_NAME = ".synth.lock"   # in out_dir while a run writes there: two runs would mix datasets


def _write_csv(path: Path, header: str, lines: list[str]) -> None:
    """Atomically write a CSV: the header, then the lines sorted (ImageId, then ClassId)."""
    fileio.write_bytes(path, "".join(f"{line}\n" for line in [header, *sorted(lines)]).encode())


def _image_ids(seed: int, split: int, n: int, taken: set[str]) -> list[str]:
    """n unique ids (9 hex digits + '.jpg') drawn from the seed, none of them in taken."""
    rng, ids, seen = np.random.default_rng([seed, split, 0x1D]), [], set(taken)
    while len(ids) < n:
        for name in (f"{int(v):09x}.jpg" for v in rng.integers(0, 16 ** 9, size=n - len(ids))):
            if name not in seen:
                seen.add(name)
                ids.append(name)
    return ids


def _make_image(job: tuple) -> list[str]:
    """Worker: render one image, write its JPEG atomically, return its four RLE strings."""
    path, seed, index, split, contrast, class_weights, world = job
    rng = np.random.default_rng([seed, index, split])
    if world.sheet is not None:
        layout = realistic.sample_layout(rng, class_weights)
        gray = realistic_look.render_image(layout, rng, contrast, world.sheet)
    else:
        layout = touch_borders(sample_layout(rng, class_weights, world.p_dark_edge), rng, world)
        look = None if world.look is None else partial(apply_look, look=world.look)
        gray = render_image(layout, rng, contrast, look)
    ok, jpeg = cv2.imencode(".jpg", cv2.merge([gray, gray, gray]),
                            [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality(rng, world)])
    if not ok:
        raise RuntimeError(f"JPEG encoding failed for {path}")
    fileio.write_bytes(Path(path), jpeg.tobytes())
    return [encode(mask) for mask in layout_masks(layout)]


def _init_worker() -> None:
    """Pool worker set-up: one OpenCV thread; Ctrl-C left to the parent, which stops the pool
    (the process group gets the SIGINT, and each worker would print its own traceback)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cv2.setNumThreads(1)


def _run_jobs(jobs: list[tuple], workers: int, quiet: bool) -> list[list[str]]:
    """_make_image over the jobs, in job order, in a process pool when workers > 1.

    The pool starts its processes fresh ("forkserver", else "spawn"), so a script that calls
    write_dataset with workers > 1 needs the usual ``if __name__ == "__main__":`` guard. On
    Ctrl-C the parent's KeyboardInterrupt leaves the ``with`` block, which terminates the pool.
    """
    bar = {"total": len(jobs), "desc": "synthetic images", "unit": "img", "disable": quiet or None}
    if workers <= 1:
        return list(tqdm(map(_make_image, jobs), **bar))
    chunk = max(1, min(16, len(jobs) // (4 * workers)))
    # Not "fork": a child forked while the parent's OpenCV thread pool is busy can deadlock.
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    with context.Pool(workers, initializer=_init_worker) as pool:
        return list(tqdm(pool.imap(_make_image, jobs, chunksize=chunk), **bar))


def _check_args(n_train: int, n_test: int, seed: int, workers: int | None) -> None:
    """Raise ValueError, naming the argument and the fix, for any bad argument."""
    def bad(value: object, least: int) -> bool:
        is_int = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
        return not is_int or value < least
    if bad(n_train, 1):
        raise ValueError(f"n_train must be an integer >= 1, got {n_train!r}: ask for 1+ images")
    if bad(n_test, 0):
        raise ValueError(f"n_test must be an integer >= 0, got {n_test!r}: 0 means no test set")
    if bad(seed, 0):
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if workers is not None and bad(workers, 1):
        raise ValueError(f"workers must be an integer >= 1 or None (all CPUs), got {workers!r}")


def _write_labels(out_dir: Path, train: dict, test: dict, old_format: bool) -> None:
    """train.csv, sample_submission.csv (current or original format) and test_truth.csv."""
    def rows(labels: dict) -> list[str]:
        return [f"{name},{c},{rle}" for name, rles in labels.items()
                for c, rle in enumerate(rles, 1) if rle]
    old = "ImageId_ClassId,EncodedPixels"
    if old_format:
        _write_csv(out_dir / "train.csv", old, [f"{name}_{c},{rle}" for name, rles in train.items()
                                                for c, rle in enumerate(rles, 1)])
        _write_csv(out_dir / "sample_submission.csv", old,
                   [f"{name}_{c},1 1" for name in test for c in range(1, N_CLASSES + 1)])
    else:
        _write_csv(out_dir / "train.csv", "ImageId,ClassId,EncodedPixels", rows(train))
        _write_csv(out_dir / "sample_submission.csv", "ImageId,EncodedPixels,ClassId",
                   [f"{name},1 {HEIGHT * WIDTH},0" for name in test])
    _write_csv(out_dir / "test_truth.csv", "ImageId,ClassId,EncodedPixels", rows(test))


def write_dataset(out_dir: Path, n_train: int, n_test: int, seed: int = 0,
                  old_format: bool = False, quiet: bool = False, workers: int | None = None,
                  *, contrast: float = 1.0, class_mix: str = "real",
                  world: str = DEFAULT_WORLD) -> dict:
    """Write a synthetic dataset in the competition layout to out_dir; return a summary.

    The run holds ``out_dir/.synth.lock`` while it writes: a second run into the same folder is
    refused (RuntimeError naming the first's PID) before it touches anything."""
    start = time.perf_counter()
    _check_args(n_train, n_test, seed, workers)
    if class_mix not in CLASS_MIXES:
        raise ValueError(f"class_mix {class_mix!r} is not one of {sorted(CLASS_MIXES)}")
    if world not in WORLDS:
        raise ValueError(f"world {world!r} is not one of {sorted(WORLDS)}")
    out_dir = Path(out_dir)
    purpose = pidlock.Purpose("synth", f"writing a synthetic dataset into {out_dir}", "--out")
    with pidlock.held(out_dir / LOCK_NAME, purpose):
        train, test = _write_images(out_dir, n_train, n_test, seed, workers, quiet,
                                    (contrast, CLASS_MIXES[class_mix], WORLDS[world]))
        _write_labels(out_dir, train, test, old_format)
    per_class = {c: sum(bool(r[c - 1]) for r in train.values()) for c in range(1, N_CLASSES + 1)}
    return {"n_train": n_train, "n_test": n_test, "train_rows_per_class": per_class,
            "train_defect_free": sum(not any(r) for r in train.values()),
            "seconds": round(time.perf_counter() - start, 2)}


def _write_images(out_dir: Path, n_train: int, n_test: int, seed: int, workers: int | None,
                  quiet: bool, look: tuple) -> tuple[dict, dict]:
    """Render the train and test images into out_dir; ``({image_id: rles}, same for test)``.
    ``look``: ``(contrast, class weights, world)`` of every image."""
    train_ids = _image_ids(seed, TRAIN, n_train, set())
    test_ids = _image_ids(seed, TEST, n_test, set(train_ids))
    folders = (out_dir / "train_images", out_dir / "test_images")
    for folder, ids in zip(folders, (train_ids, test_ids)):
        stale = sorted({p.name for p in folder.glob("*.jpg")} - set(ids))
        if stale:  # never mix datasets: labels would be missing for the stale images
            raise ValueError(f"out_dir: {folder} holds {len(stale)} images of another dataset "
                             f"(e.g. {stale[0]}); pass an empty or new out_dir")
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    jobs = [(str(folders[split] / name), seed, index, split, *look)
            for split, ids in ((TRAIN, train_ids), (TEST, test_ids))
            for index, name in enumerate(ids)]
    rles = _run_jobs(jobs, min(workers or os.cpu_count() or 1, len(jobs)), quiet)
    return dict(zip(train_ids, rles[:n_train])), dict(zip(test_ids, rles[n_train:]))
