"""Constants of the competition and the paths of a run, resolved in one place."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

HEIGHT, WIDTH = 256, 1600
N_CLASSES = 4
CLASS_IDS = (1, 2, 3, 4)
COMPETITION = "severstal-steel-defect-detection"

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

    def fold_dir(self, fold: int) -> Path:
        """The directory of one fold's ``best.pt`` and ``last.pt``."""
        return self.checkpoints / f"fold{fold}"

    def find_checkpoints(self, folds: list[int] | None = None, which: str = "best") -> list[Path]:
        """``which``.pt of the listed folds, or of every fold that has one, in fold order."""
        if folds is not None:
            return [self.fold_dir(fold) / f"{which}.pt" for fold in folds]
        found = [(int(m.group(1)), path) for path in self.checkpoints.glob(f"fold*/{which}.pt")
                 if (m := re.fullmatch(r"fold(\d+)", path.parent.name))]
        return [path for _, path in sorted(found)]


def resolve_data_dir(value: str | os.PathLike | None = None) -> DataPaths:
    """The data directory: the argument, else $SEVERSTAL_DATA_DIR, else ./data."""
    chosen = value or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR
    return DataPaths(_folder(Path(chosen), "--data-dir", DATA_DIR_ENV))


def resolve_run_dir(value: str | os.PathLike | None = None) -> RunPaths:
    """The run directory: the argument, else $SEVERSTAL_RUN_DIR, else ./runs/default."""
    chosen = value or os.environ.get(RUN_DIR_ENV) or DEFAULT_RUN_DIR
    return RunPaths(_folder(Path(chosen), "--run-dir", RUN_DIR_ENV))


def _folder(path: Path, flag: str, env: str) -> Path:
    """``path``, refused when something other than a directory is there."""
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{flag} {path} is a file, not a directory: pass a folder "
                                 f"with {flag} (or ${env})")
    return path


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


DEVICE_RE = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_device(device: str) -> None:
    """Refuse a device name other than auto, cpu, cuda or cuda:N."""
    if not DEVICE_RE.fullmatch(device):
        raise ValueError(f"--device {device!r} is not valid; valid values: auto, cpu, cuda, "
                         "cuda:N")
