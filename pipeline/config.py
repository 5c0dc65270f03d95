"""Constants of the competition and the paths of a run, resolved in one place."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

HEIGHT, WIDTH = 256, 1600
N_CLASSES = 4
CLASS_IDS = (1, 2, 3, 4)
N_PIXELS = HEIGHT * WIDTH

DATA_DIR_ENV = "SEVERSTAL_DATA_DIR"
RUN_DIR_ENV = "SEVERSTAL_RUN_DIR"
DEFAULT_DATA_DIR = Path("data")
DEFAULT_RUN_DIR = Path("runs/default")
DEFAULT_SUBMISSION = Path("submission/submission.csv")


@dataclass(frozen=True)
class DataPaths:
    """Where the competition layout lives (the files Kaggle ships)."""

    root: Path

    @property
    def train_csv(self) -> Path:
        return self.root / "train.csv"

    @property
    def train_images(self) -> Path:
        return self.root / "train_images"

    @property
    def test_images(self) -> Path:
        return self.root / "test_images"

    @property
    def sample_submission(self) -> Path:
        return self.root / "sample_submission.csv"

    @property
    def test_truth(self) -> Path:
        """Ground truth of the test images; only the synthetic dataset has it."""
        return self.root / "test_truth.csv"


@dataclass(frozen=True)
class RunPaths:
    """Where one experiment keeps checkpoints, logs, reports and post-processing."""

    root: Path

    @property
    def folds_csv(self) -> Path:
        return self.root / "folds.csv"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def postprocess_json(self) -> Path:
        return self.root / "postprocess.json"

    @property
    def config_json(self) -> Path:
        return self.root / "config.json"


def resolve_data_dir(value: str | os.PathLike | None = None) -> DataPaths:
    """The data directory: the argument, else $SEVERSTAL_DATA_DIR, else ./data."""
    chosen = value or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR
    return DataPaths(Path(chosen))


def resolve_run_dir(value: str | os.PathLike | None = None) -> RunPaths:
    """The run directory: the argument, else $SEVERSTAL_RUN_DIR, else ./runs/default."""
    chosen = value or os.environ.get(RUN_DIR_ENV) or DEFAULT_RUN_DIR
    return RunPaths(Path(chosen))


def code_version() -> str:
    """Package version plus the git commit (and '-dirty') when run from a checkout."""
    from pipeline import __version__

    repo = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=True, timeout=5,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, check=True, timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return __version__
    return f"{__version__}+g{sha}{'-dirty' if dirty else ''}"


@dataclass(frozen=True)
class TrainConfig:
    """Every training setting; CLI flags map onto these fields (``--batch-size`` ...)."""

    data_dir: str = str(DEFAULT_DATA_DIR)
    run_dir: str = str(DEFAULT_RUN_DIR)
    model: str = "fcn32_vgg11"
    head: str = "softmax"
    encoder_weights: str = "imagenet"
    background_prior: float | None = None
    loss: str = "ce"
    class_weights: tuple[float, ...] | None = None
    optimizer: str = "adamw"
    lr: float = 3e-4
    weight_decay: float = 1e-4
    epochs: int = 20
    warmup_epochs: float = 1.0
    batch_size: int = 8
    crop: tuple[int, int] | None = (256, 384)
    scale: float = 1.0
    workers: int = 4
    amp: str = "auto"
    channels_last: bool = True
    seed: int = 0
    max_steps: int | None = None
    limit_images: int | None = None
    skip_bad_images: bool = False
    device: str = "auto"
    quiet: bool = False

    def as_dict(self) -> dict:
        """JSON- and checkpoint-safe dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """Inverse of ``as_dict``; unknown keys are an error naming them."""
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown training settings {sorted(unknown)}")
        fixed = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        return cls(**fixed)
