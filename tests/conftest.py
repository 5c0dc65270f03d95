"""Shared fixtures: the real competition sample copied into tests/data."""

from pathlib import Path

import pytest

REAL_SAMPLE = Path(__file__).parent / "data" / "real-sample"


@pytest.fixture(scope="session")
def real_sample() -> Path:
    """The directory of real Severstal files (images, train.csv, RLE vectors, submissions)."""
    return REAL_SAMPLE


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> tuple[Path, Path]:
    """``(data dir, run dir)``: 8 synthetic training and 4 test images, 2 folds of FCN32 trained
    one step each; built once per session: copy it (``tiny_run_copy``) before writing to it."""
    from helpers import train_tiny

    return train_tiny(tmp_path_factory.mktemp("tiny-run"), n_train=8, n_test=4, seed=5,
                      max_steps=1)


@pytest.fixture
def tiny_run_copy(tiny_run, tmp_path) -> tuple[Path, Path]:
    """A private copy of the session's tiny run, free to write to."""
    import shutil

    data, run = tmp_path / "data", tmp_path / "run"
    shutil.copytree(tiny_run[0], data)
    shutil.copytree(tiny_run[1], run)
    return data, run
