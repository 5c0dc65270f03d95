"""Training augmentation presets, from torchvision.transforms.v2, masks moved with the images.

Why torchvision.transforms.v2 rather than albumentations: it is already a dependency, works on
the uint8 tensors the datasets hand out (no float round trip), and moves ``tv_tensors.Mask``
with every geometric transform (nearest neighbour) while photometric ones touch the image only.

Presets (``--augment``): ``none``; ``flips`` (horizontal and vertical flips, the pipeline's
original augmentation and the default); ``light`` (flips, mild brightness / contrast / gamma);
``strong`` (flips, brightness x0.3-1.8, contrast, gamma 0.5-2, Gaussian noise, blur, JPEG
quality 20-95, small shifts), for a model that holds up when the camera or lighting changes.
The flips are drawn by the dataset (``Transform.flips``); the rest here, from torch's RNG, so a
seeded run is repeatable.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from pipeline.data.photometric import jpeg_roundtrip, log_uniform_torch

class _Gamma:
    """A random gamma in [low, high], log-uniform (as likely to darken as to lighten)."""

    def __init__(self, low: float, high: float) -> None:
        self.low, self.high = low, high

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return v2.functional.adjust_gamma(image, log_uniform_torch(self.low, self.high))


class _Brightness(_Gamma):
    """Multiply by a log-uniform factor in [low, high] (x0.3 as likely as x3.3)."""

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return v2.functional.adjust_brightness(image, log_uniform_torch(self.low, self.high))


class _Noise:
    """Gaussian sensor noise of a random sigma up to ``most`` grey levels, on uint8 images."""

    def __init__(self, most: float) -> None:
        self.most = most

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        sigma = float(torch.rand(())) * self.most
        noisy = image.float() + torch.randn(image.shape) * sigma
        return tv_tensors.wrap(noisy.round_().clamp_(0, 255).to(torch.uint8), like=image)


class _Jpeg:
    """Re-encode as JPEG at a random quality in [low, high] (OpenCV's libjpeg; torchvision's
    JPEG codec is deprecated)."""

    def __init__(self, low: int, high: int) -> None:
        self.low, self.high = low, high

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        quality = int(torch.randint(self.low, self.high + 1, ()))
        decoded = jpeg_roundtrip(image.permute(1, 2, 0).contiguous().numpy(), quality)
        return tv_tensors.wrap(torch.from_numpy(decoded).permute(2, 0, 1).contiguous(),
                               like=image)


def _on_image(fn: Callable, p: float) -> v2.Transform:
    return v2.RandomApply([v2.Lambda(fn, tv_tensors.Image)], p=p)


def _light() -> v2.Compose:
    return v2.Compose([
        _on_image(_Brightness(0.75, 1.33), 0.5),
        v2.RandomApply([v2.ColorJitter(contrast=(0.8, 1.25))], p=0.5),
        _on_image(_Gamma(0.8, 1.25), 0.5)])


def _strong() -> v2.Compose:
    return v2.Compose([
        v2.RandomApply([v2.RandomAffine(degrees=0.0, translate=(0.03, 0.03))], p=0.3),
        _on_image(_Brightness(0.3, 1.8), 0.8),
        v2.RandomApply([v2.ColorJitter(contrast=(0.5, 1.5))], p=0.5),
        _on_image(_Gamma(0.5, 2.0), 0.5),
        v2.RandomApply([v2.GaussianBlur(5, sigma=(0.3, 1.5))], p=0.3),
        _on_image(_Noise(12.0), 0.3),
        _on_image(_Jpeg(20, 95), 0.3)])


# preset -> its photometric / shift part (None: nothing beyond the dataset's flips, or none)
PRESETS: dict[str, Callable[[], v2.Compose | None]] = {
    "none": lambda: None, "flips": lambda: None, "light": _light, "strong": _strong}


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
