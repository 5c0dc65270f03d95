"""Photometric operations, written once: pure functions of an image and explicit parameters,
and the two samplers their users draw parameters with.

Three users sample their parameters and call these: the synthetic world (``world.Look``: one
look per generated image), the robustness shifts (``shifts.SHIFTS``: fixed named parameters)
and training augmentation (``augment.PRESET_STEPS``: random per item). Each keeps its ranges in
that table, so they can be compared side by side.

Convention: images are grey levels on the 0-255 scale, in one of three forms:

- ``values``: float32 numpy arrays of any shape (the world's image while it is drawn);
  operations on them return float32, unclipped, and leave quantising to ``to_uint8``;
- ``pixels``: uint8 numpy ``(H, W)`` or ``(H, W, C)`` arrays (images as read; the shifts);
- ``tensor_*`` operations: uint8 torch ``(C, H, W)`` tensors, C = 1 or 3 (augmentation), with
  torchvision's numerics: brightness and contrast truncate to uint8 rather than round, contrast
  is about the mean luma, gamma works on [0, 1] floats, the blur is torchvision's 5x5 kernel.
  They are kept apart from the numpy ones because merging them would change every
  augmented image of a seeded run.
"""

from __future__ import annotations

from types import ModuleType

import cv2
import numpy as np
import torch

Generator = np.random.Generator | torch.Generator | None


def to_uint8(values: np.ndarray) -> np.ndarray:
    """Round and clip grey levels to uint8."""
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def exposure(values: np.ndarray, factor: float) -> np.ndarray:
    """Brightness times ``factor`` (not clipped; numpy arrays or float torch tensors)."""
    return values * factor


def contrast(values: np.ndarray, mean: float, factor: float) -> np.ndarray:
    """Deviations from ``mean`` times ``factor``."""
    return (values - mean) * factor + mean


def gamma_curve(values: np.ndarray, exponent: float) -> np.ndarray:
    """``255 * (values / 255) ** exponent`` (in the dtype of ``values``)."""
    return 255 * (values / 255) ** exponent


def gamma_table(exponent: float) -> np.ndarray:
    """The 256-entry uint8 lookup table of ``gamma_curve`` (``cv2.LUT``)."""
    return to_uint8(gamma_curve(np.arange(256), exponent))


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of ``sigma`` pixels in both directions (out of focus), values or pixels."""
    return cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, sigmaY=sigma)


def jpeg_roundtrip(pixels: np.ndarray, quality: int) -> np.ndarray:
    """``pixels`` encoded as JPEG at ``quality`` (0-100) by OpenCV's libjpeg and decoded again,
    same shape (channels in OpenCV's order: BGR for colour)."""
    ok, data = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"OpenCV could not encode a {pixels.shape} image as JPEG")
    return cv2.imdecode(data, cv2.IMREAD_UNCHANGED).reshape(pixels.shape)


def smoothstep_ramp(length: int, floor: float) -> np.ndarray:
    """``(length,)`` float32 factors from ``floor`` up to 1 along a smoothstep (a dark edge)."""
    x = np.arange(length, dtype=np.float32) / length
    return floor + (1.0 - floor) * x * x * (3.0 - 2.0 * x)


def _tv() -> ModuleType:
    """torchvision's functional kernels, imported when first needed (the synthetic world's
    worker processes never load torchvision)."""
    from torchvision.transforms.v2 import functional
    return functional


def tensor_brightness(image: torch.Tensor, factor: float) -> torch.Tensor:
    """``exposure`` of a uint8 tensor, clipped and truncated to uint8 (as torchvision does)."""
    return exposure(image.float(), factor).clamp_(0, 255).to(torch.uint8)


def tensor_contrast(image: torch.Tensor, factor: float) -> torch.Tensor:
    """Deviations from the mean luma times ``factor`` (torchvision's ``adjust_contrast``)."""
    return _tv().adjust_contrast(image, factor)


def tensor_gamma(image: torch.Tensor, exponent: float) -> torch.Tensor:
    """``(image / 255) ** exponent`` back to uint8 (torchvision's ``adjust_gamma``)."""
    return _tv().adjust_gamma(image, exponent)


def tensor_blur(image: torch.Tensor, sigma: float, size: int = 5) -> torch.Tensor:
    """Gaussian blur of ``sigma`` pixels with a ``size`` x ``size`` kernel (torchvision's)."""
    return _tv().gaussian_blur(image, [size, size], [sigma, sigma])


def tensor_noise(image: torch.Tensor, grain: torch.Tensor) -> torch.Tensor:
    """A uint8 tensor plus float noise ``grain`` (``gaussian_grain``), rounded and clipped."""
    return (image.float() + grain).round_().clamp_(0, 255).to(torch.uint8)


def tensor_jpeg(image: torch.Tensor, quality: int) -> torch.Tensor:
    """``jpeg_roundtrip`` of a uint8 ``(C, H, W)`` tensor, channels kept in their order."""
    decoded = jpeg_roundtrip(image.permute(1, 2, 0).contiguous().numpy(), quality)
    return torch.from_numpy(decoded).permute(2, 0, 1).contiguous()


def log_uniform(rng: Generator, low: float, high: float) -> float:
    """A factor in [low, high], log-uniform (x0.5 as likely as x2): from a numpy generator (in
    float64), else from a torch one (float32; None: torch's global one, which DataLoader
    workers seed)."""
    if isinstance(rng, np.random.Generator):
        return float(np.exp(rng.uniform(np.log(low), np.log(high))))
    bounds = torch.tensor(low).log(), torch.tensor(high).log()
    return float(torch.empty(()).uniform_(*bounds, generator=rng).exp())


def gaussian_grain(rng: Generator, shape: tuple[int, ...], sigma: float,
                   draws: type = np.float32) -> np.ndarray | torch.Tensor:
    """float32 Gaussian noise of ``sigma`` grey levels and ``shape``: numpy from a numpy
    generator, drawn in ``draws`` precision (float32 or float64, two different streams), else
    a torch tensor from a torch generator (None: torch's global one)."""
    if not isinstance(rng, np.random.Generator):
        return torch.randn(shape, generator=rng) * float(sigma)
    if np.dtype(draws) == np.float32:
        return rng.standard_normal(shape, dtype=np.float32) * np.float32(sigma)
    return (rng.standard_normal(shape) * sigma).astype(np.float32)
