"""Named input shifts: deterministic transforms of a full-resolution ``(H, W, 3)`` uint8 image,
applied right after it is read and before resizing (labels unchanged), to see how a model's
score holds up when the images drift from the training set (lighting, focus, compression,
a sheet edge in view).

Each shift is ``shift(image, image_id) -> image`` of the same shape and dtype; ``SHIFTS`` is
the registry. The functions are module-level (or ``partial`` of them) so that a dataset holding
one pickles into DataLoader workers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import partial

import cv2
import numpy as np

from pipeline.data.photometric import contrast as contrast_about
from pipeline.data.photometric import exposure, gamma_table, gaussian_blur, gaussian_grain, \
    jpeg_roundtrip, smoothstep_ramp, to_uint8

Shift = Callable[[np.ndarray, str], np.ndarray]

NOISE_SIGMA = 12.0        # grey levels
BLUR_SIGMA = 2.0          # pixels at full resolution
JPEG_QUALITY = 20
EDGE_FRACTION = 0.12      # of the width, from the left
EDGE_FLOOR = 0.05         # the darkest factor, at the very edge


def unshifted(image: np.ndarray, image_id: str) -> np.ndarray:
    """The image as read."""
    return image


def scale(image: np.ndarray, image_id: str, factor: float) -> np.ndarray:
    """Brightness times ``factor``, clipped to [0, 255]."""
    return to_uint8(exposure(image.astype(np.float32), factor))


def contrast(image: np.ndarray, image_id: str, factor: float) -> np.ndarray:
    """Deviations from the image's mean grey level times ``factor``."""
    mean = float(image.mean())
    return to_uint8(contrast_about(image.astype(np.float32), mean, factor))


def gamma(image: np.ndarray, image_id: str, exponent: float) -> np.ndarray:
    """``255 * (image / 255) ** exponent`` through a 256-entry lookup table."""
    return cv2.LUT(image, gamma_table(exponent))


def blur(image: np.ndarray, image_id: str, sigma: float = BLUR_SIGMA) -> np.ndarray:
    """Gaussian blur of ``sigma`` pixels (out of focus)."""
    return gaussian_blur(image, sigma)


def noise_seed(image_id: str) -> int:
    """A seed that depends on the image id only: the same noise on every run and process."""
    return int.from_bytes(hashlib.sha256(image_id.encode()).digest()[:8], "little")


def noise(image: np.ndarray, image_id: str, sigma: float = NOISE_SIGMA) -> np.ndarray:
    """Gaussian sensor noise of ``sigma`` grey levels, one value per pixel for all channels
    (grey stays grey), seeded by the image id."""
    grain = gaussian_grain(np.random.default_rng(noise_seed(image_id)), (*image.shape[:2], 1),
                           sigma, draws=np.float64)
    return to_uint8(image.astype(np.float32) + grain)


def jpeg(image: np.ndarray, image_id: str, quality: int = JPEG_QUALITY) -> np.ndarray:
    """The RGB image re-encoded as JPEG at ``quality`` (0-100) and decoded again."""
    bgr = jpeg_roundtrip(cv2.cvtColor(image, cv2.COLOR_RGB2BGR), quality)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def dark_edge(image: np.ndarray, image_id: str, fraction: float = EDGE_FRACTION,
              floor: float = EDGE_FLOOR) -> np.ndarray:
    """The leftmost ``fraction`` of the width darkened by a smooth ramp, from ``floor`` times
    the grey level at the edge to unchanged at its end (the sheet's edge in view)."""
    edge = max(1, round(image.shape[1] * fraction))
    ramp = smoothstep_ramp(edge, floor)
    out = image.copy()
    out[:, :edge] = to_uint8(image[:, :edge].astype(np.float32) * ramp[None, :, None])
    return out


SHIFTS: dict[str, Shift] = {
    "none": unshifted,
    "bright-x1.8": partial(scale, factor=1.8),
    "dark-x0.3": partial(scale, factor=0.3),
    "contrast-x0.5": partial(contrast, factor=0.5),
    "gamma-2.0": partial(gamma, exponent=2.0),
    "gamma-0.5": partial(gamma, exponent=0.5),
    "blur": blur,
    "noise": noise,
    "jpeg-q20": jpeg,
    "dark-edge": dark_edge,
}


def parse(text: str) -> list[str]:
    """The shift names of ``all`` or a comma-separated list; an unknown name lists the valid."""
    if text == "all":
        return list(SHIFTS)
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in SHIFTS]
    if unknown or not names:
        raise ValueError(f"--shifts: unknown shift(s) {', '.join(unknown) or repr(text)}; "
                         f"valid: {', '.join(SHIFTS)}")
    return list(dict.fromkeys(names))
