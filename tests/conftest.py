"""Shared fixtures: the real competition sample copied into tests/data."""

from pathlib import Path

import pytest

REAL_SAMPLE = Path(__file__).parent / "data" / "real-sample"


@pytest.fixture(scope="session")
def real_sample() -> Path:
    """The directory of real Severstal files (images, train.csv, RLE vectors, submissions)."""
    return REAL_SAMPLE
