"""The realistic worlds' looks: sheet texture, defect drawing and camera, calibrated to the
real competition's image quantiles (``../shared/REAL_DATA.md``, measured by ``realism``); the
labels are ``realistic.sample_layout``'s.

Looks (``Sheet``: every range one image's look is drawn from). A sheet of one grey level with
uneven light, a strong column profile (streaks), vertically stretched mottling and grain;
in more than half the images a black off-sheet region on the left or right, from a sliver to
almost the whole image; then a gamma curve, sometimes a blur, sensor noise, JPEG.

The held-out world (``HELD_OUT``) has the same label geometry and draws every look from ranges
the realistic one (``REALISTIC``) never uses, so a model trained on one can be checked on looks
it has never seen:

| range | realistic | held-out |
|---|---|---|
| sheet grey level (exposure), log-uniform | 60-132 | 32-60 or 132-180 |
| uneven light, relative std | 0.06-0.2 | 0.2-0.28 |
| streaks: column-profile relative std | 0.1-0.24 | 0.24-0.34 |
| grain, std in grey levels | 5-7.5 | 7.5-11 |
| texture scale: grain blur sigma (px) | 0-0.3 | 0.5-1.0 |
| off-sheet black level (grey) | 0-5 | 5-9 |
| gamma, log-uniform | 0.85-1.2 | 0.65-0.85 or 1.2-1.45 |
| blur sigma (px), when blurred (15%) | 0.4-1.0 | 1.0-1.6 |
| sensor noise (grey levels) | 0-2.5 | 2.5-5 |
| JPEG quality (``world.WORLDS``) | 72-88 | 40-69 |

Only the off-sheet share, the light's slope, the mottling and the defects' own strengths are
drawn from the same ranges in both.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.config import HEIGHT, WIDTH

Ranges = tuple[tuple[float, float], ...]  # one or more intervals, drawn by their lengths


@dataclass(frozen=True)
class Sheet:
    """The ranges one image's sheet and camera are drawn from (``render_image``), in order."""

    brightness: Ranges = ((60.0, 132.0),)  # the sheet's grey level, log-uniform
    lighting: Ranges = ((0.06, 0.2),)      # smooth uneven light, relative to the grey level
    streaks: Ranges = ((0.1, 0.24),)       # column profile (vertical streaks), relative std
    grain: Ranges = ((5.0, 7.5),)          # pixel grain, std in grey levels
    grain_blur: Ranges = ((0.0, 0.3),)     # texture scale: sigma (px) of the grain's blur
    off_sheet: Ranges = ((0.0, 5.0),)      # grey level of the black beyond the sheet
    gamma: Ranges = ((0.85, 1.2),)         # exponent, log-uniform
    p_blur: float = 0.15
    blur: Ranges = ((0.4, 1.0),)           # sigma in pixels
    noise: Ranges = ((0.0, 2.5),)          # sensor noise, grey levels


REALISTIC = Sheet()
HELD_OUT = Sheet(brightness=((32.0, 60.0), (132.0, 180.0)), lighting=((0.2, 0.28),),
                 streaks=((0.24, 0.34),), grain=((7.5, 11.0),), grain_blur=((0.5, 1.0),),
                 off_sheet=((5.0, 9.0),), gamma=((0.65, 0.85), (1.2, 1.45)),
                 blur=((1.0, 1.6),), noise=((2.5, 5.0),))


def draw(rng: np.random.Generator, ranges: Ranges, log: bool = False) -> float:
    """One value from a union of intervals, each as likely as its (log-)length."""
    bounds = np.log(np.array(ranges)) if log else np.array(ranges, dtype=float)
    lengths = bounds[:, 1] - bounds[:, 0]
    low, high = bounds[rng.choice(len(ranges), p=lengths / lengths.sum())]
    value = rng.uniform(low, high)
    return float(np.exp(value) if log else value)


# Each class's size quantiles, with 0% and 100% ends added: log-space inverse CDFs.


def _smooth(rng: np.random.Generator, rows: int, cols: int, sigma: float,
            size: tuple[int, int] = (HEIGHT, WIDTH)) -> np.ndarray:
    """Gaussian noise of std sigma on a (rows, cols) grid, upsampled smoothly to size (h, w)."""
    grid = rng.standard_normal((rows, cols), dtype=np.float32) * np.float32(sigma)
    return cv2.resize(grid, size[::-1], interpolation=cv2.INTER_CUBIC)


def _column_profile(rng: np.random.Generator, strength: float) -> np.ndarray:
    """(WIDTH,) relative brightness of each column: broad bands, narrow streaks and a few
    sharp lines, scaled to std ``strength``."""
    profile = sum(_smooth(rng, 1, cols, weight, (1, WIDTH))[0]
                  for cols, weight in ((6, 1.0), (40, 0.8), (250, 0.5), (WIDTH, 0.15)))
    sharp = rng.standard_normal(WIDTH).astype(np.float32) * (rng.random(WIDTH) < 0.03)
    profile += cv2.GaussianBlur(sharp[None, :], (5, 1), 0)[0] * np.float32(1.5)
    return profile * np.float32(strength / max(float(profile.std()), 1e-6))


def _texture(rng: np.random.Generator, sheet: Sheet) -> tuple[np.ndarray, float]:
    """Bare steel, float grey levels, and its grey level: uneven light, a column profile,
    vertically stretched mottling (all relative to the grey level) and grain."""
    level = draw(rng, sheet.brightness, log=True)
    light = draw(rng, sheet.lighting)
    relative = _smooth(rng, 3, 8, light)
    relative += np.linspace(-1, 1, HEIGHT, dtype=np.float32)[:, None] * np.float32(
        rng.uniform(-1.5, 1.5) * light)  # brighter or darker towards one side of the strip
    relative += _column_profile(rng, draw(rng, sheet.streaks))[None, :]
    relative += _smooth(rng, 16, 400, 0.035)  # mottling, stretched along the columns
    grain_std, blur = draw(rng, sheet.grain), draw(rng, sheet.grain_blur)
    grain = rng.standard_normal((HEIGHT, WIDTH), dtype=np.float32)
    if blur > 0.05:
        grain = cv2.GaussianBlur(grain, (0, 0), blur)
        grain /= max(float(grain.std()), 1e-6)
    relative += grain * np.float32(grain_std / level)
    return np.float32(level) * (1 + relative), level


def _inside(polys: list[np.ndarray], pad: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The polygons filled with 1.0 in their bounding box grown by pad, and that box."""
    points = np.concatenate(polys)
    x0, y0 = np.maximum(np.floor(points.min(0)).astype(int) - pad, 0)
    x1, y1 = np.minimum(np.ceil(points.max(0)).astype(int) + pad + 1, (WIDTH, HEIGHT))
    inside = np.zeros((y1 - y0, x1 - x0), np.float32)
    for poly in polys:  # one at a time: fillPoly makes holes of overlaps
        cv2.fillPoly(inside, [np.round(poly - (x0, y0)).astype(np.int32)], 1.0)
    return inside, (int(x0), int(y0), int(x1), int(y1))


def _draw_pits(inside: np.ndarray, defect: dict, rng: np.random.Generator) -> np.ndarray:
    """Class 1: a shaded patch peppered with small sharp pits (relative change)."""
    soft = cv2.GaussianBlur(inside, (0, 0), 2.0)
    pits = (rng.random(inside.shape) < rng.uniform(0.02, 0.06)).astype(np.float32)
    pits = cv2.GaussianBlur(pits, (0, 0), rng.uniform(0.8, 1.5)) * inside
    pits /= max(float(pits.max()), 1e-6)
    sign = -1.0 if defect["dark"] else 1.0
    return sign * (rng.uniform(0.15, 0.3) * soft + rng.uniform(0.8, 1.4) * pits)


def _draw_marks(inside: np.ndarray, defect: dict, rng: np.random.Generator) -> np.ndarray:
    """Class 2: a line darkest (or brightest) along its middle, uneven along its length."""
    width = max(2.0, float(inside.sum(1).max()) / 6)
    core = cv2.GaussianBlur(inside, (0, 0), sigmaX=width, sigmaY=1.0) * inside
    core /= max(float(core.max()), 1e-6)
    along = 1 + _smooth(rng, max(2, inside.shape[0] // 24), 2, 0.3, inside.shape)
    sign = -1.0 if defect["dark"] else 1.0
    return sign * rng.uniform(0.35, 0.6) * core * along


def _draw_bands(inside: np.ndarray, defect: dict, rng: np.random.Generator) -> np.ndarray:
    """Class 3: a brighter or darker patch of broken vertical scratches."""
    soft = cv2.GaussianBlur(inside, (0, 0), 1.5)
    stripes = cv2.GaussianBlur(rng.standard_normal((1, inside.shape[1])).astype(np.float32),
                               (0, 0), 1.0)
    stripes /= max(float(stripes.std()), 1e-6)
    rows, cols = max(2, inside.shape[0] // 40), max(2, inside.shape[1] // 30)
    broken = np.clip(0.6 + _smooth(rng, rows, cols, 0.6, inside.shape), 0, 1)
    patch = (1 if defect["bright"] else -1) * rng.uniform(0.12, 0.25)
    patch = patch * (1 + _smooth(rng, rows, cols, 0.3, inside.shape))
    return soft * (patch + rng.uniform(0.08, 0.16) * stripes * broken)


def _draw_blobs(inside: np.ndarray, defect: dict, rng: np.random.Generator) -> np.ndarray:
    """Class 4: a dark rough blob, mottled."""
    soft = cv2.GaussianBlur(inside, (0, 0), 2.5)
    rows, cols = max(2, inside.shape[0] // 6), max(2, inside.shape[1] // 6)
    rough = _smooth(rng, rows, cols, 1.0, inside.shape)
    rough += 0.4 * rng.standard_normal(inside.shape, np.float32)
    return soft * -(rng.uniform(0.3, 0.5) * (1 + 0.3 * rough))


def _off_sheet(img: np.ndarray, off_sheet: tuple, rng: np.random.Generator, level: float,
               sheet: Sheet) -> np.ndarray:
    """Black beyond the sheet's edge (a straight, slightly slanted line), a bright rim on it."""
    on_left, x_top, x_bottom = off_sheet
    edge = np.linspace(x_top, x_bottom, HEIGHT, dtype=np.float32)[:, None]
    beyond = np.arange(WIDTH, dtype=np.float32)[None, :] - edge
    beyond = -beyond if on_left else beyond  # > 0 off the sheet
    width = np.float32(rng.uniform(0.7, 3.0))
    on_sheet = np.clip(0.5 - beyond / width, 0, 1)
    rim = np.exp(-np.square((beyond + 4) / 3)) * np.float32(level * rng.uniform(0, 0.5))
    floor = draw(rng, sheet.off_sheet) + rng.standard_normal(img.shape, np.float32)
    return (img + rim) * on_sheet + np.maximum(floor, 0) * (1 - on_sheet)


def render_image(layout: dict, rng: np.random.Generator, contrast: float = 1.0,
                 sheet: Sheet = REALISTIC) -> np.ndarray:
    """The (H, W) uint8 grey image of a realistic layout, its look drawn from ``sheet``;
    ``contrast`` scales every defect's strength."""
    img, level = _texture(rng, sheet)
    drawers = (_draw_pits, _draw_marks, _draw_bands, _draw_blobs)
    for defect in layout["defects"]:
        inside, (x0, y0, x1, y1) = _inside(defect["polys"], 6)
        change = drawers[defect["cls"] - 1](inside, defect, rng)
        img[y0:y1, x0:x1] *= 1 + change.astype(np.float32) * np.float32(contrast)
    if layout["off_sheet"] is not None:
        img = _off_sheet(img, layout["off_sheet"], rng, level, sheet)
    img = 255 * (np.clip(img, 0, 255) / 255) ** np.float32(draw(rng, sheet.gamma, log=True))
    if rng.random() < sheet.p_blur:
        img = cv2.GaussianBlur(img, (0, 0), draw(rng, sheet.blur))
    img += rng.standard_normal(img.shape, np.float32) * np.float32(draw(rng, sheet.noise))
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)
