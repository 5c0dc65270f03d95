"""Tests of the synthetic Severstal-format dataset generator."""

from __future__ import annotations

import csv
import logging
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from helpers import run_cli

from pipeline.config import HEIGHT, WIDTH
from pipeline.data.render import layout_masks, render_image, sample_layout
from pipeline.data.rle import decode
from pipeline.data.synthetic import write_dataset

N_TRAIN, N_TEST, SEED = 24, 8, 3
ID_PATTERN = re.compile(r"[0-9a-f]{9}\.jpg")


def read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as handle:
        header, *rows = csv.reader(handle)
    return header, rows


def all_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("synthetic")
    return root, write_dataset(root, N_TRAIN, N_TEST, seed=SEED, quiet=True, workers=2)


def test_layout_and_images(dataset: tuple[Path, dict]) -> None:
    root, _ = dataset
    assert sorted(p.name for p in root.iterdir()) == [
        "sample_submission.csv", "test_images", "test_truth.csv", "train.csv", "train_images"]
    train = sorted(p.name for p in (root / "train_images").iterdir())
    test = sorted(p.name for p in (root / "test_images").iterdir())
    assert len(train) == N_TRAIN and len(test) == N_TEST and not set(train) & set(test)
    for name in train + test:
        assert ID_PATTERN.fullmatch(name), name
        folder = "train_images" if name in train else "test_images"
        image = cv2.imread(str(root / folder / name), cv2.IMREAD_UNCHANGED)
        assert image.shape == (HEIGHT, WIDTH, 3) and image.dtype == np.uint8
        assert np.abs(image.astype(int) - image[..., :1]).max() <= 2  # grey in 3 channels
        # the realistic world: from almost all black off-sheet to bright sheets
        assert 0 < image.mean() < 230 and image.std() > 3


def test_train_csv_current_format(dataset: tuple[Path, dict]) -> None:
    root, summary = dataset
    header, rows = read_csv(root / "train.csv")
    assert header == ["ImageId", "ClassId", "EncodedPixels"]
    keys = [(name, int(c)) for name, c, _ in rows]
    assert keys == sorted(set(keys)), "rows must be unique and sorted by ImageId, ClassId"
    train = {p.name for p in (root / "train_images").iterdir()}
    for name, class_id, rle in rows:
        assert name in train and class_id in {"1", "2", "3", "4"}
        assert decode(rle).sum() > 0  # decode also checks the runs are sorted and in range
    per_class = {c: sum(int(r[1]) == c for r in rows) for c in range(1, 5)}
    assert summary["train_rows_per_class"] == per_class
    assert summary["train_defect_free"] == len(train - {r[0] for r in rows})
    assert summary["n_train"] == N_TRAIN and summary["n_test"] == N_TEST


def test_sample_submission_and_truth(dataset: tuple[Path, dict]) -> None:
    root, _ = dataset
    test = sorted(p.name for p in (root / "test_images").iterdir())
    header, rows = read_csv(root / "sample_submission.csv")
    assert header == ["ImageId", "EncodedPixels", "ClassId"]
    assert rows == [[name, f"1 {HEIGHT * WIDTH}", "0"] for name in test]
    header, rows = read_csv(root / "test_truth.csv")
    assert header == ["ImageId", "ClassId", "EncodedPixels"]
    assert {r[0] for r in rows} <= set(test)
    assert all(decode(r[2]).sum() > 0 for r in rows)


def test_old_format_has_same_masks(dataset: tuple[Path, dict], tmp_path: Path) -> None:
    root, _ = dataset
    write_dataset(tmp_path, N_TRAIN, N_TEST, seed=SEED, old_format=True, quiet=True, workers=2)
    header, rows = read_csv(tmp_path / "train.csv")
    assert header == ["ImageId_ClassId", "EncodedPixels"]
    train = sorted(p.name for p in (root / "train_images").iterdir())
    assert [r[0] for r in rows] == [f"{name}_{c}" for name in train for c in range(1, 5)]
    current = {f"{name}_{c}": rle for name, c, rle in read_csv(root / "train.csv")[1]}
    assert {k: v for k, v in rows if v} == current
    header, rows = read_csv(tmp_path / "sample_submission.csv")
    assert header == ["ImageId_ClassId", "EncodedPixels"]
    test = sorted(p.name for p in (root / "test_images").iterdir())
    assert rows == [[f"{name}_{c}", "1 1"] for name in test for c in range(1, 5)]
    assert (tmp_path / "test_truth.csv").read_bytes() == (root / "test_truth.csv").read_bytes()
    old, new = all_bytes(tmp_path), all_bytes(root)
    assert {k: v for k, v in old.items() if k.endswith(".jpg")} == \
        {k: v for k, v in new.items() if k.endswith(".jpg")}


def test_deterministic_and_independent_of_workers(dataset: tuple[Path, dict],
                                                  tmp_path: Path) -> None:
    root, _ = dataset
    write_dataset(tmp_path / "again", N_TRAIN, N_TEST, seed=SEED, quiet=True, workers=1)
    assert all_bytes(tmp_path / "again") == all_bytes(root)
    assert not [p for p in root.rglob(".*")], "no temporary files may be left behind"
    write_dataset(tmp_path / "other", N_TRAIN, N_TEST, seed=SEED + 1, quiet=True, workers=2)
    other = all_bytes(tmp_path / "other")
    assert other["train.csv"] != all_bytes(root)["train.csv"]
    assert not set(other) & {k for k in all_bytes(root) if k.endswith(".jpg")}


def test_rerun_in_place_and_stale_images(tmp_path: Path) -> None:
    write_dataset(tmp_path, 3, 1, seed=5, quiet=True, workers=1)
    before = all_bytes(tmp_path)
    write_dataset(tmp_path, 3, 1, seed=5, quiet=True, workers=1)
    assert all_bytes(tmp_path) == before
    with pytest.raises(ValueError, match="out_dir"):
        write_dataset(tmp_path, 2, 0, seed=5, quiet=True, workers=1)


def test_a_second_run_into_a_folder_being_written_is_refused(tmp_path: Path, capsys) -> None:
    """Two runs into one folder would mix datasets: while a live process holds the folder's
    lock, another run is refused at once, naming it, and touches none of its files."""
    out = tmp_path / "data"
    write_dataset(out, 3, 1, seed=5, quiet=True, workers=1)
    (out / "train.csv").unlink()                    # the first run is still writing
    first = subprocess.Popen(["sleep", "60"])       # ... in this process
    try:
        (out / ".synth.lock").write_text(f"{first.pid}\n")
        before = all_bytes(out)
        capsys.readouterr()
        assert run_cli("synth", "--out", out, "--n-train", 3, "--n-test", 1, "--seed", 6,
                       "--workers", 1, "--quiet") == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"error: process {first.pid} is "), err
        assert f"writing a synthetic dataset into {out} " in err
        assert all_bytes(out) == before
    finally:
        first.kill()
        first.wait()


def test_the_lock_of_a_dead_run_is_taken_over(tmp_path: Path, caplog) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = tmp_path / ".synth.lock"
    lock.write_text(f"{dead.pid}\n")
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        write_dataset(tmp_path, 3, 1, seed=5, quiet=True, workers=1)
    assert f"taking over the stale synth lock {lock} of process {dead.pid}" in caplog.text
    assert not lock.exists() and (tmp_path / "train.csv").is_file()


def test_class_frequencies() -> None:
    layouts = [sample_layout(np.random.default_rng([0, i, 0])) for i in range(400)]
    counts = np.zeros(5, dtype=int)  # counts[0]: defect-free images
    for layout in layouts:
        classes = {d["cls"] for d in layout["defects"]}
        counts[list(classes) or [0]] += 1
    assert 0.38 <= counts[0] / len(layouts) <= 0.58
    assert counts[3] == counts[1:].max() and counts[2] == counts[1:].min()
    assert (counts[1:] > 0).all()
    for layout in layouts[:60]:
        masks = layout_masks(layout)
        present = {d["cls"] for d in layout["defects"]}
        assert [bool(m.any()) for m in masks] == [c in present for c in range(1, 5)]


def test_defects_are_drawn_inside_their_masks() -> None:
    seen = set()
    for i in range(200):
        layout = sample_layout(np.random.default_rng([2, i, 0]))
        if not layout["defects"] or layout["defects"][0]["cls"] in seen:
            continue
        seen.add(layout["defects"][0]["cls"])
        with_defects = render_image(layout, np.random.default_rng(i), contrast=1.0)
        bare = render_image(layout, np.random.default_rng(i), contrast=0.0)
        diff = np.abs(with_defects.astype(float) - bare)
        mask = layout_masks(layout).max(0)
        assert diff[mask > 0].mean() > 5, "defects must stand out of the texture"
        near = cv2.dilate(mask, np.ones((19, 19), np.uint8)) > 0
        assert diff[near].sum() >= 0.9 * diff.sum()
    assert seen == {1, 2, 3, 4}


@pytest.mark.parametrize("kwargs, name", [
    ({"n_train": 0}, "n_train"), ({"n_train": -3}, "n_train"), ({"n_train": 2.5}, "n_train"),
    ({"n_test": -1}, "n_test"), ({"seed": -1}, "seed"), ({"workers": 0}, "workers"),
])
def test_bad_arguments(tmp_path: Path, kwargs: dict, name: str) -> None:
    args = {"out_dir": tmp_path, "n_train": 2, "n_test": 1, "quiet": True} | kwargs
    with pytest.raises(ValueError, match=name):
        write_dataset(**args)
    assert not list(tmp_path.iterdir()), "nothing may be written on bad arguments"
