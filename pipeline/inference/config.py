"""The inference settings shared by ``cv``, ``predict``, ``robustness`` and the kernel: one frozen
dataclass, one CLI flag per field (``options``), passed as one object.

The settings that change the probabilities (``RECORDED``: TTA and decode) are recorded by ``cv``
with the tuned post-processing (``postprocess.json``), uploaded with the weights, and used by
``predict`` and the kernel by default: thresholds tuned on flip-averaged probabilities are
applied to flip-averaged probabilities.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass

from pipeline.config import check_device
from pipeline.data.images import DECODES
from pipeline.models.forward import AMP_MODES
from pipeline.settings import check_choices, flag, from_values, setting

# TTA mode -> the flips (tensor dims of (N, C, H, W)) averaged with the plain pass.
TTA_MODES: dict[str, tuple[tuple[int, ...], ...]] = {
    "none": ((),), "hflip": ((), (3,)), "hvflip": ((), (3,), (2,), (2, 3))}
RECORDED = ("tta", "decode")

log = logging.getLogger(__name__)


def default_workers() -> int:
    """Leave two cores to the model's threads: loader workers only compete on small machines."""
    return max(0, min(4, (os.cpu_count() or 1) - 2))


@dataclass(frozen=True)
class InferenceConfig:
    """How models are run over images; ``RECORDED`` fields change the probabilities."""

    tta: str = setting("none", "flip test-time augmentation", TTA_MODES)
    decode: str = setting("scaled", "scaled: JPEGs decoded at 1/2, 1/4 or 1/8 size where the "
                          "input scale allows; full: at 256x1600, then resized", DECODES)
    batch_size: int = setting(8, "images per batch")
    workers: int | None = setting(None, "DataLoader worker processes (none: cores - 2, at "
                                  "most 4)")
    device: str = setting("auto", "auto, cpu, cuda or cuda:N")
    amp: str = setting("auto", "mixed precision on CUDA (auto: bf16 where fast, else fp16)",
                       AMP_MODES)
    compile: bool = setting(False, "torch.compile the models: pays back its compile time "
                            "(~10-60 s per model) on long runs only")
    channels_last: bool = setting(True, "channels-last memory format")
    quiet: bool = setting(False, "no progress bars")

    def __post_init__(self) -> None:
        check_choices(self)
        check_device(self.device)
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.workers is not None and self.workers < 0:
            raise ValueError(f"--workers must be >= 0, got {self.workers}")

    @property
    def n_workers(self) -> int:
        """Loader processes: ``workers``, or the machine's default when it is None."""
        return default_workers() if self.workers is None else self.workers

    def recorded(self) -> dict:
        """The settings that change the probabilities, as ``postprocess.json`` records them."""
        return {name: getattr(self, name) for name in RECORDED}

    def replace(self, **changes) -> "InferenceConfig":
        """A copy with some settings changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict:
        """JSON-safe dict of every setting."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict, source: str = "inference settings") -> "InferenceConfig":
        """Inverse of ``as_dict``; errors name ``source`` and the key."""
        return from_values(cls, values, source)

    def describe(self) -> str:
        """One line of the settings that change the probabilities, for logs."""
        return ", ".join(f"{flag(name).lstrip('-')} {getattr(self, name)}" for name in RECORDED)


def with_recorded(requested: dict, recorded: dict, source: str,
                  accept: bool = False) -> InferenceConfig:
    """The settings of ``requested`` (flag values; None: not given) with each ``RECORDED``
    setting not given taken from ``recorded`` (what ``cv`` tuned with, read from ``source``).
    One given that differs from the recorded one is refused, naming both (the thresholds were
    tuned on other probabilities); with ``accept`` (``--accept-postprocess``) it is used, with
    a warning."""
    values = {k: v for k, v in requested.items() if v is not None}
    for name in RECORDED:
        tuned = recorded.get(name)
        if name not in values and tuned is not None:
            values[name] = tuned
        elif tuned is not None and values[name] != tuned:
            message = (f"{flag(name)} {values[name]} differs from {flag(name)} {tuned} that "
                       f"{source} was tuned with: the thresholds may not fit these "
                       "probabilities")
            if not accept:
                raise ValueError(f"{message}: drop {flag(name)}, rerun `make cv` with it, or "
                                 "pass --accept-postprocess to use it anyway")
            log.warning("%s (--accept-postprocess given)", message)
    return InferenceConfig(**values)
