"""Training augmentation presets: photometric steps from ``data.photometric`` (parameters drawn
from torch's RNG, so a seeded run is repeatable) and a small shift from torchvision.transforms.v2,
masks moved with the images.

Why torchvision.transforms.v2 for the composition rather than albumentations: it is already a
dependency, works on the uint8 tensors the datasets hand out (no float round trip), and moves
``tv_tensors.Mask`` with every geometric transform (nearest neighbour) while photometric steps
touch the image only.

Presets (``--augment``): ``none``; ``flips`` (horizontal and vertical flips, the pipeline's
original augmentation and the default); ``light`` (flips, mild brightness / contrast / gamma);
``strong`` (flips, brightness x0.3-1.8, contrast, gamma 0.5-2, Gaussian noise, blur, JPEG
quality 20-95, small shifts), for a model that holds up when the camera or lighting changes.
The flips are drawn by the dataset (``Transform.flips``); the rest is ``PRESET_STEPS``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from pipeline.data import photometric

# preset -> its steps after the dataset's flips, in order: (step, range, probability).
# brightness, gamma: log-uniform factors; contrast: uniform factor; blur: sigma in pixels;
# noise: sigma in grey levels; jpeg: quality, both ends included; shift: fraction of (w, h).
PRESET_STEPS: dict[str, tuple[tuple[str, tuple[float, float], float], ...]] = {
    "light": (("brightness", (0.75, 1.33), 0.5),
              ("contrast", (0.8, 1.25), 0.5),
              ("gamma", (0.8, 1.25), 0.5)),
    "strong": (("shift", (0.03, 0.03), 0.3),
               ("brightness", (0.3, 1.8), 0.8),
               ("contrast", (0.5, 1.5), 0.5),
               ("gamma", (0.5, 2.0), 0.5),
               ("blur", (0.3, 1.5), 0.3),
               ("noise", (0.0, 12.0), 0.3),
               ("jpeg", (20, 95), 0.3)),
}


class _Step:
    """A photometric step on the image only: ``draw`` its parameter in [low, high] from torch's
    global RNG (what DataLoader workers seed), then apply ``op`` (``photometric.tensor_*``)."""

    op: Callable[[torch.Tensor, object], torch.Tensor]

    def __init__(self, low: float, high: float) -> None:
        self.low, self.high = low, high

    def draw(self, image: torch.Tensor) -> object:
        """A log-uniform factor (x0.5 as likely as x2)."""
        return photometric.log_uniform(None, self.low, self.high)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        plain = image.as_subclass(torch.Tensor)
        return tv_tensors.wrap(self.op(plain, self.draw(plain)), like=image)


class _Brightness(_Step):
    op = staticmethod(photometric.tensor_brightness)


class _Gamma(_Step):
    op = staticmethod(photometric.tensor_gamma)


class _Contrast(_Step):
    op = staticmethod(photometric.tensor_contrast)

    def draw(self, image: torch.Tensor) -> float:
        """A uniform factor, after the permutation ColorJitter drew first (seeded runs repeat)."""
        torch.randperm(4)
        return float(torch.empty(1).uniform_(self.low, self.high))


class _Blur(_Step):
    op = staticmethod(photometric.tensor_blur)

    def draw(self, image: torch.Tensor) -> float:
        """A uniform sigma."""
        return torch.empty(1).uniform_(self.low, self.high).item()


class _Noise(_Step):
    op = staticmethod(photometric.tensor_noise)

    def draw(self, image: torch.Tensor) -> torch.Tensor:
        """Grain of a uniform sigma, one value per pixel and channel."""
        sigma = self.low + float(torch.rand(())) * (self.high - self.low)
        return photometric.gaussian_grain(None, image.shape, sigma)


class _Jpeg(_Step):
    op = staticmethod(photometric.tensor_jpeg)

    def draw(self, image: torch.Tensor) -> int:
        """A uniform integer quality."""
        return int(torch.randint(int(self.low), int(self.high) + 1, ()))


STEPS: dict[str, type[_Step]] = {"brightness": _Brightness, "contrast": _Contrast, "gamma": _Gamma,
                                 "blur": _Blur, "noise": _Noise, "jpeg": _Jpeg}


def _step(name: str, low: float, high: float) -> v2.Transform:
    """One step of a preset as a transform of the image and the masks."""
    if name == "shift":
        return v2.RandomAffine(degrees=0.0, translate=(low, high))
    return v2.Lambda(STEPS[name](low, high), tv_tensors.Image)


def _compose(preset: str) -> v2.Compose:
    """The steps of ``PRESET_STEPS[preset]``, each applied with its probability."""
    return v2.Compose([v2.RandomApply([_step(name, *span)], p=p)
                       for name, span, p in PRESET_STEPS[preset]])


# preset -> its photometric / shift part (None: nothing beyond the dataset's flips, or none)
PRESETS: dict[str, Callable[[], v2.Compose | None]] = {
    "none": lambda: None, "flips": lambda: None,
    **{name: partial(_compose, name) for name in PRESET_STEPS}}


def build(preset: str) -> v2.Compose | None:
    """The photometric / shift part of a preset (flips are the dataset's); None when empty."""
    if preset not in PRESETS:
        raise ValueError(f"--augment {preset!r} is not one of {', '.join(PRESETS)}")
    return PRESETS[preset]()


def apply(pipeline: v2.Compose, image: torch.Tensor,
          masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(3, h, w)`` uint8 image and ``(4, h, w)`` uint8 masks through the pipeline, together."""
    image, masks = pipeline(tv_tensors.Image(image), tv_tensors.Mask(masks))
    return image.as_subclass(torch.Tensor), masks.as_subclass(torch.Tensor)
