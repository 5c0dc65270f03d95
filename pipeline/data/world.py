"""The synthetic worlds. ``realistic`` (the default): label geometry and looks calibrated to
the real competition's quantiles (``realistic.py``, ``realistic_look.py``: black off-sheet
regions, strong streaks and contrast); ``held-out``: the same labels, looks from ranges
``realistic`` never uses (to check a model on looks it never trained on). The classic
generator (``render.py``): ``narrow`` (one camera: the original generator) or ``wide``
(defects touching the strip's left or right border, sheet edges twice as often, and per image
an exposure from very dark to saturated, contrast, gamma, blur, sensor noise and JPEG
quality).

Every draw comes from the image's own generator, after the layout's, so ``narrow`` images are
byte for byte what the original generator made, and ``wide`` ones what they were before the
realistic worlds came (``tests/test_world.py`` pins both).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.config import HEIGHT, WIDTH
from pipeline.data import photometric
from pipeline.data.photometric import log_uniform
from pipeline.data.realistic_look import HELD_OUT, REALISTIC, Sheet


@dataclass(frozen=True)
class Look:
    """The ranges one image's camera and lighting are drawn from (``apply_look``), in order."""

    contrast: tuple[float, float] = (0.6, 1.5)   # factor about the image's mean, uniform
    exposure: tuple[float, float] = (0.4, 1.8)   # factor, log-uniform, then clipped to 0-255
    gamma: tuple[float, float] = (0.7, 1.5)      # exponent, log-uniform
    p_blur: float = 0.25
    blur: tuple[float, float] = (0.5, 1.5)       # sigma in pixels, uniform
    noise: tuple[float, float] = (0.0, 8.0)      # sigma in grey levels, uniform


@dataclass(frozen=True)
class World:
    """The spread of the synthetic images."""

    p_dark_edge: float = 0.15
    p_border: float = 0.0   # per defect: moved so that it crosses the left or right border
    look: Look | None = None  # exposure, contrast, gamma, blur and noise drawn per image
    jpeg_quality: tuple[int, int] = (90, 90)
    # None: the classic layout and texture (render.py); else the realistic ones (realistic*.py)
    # with the look drawn from these ranges (p_dark_edge, p_border and look then unused)
    sheet: Sheet | None = None


WORLDS = {"narrow": World(),
          "wide": World(p_dark_edge=0.3, p_border=0.15, look=Look(), jpeg_quality=(30, 95)),
          "realistic": World(sheet=REALISTIC, jpeg_quality=(72, 88)),
          "held-out": World(sheet=HELD_OUT, jpeg_quality=(40, 69))}
DEFAULT_WORLD = "realistic"


def _shift_x(defect: dict, dx: float) -> None:
    """Move a defect's polygons and drawing geometry by dx pixels along the strip."""
    move = np.array([dx, 0.0])
    defect["polys"] = [p + move for p in defect["polys"]]
    if "spots" in defect:
        defect["spots"] = defect["spots"] + np.array([dx, 0.0, 0.0, 0.0])
    for key in ("lines", "shapes"):
        if key in defect:
            defect[key] = [p + move for p in defect[key]]
    if "bands" in defect:
        defect["bands"] = [(p0 + move, p1 + move, half) for p0, p1, half in defect["bands"]]


def touch_borders(layout: dict, rng: np.random.Generator, world: World) -> dict:
    """With probability ``world.p_border`` per defect (and no sheet edge in view), move it so
    that up to 40% of its width lies beyond the left or right border of the image."""
    if world.p_border <= 0 or layout["edge"] is not None:
        return layout
    for defect in layout["defects"]:
        if rng.random() >= world.p_border:
            continue
        points = np.concatenate(defect["polys"])
        x0, x1 = float(points[:, 0].min()), float(points[:, 0].max())
        beyond = rng.uniform(2.0, max(3.0, 0.4 * (x1 - x0)))
        _shift_x(defect, -x0 - beyond if rng.random() < 0.5 else WIDTH - 1 - x1 + beyond)
        defect["polys"] = [np.clip(p, (0, 0), (WIDTH - 1, HEIGHT - 1)) for p in defect["polys"]]
    return layout


def apply_look(img: np.ndarray, rng: np.random.Generator, look: Look = Look()) -> np.ndarray:
    """One camera and lighting for a float image in grey levels, drawn from ``look``: contrast,
    exposure, gamma, optional blur, sensor noise; returns float (clipping is the caller's)."""
    factor = np.float32(rng.uniform(*look.contrast))
    img = photometric.contrast(img, np.float32(img.mean()), factor)
    img = np.clip(photometric.exposure(img, np.float32(log_uniform(rng, *look.exposure))), 0, 255)
    img = photometric.gamma_curve(img, np.float32(log_uniform(rng, *look.gamma)))
    if rng.random() < look.p_blur:
        img = photometric.gaussian_blur(img, rng.uniform(*look.blur))
    sigma = np.float32(rng.uniform(*look.noise))
    return img + photometric.gaussian_grain(rng, img.shape, sigma)


def jpeg_quality(rng: np.random.Generator, world: World) -> int:
    """The JPEG quality of one image (drawn only when the world has a range)."""
    low, high = world.jpeg_quality
    return low if low == high else int(rng.integers(low, high + 1))
