"""The training settings: one frozen dataclass, one CLI flag per field (``options``), saved as
the run's ``config.json`` and in every checkpoint; a YAML or JSON file of them is a recipe
(``train --config``), and a run's ``config.json`` replays it."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.config import DATA_DIR_ENV, DEFAULT_DATA_DIR, DEFAULT_RUN_DIR, RUN_DIR_ENV, \
    check_device
from pipeline.data.augment import PRESETS
from pipeline.data.sampling import SAMPLERS
from pipeline.models.forward import AMP_MODES
from pipeline.models.losses import LOSSES, build_loss
from pipeline.models.registry import HEADS, MODELS
from pipeline.settings import check_choices, flag, from_values, setting
from pipeline.training.optimizers import OPTIMIZERS
from pipeline.training.selection import SELECT

# Settings that may change on --resume: they do not change what each step trains
# (--max-steps only stops a run early: the schedule spans every epoch; --tensorboard only logs).
RESUMABLE = ("quiet", "workers", "device", "max_steps", "tensorboard")
# What a saved config without a field (written before the field existed) meant.
LEGACY = {"select": "default", "ema_decay": None, "average_top_k": 1, "sampler": "uniform",
          "crop_focus": 0.0, "pos_weight": None, "pixel_weight": None, "dice_weight": None,
          "focal_gamma": 2.0, "sample_shares": (0.2, 0.2, 0.2, 0.2, 0.2), "pseudo": None,
          "pseudo_share": None}
# The share of pseudo-labelled draws when --pseudo comes without --pseudo-share.
DEFAULT_PSEUDO_SHARE = 0.2


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
    pos_weight: tuple[float, ...] | None = setting(
        None, "BCE weights of the positives per class, w1,w2,w3,w4 (sigmoid; 1st place: "
        "2,2,1,1.5)")
    pixel_weight: float | None = setting(None, "weight of the pixel-wise term (CE, BCE, focal "
                                         "or Lovasz; none: 1)")
    dice_weight: float | None = setting(None, "weight of the soft Dice term of a +dice loss "
                                        "(none: 1; 1st place: 0.25 with --pixel-weight 0.75)")
    focal_gamma: float = setting(2.0, "focusing exponent of the focal losses")
    optimizer: str = setting("adamw", "optimizer", OPTIMIZERS)
    lr: float = setting(3e-4, "peak learning rate")
    weight_decay: float = setting(1e-4, "weight decay")
    epochs: int = setting(20, "epochs per fold")
    val_every: int = setting(1, "validate every N epochs (and always after the last); "
                             "best.pt is the best validated epoch")
    select: str = setting("tuned", "best.pt is the validated epoch with the best score at "
                          "post-processing tuned on the fold's validation set (tuned), at the "
                          "model's own decision (default), or the lowest validation loss",
                          SELECT)
    ema_decay: float | None = setting(None, "keep an exponential moving average of the "
                                      "weights with this decay per step (e.g. 0.99); the "
                                      "average is validated and saved")
    average_top_k: int = setting(1, "best.pt averages the weights of the K best validated "
                                 "epochs (1: the best epoch alone)")
    sampler: str = setting("uniform", "uniform: every image once per epoch; balanced: draws "
                           "defect-free images and each class at --sample-shares", SAMPLERS)
    sample_shares: tuple[float, ...] = setting(
        (0.2, 0.2, 0.2, 0.2, 0.2), "shares of the balanced sampler: defect-free,class 1,2,3,4 "
        "(each in [0, 1], summing to 1)")
    crop_focus: float = setting(0.0, "probability that a training crop is placed on a defect "
                                "of a class drawn uniformly from the image's classes")
    pseudo: str | None = setting(None, "pseudo-labels: a CSV ImageId,ClassId,EncodedPixels of "
                                 "test images (every class row of each) mixed into the "
                                 "training batches, never into validation")
    pseudo_share: float | None = setting(
        None, "share of the training draws that are pseudo-labelled images, in (0, 1); none: "
        f"{DEFAULT_PSEUDO_SHARE} with --pseudo: roughly in proportion, as the 1st place mixed "
        "them in (a few thousand confident test images next to 12.6k training images)")
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
    tensorboard: bool = setting(False, "write TensorBoard event files to RUN_DIR/tb/fold<k>/: "
                                "loss and learning rate per step, validation scores per "
                                "epoch, a few prediction overlays")

    def __post_init__(self) -> None:
        check_choices(self)
        check_device(self.device)
        for name in ("epochs", "batch_size", "val_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{flag(name)} must be at least 1, got {getattr(self, name)}")
        if self.gate and not self.cls_weight > 0:
            raise ValueError(f"--gate needs --cls-weight > 0 (got {self.cls_weight}): the "
                             "presence head learns only from that term")
        for name in ("max_steps", "limit_images"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{flag(name)} must be at least 1 (or left out for no limit), "
                                 f"got {value}")
        for name in ("workers", "warmup_epochs", "weight_decay", "seed", "cls_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{flag(name)} must be >= 0, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"--lr must be > 0, got {self.lr}")
        if self.background_prior is not None and not 0.0 < self.background_prior < 1.0:
            raise ValueError(f"--background-prior must be in (0, 1), got {self.background_prior}")
        self._check_learning()
        self._check_pseudo()

    def _check_learning(self) -> None:
        """Refuse out-of-range selection, averaging, sampling and loss-weight settings."""
        if self.ema_decay is not None and not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"--ema-decay must be in [0, 1), got {self.ema_decay}: e.g. 0.99, "
                             "or leave it out for no average")
        if self.average_top_k < 1:
            raise ValueError(f"--average-top-k must be at least 1 (1: the best epoch alone), "
                             f"got {self.average_top_k}")
        if not 0.0 <= self.crop_focus <= 1.0:
            raise ValueError(f"--crop-focus is a probability in [0, 1], got {self.crop_focus}")
        shares = self.sample_shares
        if len(shares) != 5 or any(not 0.0 <= s <= 1.0 for s in shares) \
                or abs(sum(shares) - 1.0) > 1e-3:
            raise ValueError(f"--sample-shares needs 5 shares in [0, 1] (defect-free, classes "
                             f"1-4) summing to 1, got {','.join(map(str, shares))}")
        for name in ("pixel_weight", "dice_weight", "focal_gamma"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{flag(name)} must be >= 0, got {value}")
        # the loss's own checks: loss/head pair, weights of terms the loss has, lengths
        build_loss(self.loss, self.head, self.class_weights, pos_weight=self.pos_weight,
                   dice_weight=self.dice_weight, pixel_weight=self.pixel_weight,
                   focal_gamma=self.focal_gamma, cls_weight=self.cls_weight if self.gate else None)

    def _check_pseudo(self) -> None:
        """Refuse a share without a file or outside (0, 1); a file without a share gets the
        default share (recorded as such in config.json)."""
        if self.pseudo is None:
            if self.pseudo_share is not None:
                raise ValueError(f"--pseudo-share {self.pseudo_share} needs --pseudo FILE (the "
                                 "pseudo-label CSV): pass both, or neither")
            return
        if not self.pseudo:
            raise ValueError("--pseudo is empty: pass the pseudo-label CSV, or leave it out")
        if self.pseudo_share is None:
            object.__setattr__(self, "pseudo_share", DEFAULT_PSEUDO_SHARE)
        if self.pseudo_share >= 1.0:
            raise ValueError(f"--pseudo-share {self.pseudo_share} leaves no real image in the "
                             "batches: use a share below 1, e.g. 0.2")
        if not self.pseudo_share > 0.0:
            raise ValueError(f"--pseudo-share must be in (0, 1), got {self.pseudo_share}: e.g. "
                             "0.2, or leave --pseudo out to train on the real images alone")

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
    saved = {**{k: list(v) if isinstance(v, tuple) else v for k, v in LEGACY.items()}, **saved}
    return [f"{flag(name)} {saved.get(name)!r} (saved) vs {now[name]!r} (now)"
            for name in now if name not in RESUMABLE and saved.get(name) != now[name]]
