"""The training settings: one frozen dataclass, one CLI flag per field (``options``), saved as
the run's ``config.json`` and in every checkpoint; a YAML or JSON file of them is a recipe
(``train --config``), and a run's ``config.json`` replays it."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.config import DATA_DIR_ENV, DEFAULT_DATA_DIR, DEFAULT_RUN_DIR, RUN_DIR_ENV, \
    check_device
from pipeline.data.augment import PRESETS
from pipeline.models.forward import AMP_MODES
from pipeline.models.losses import LOSSES
from pipeline.models.registry import HEADS, MODELS
from pipeline.settings import check_choices, flag, from_values, setting
from pipeline.training.optimizers import OPTIMIZERS

# Settings that may change on --resume: they do not change what each step trains
# (--max-steps only stops a run early: the schedule spans every epoch).
RESUMABLE = ("quiet", "workers", "device", "max_steps")


@dataclass(frozen=True)
class TrainConfig:
    """Every training setting; CLI flags map onto these fields (``--batch-size`` ...).

    Fields with choices take a name of their registry (models, heads, losses, optimizers,
    augmentation presets, precisions); a config with any other value, or a number out of
    range, is refused when it is built, before any data is read.
    """

    data_dir: str = setting(str(DEFAULT_DATA_DIR), "competition layout (default "
                            f"${DATA_DIR_ENV} or data/)")
    run_dir: str = setting(str(DEFAULT_RUN_DIR), "checkpoints, logs, reports (default "
                           f"${RUN_DIR_ENV} or runs/default/)")
    model: str = setting("fcn32_vgg11", "architecture: the seed's FCN32 or an smp one",
                         MODELS)
    encoder: str | None = setting(None, "encoder: vgg11 for fcn32_vgg11; smp's names or "
                                  "tu-<timm model> for the others (none: the architecture's "
                                  "default, tu-tf_efficientnet_lite0)")
    head: str = setting("softmax", "softmax: background + 4 classes; sigmoid: 4 channels",
                        HEADS)
    encoder_weights: str = setting("imagenet", "'imagenet' (offline for EfficientNet-Lite), "
                                   "'none' or a state-dict file")
    gate: bool = setting(False, "per-class 'defect present' head, trained with BCE on "
                         "image-level labels; cv tunes its threshold per class")
    cls_weight: float = setting(0.5, "weight of the gate's BCE term in the loss")
    background_prior: float | None = setting(
        None, "initial background probability of the classifier bias, e.g. 0.97")
    loss: str = setting("ce", "training loss (ce/dice for softmax, bce for sigmoid)", LOSSES)
    class_weights: tuple[float, ...] | None = setting(
        None, "cross-entropy weights w0,w1,w2,w3,w4 (background first)")
    optimizer: str = setting("adamw", "optimizer", OPTIMIZERS)
    lr: float = setting(3e-4, "peak learning rate")
    weight_decay: float = setting(1e-4, "weight decay")
    epochs: int = setting(20, "epochs per fold")
    val_every: int = setting(1, "validate every N epochs (and always after the last); "
                             "best.pt is the best validated epoch")
    warmup_epochs: float = setting(1.0, "linear warm-up, in epochs, before the cosine decay")
    batch_size: int = setting(8, "images per batch (per process under torchrun)")
    crop: tuple[int, int] | None = setting((256, 384), "random training crop HEIGHTxWIDTH "
                                           "after scaling, or none")
    scale: float = setting(1.0, "input scale of the 256x1600 images, e.g. 0.5")
    augment: str = setting("flips", "training augmentation preset: none; flips; light "
                           "(+ mild brightness, contrast, gamma); strong (+ brightness "
                           "x0.3-1.8, gamma, noise, blur, JPEG, shifts)", PRESETS)
    workers: int = setting(4, "DataLoader worker processes")
    amp: str = setting("auto", "mixed precision on CUDA (auto: bf16 where fast, else fp16)",
                       AMP_MODES)
    channels_last: bool = setting(True, "channels-last memory format")
    seed: int = setting(0, "random seed (order, augmentation, initialisation)")
    max_steps: int | None = setting(None, "stop each fold after this many steps (smoke runs)")
    limit_images: int | None = setting(None, "use only this many training images per fold")
    skip_bad_images: bool = setting(False, "skip unreadable images with a warning")
    device: str = setting("auto", "auto, cpu, cuda or cuda:N")
    quiet: bool = setting(False, "no progress bars")

    def __post_init__(self) -> None:
        check_choices(self)
        check_device(self.device)
        for name in ("epochs", "batch_size", "val_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{flag(name)} must be at least 1, got {getattr(self, name)}")
        if self.gate and not self.cls_weight > 0:
            raise ValueError(f"--gate needs --cls-weight > 0 (got {self.cls_weight}): the "
                             "presence head learns only from that term")
        for name in ("workers", "warmup_epochs", "weight_decay", "seed", "cls_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{flag(name)} must be >= 0, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"--lr must be > 0, got {self.lr}")
        if self.background_prior is not None and not 0.0 < self.background_prior < 1.0:
            raise ValueError(f"--background-prior must be in (0, 1), got {self.background_prior}")

    def as_dict(self) -> dict:
        """JSON- and checkpoint-safe dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, values: dict, source: str = "training settings") -> "TrainConfig":
        """Inverse of ``as_dict``; an unknown key, a wrong type or a bad value is an error
        naming ``source`` and the key."""
        return from_values(cls, values, source)


def resume_conflicts(saved: dict, cfg: TrainConfig) -> list[str]:
    """``'--flag: saved -> now'`` for every setting (but ``RESUMABLE``) that differs from the
    run's saved one."""
    now = cfg.as_dict()
    return [f"{flag(name)} {saved.get(name)!r} (saved) vs {now[name]!r} (now)"
            for name in now if name not in RESUMABLE and saved.get(name) != now[name]]
