"""Photometric operations, written once: pure functions of an image and explicit parameters.

Three users sample their parameters and call these: the synthetic world (``world``: one look
per generated image, on float grey levels), the robustness shifts (``shifts``: fixed named
parameters, on uint8 RGB images as read) and training augmentation (``augment``: JPEG here,
brightness, contrast and gamma through torchvision on uint8 tensors). Each user keeps its
parameter ranges in its own table, so they can be compared side by side.

Convention: ``values`` are float32 grey levels in [0, 255] (any shape), ``pixels`` are uint8
``(H, W)`` or ``(H, W, C)`` arrays; operations on ``values`` return float32 and leave clipping
and quantising (``to_uint8``) to the caller.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch


def to_uint8(values: np.ndarray) -> np.ndarray:
    """Round and clip grey levels to uint8."""
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def exposure(values: np.ndarray, factor: float) -> np.ndarray:
    """Brightness times ``factor`` (not clipped)."""
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
    """Gaussian blur of ``sigma`` pixels in both directions (out of focus)."""
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


def log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    """A factor in [low, high], log-uniform (x0.5 as likely as x2), from a numpy generator."""
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def log_uniform_torch(low: float, high: float) -> float:
    """The same from torch's global generator (what DataLoader workers seed)."""
    return float(torch.empty(()).uniform_(torch.tensor(low).log(),
                                          torch.tensor(high).log()).exp())
