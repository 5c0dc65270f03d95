"""Constants of the competition and the paths of a run, resolved in one place."""

from __future__ import annotations

import os
import re
import subprocess
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal

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


Model = Literal["fcn32_vgg11", "unet", "unetplusplus", "fpn", "linknet", "manet", "pspnet",
                "deeplabv3plus"]
Head = Literal["softmax", "sigmoid"]
Loss = Literal["ce", "dice", "ce+dice", "bce", "bce+dice"]
Optimizer = Literal["adamw", "sgd"]
Amp = Literal["auto", "none", "bf16", "fp16"]
Augment = Literal["none", "flips", "light", "strong"]
DEVICE_RE = re.compile(r"auto|cpu|cuda(:\d+)?")


def _setting(default: object, help: str) -> typing.Any:
    """A dataclass field whose one-line meaning the CLI shows in ``--help``."""
    return field(default=default, metadata={"help": help})


def choices(hint: object) -> tuple | None:
    """The fixed values of a ``Literal`` type hint (or ``Literal | None``), else None."""
    if typing.get_origin(hint) is Literal:
        return typing.get_args(hint)
    literal = [a for a in typing.get_args(hint) if typing.get_origin(a) is Literal]
    return typing.get_args(literal[0]) if literal else None


@dataclass(frozen=True)
class TrainConfig:
    """Every training setting; CLI flags map onto these fields (``--batch-size`` ...).

    Fields typed ``Literal`` take one of a fixed set of values; a config with any other value,
    or with a number out of range, is refused when it is built, before any data is read.
    """

    data_dir: str = _setting(str(DEFAULT_DATA_DIR), "competition layout (default "
                             f"${DATA_DIR_ENV} or data/)")
    run_dir: str = _setting(str(DEFAULT_RUN_DIR), "checkpoints, logs, reports (default "
                            f"${RUN_DIR_ENV} or runs/default/)")
    model: Model = _setting("fcn32_vgg11", "architecture: the seed's FCN32 or an smp one")
    encoder: str | None = _setting(None, "encoder: vgg11 for fcn32_vgg11; smp's names or "
                                   "tu-<timm model> for the others (none: the architecture's "
                                   "default, tu-tf_efficientnet_lite0)")
    head: Head = _setting("softmax", "softmax: background + 4 classes; sigmoid: 4 channels")
    encoder_weights: str = _setting("imagenet", "'imagenet' (offline for EfficientNet-Lite), "
                                    "'none' or a state-dict file")
    gate: bool = _setting(False, "per-class 'defect present' head, trained with BCE on "
                          "image-level labels; cv tunes its threshold per class")
    cls_weight: float = _setting(0.5, "weight of the gate's BCE term in the loss")
    background_prior: float | None = _setting(
        None, "initial background probability of the classifier bias, e.g. 0.97")
    loss: Loss = _setting("ce", "training loss (ce/dice for softmax, bce for sigmoid)")
    class_weights: tuple[float, ...] | None = _setting(
        None, "cross-entropy weights w0,w1,w2,w3,w4 (background first)")
    optimizer: Optimizer = _setting("adamw", "optimizer")
    lr: float = _setting(3e-4, "peak learning rate")
    weight_decay: float = _setting(1e-4, "weight decay")
    epochs: int = _setting(20, "epochs per fold")
    val_every: int = _setting(1, "validate every N epochs (and always after the last); "
                              "best.pt is the best validated epoch")
    warmup_epochs: float = _setting(1.0, "linear warm-up, in epochs, before the cosine decay")
    batch_size: int = _setting(8, "images per batch (per process under torchrun)")
    crop: tuple[int, int] | None = _setting((256, 384), "random training crop HEIGHTxWIDTH "
                                            "after scaling, or none")
    scale: float = _setting(1.0, "input scale of the 256x1600 images, e.g. 0.5")
    augment: Augment = _setting("flips", "training augmentation preset: none; flips; light "
                                "(+ mild brightness, contrast, gamma); strong (+ brightness "
                                "x0.3-1.8, gamma, noise, blur, JPEG, shifts)")
    workers: int = _setting(4, "DataLoader worker processes")
    amp: Amp = _setting("auto", "mixed precision on CUDA (auto: bf16 where fast, else fp16)")
    channels_last: bool = _setting(True, "channels-last memory format")
    seed: int = _setting(0, "random seed (order, augmentation, initialisation)")
    max_steps: int | None = _setting(None, "stop each fold after this many steps (smoke runs)")
    limit_images: int | None = _setting(None, "use only this many training images per fold")
    skip_bad_images: bool = _setting(False, "skip unreadable images with a warning")
    device: str = _setting("auto", "auto, cpu, cuda or cuda:N")
    quiet: bool = _setting(False, "no progress bars")

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for item in fields(self):
            allowed, value = choices(hints[item.name]), getattr(self, item.name)
            if allowed and value not in allowed and value is not None:
                raise ValueError(f"--{_flag(item.name)} {value!r} is not valid; valid values: "
                                 f"{', '.join(allowed)}")
        if not DEVICE_RE.fullmatch(self.device):
            raise ValueError(f"--device {self.device!r} is not valid; valid values: auto, cpu, "
                             "cuda, cuda:N")
        for name in ("epochs", "batch_size", "val_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{_flag(name)} must be at least 1, got {getattr(self, name)}")
        if self.gate and not self.cls_weight > 0:
            raise ValueError(f"--gate needs --cls-weight > 0 (got {self.cls_weight}): the "
                             "presence head learns only from that term")
        for name in ("workers", "warmup_epochs", "weight_decay", "seed", "cls_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{_flag(name)} must be >= 0, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"--lr must be > 0, got {self.lr}")
        if self.background_prior is not None and not 0.0 < self.background_prior < 1.0:
            raise ValueError(f"--background-prior must be in (0, 1), got {self.background_prior}")

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


def _flag(name: str) -> str:
    return name.replace("_", "-")
