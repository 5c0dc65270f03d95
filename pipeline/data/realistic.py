"""The realistic worlds' labels: label geometry calibrated to the real competition's
quantiles (``../shared/REAL_DATA.md``, measured by ``realism``).

Each mask's size is drawn from the real quantiles of its class (area, number of
8-connected components, bounding-box height and width, interpolated in log space between the
2/10/50/90/98% points), the four draws coupled through one latent size so that a wide mask is
also a large one; the mask is then built as that many pieces spread over that box: class 1
tall pits spread along the sheet, class 2 thin vertical lines, class 3 vertical bands (full
height in half the masks, often fragmented), class 4 rough blobs. Class frequencies are the
classic layout's (``render.P_DEFECT``, ``P_TWO_CLASSES``, the ``class_mix`` weights).

The looks (sheet, camera, the held-out ranges) are in ``realistic_look``.
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.config import HEIGHT, N_CLASSES, WIDTH
from pipeline.data.realism import LABEL_MEASURES, LABEL_QUANTILES, REAL_LABELS
from pipeline.data.render import CLASS_WEIGHTS, place_defects

P_OFF_SHEET = 0.6    # images with a black off-sheet region (real: over half)
# Per class, the correlation of a mask's area, height and width through its latent size, and
# that of its number of components (large class 4 blobs are few, large class 1 sets many).
COUPLING = {1: 0.85, 2: 0.85, 3: 0.8, 4: 0.85}
COMPONENTS_COUPLING = {1: 0.85, 2: 0.5, 3: 0.5, 4: 0.3}
# The off-sheet share of the image's width: its inverse CDF (probabilities, shares), from the
# real quantiles of the share of pixels below 10 among images that have such a region.
OFF_SHEET_SHARES = ((0.0, 0.12, 0.56, 0.91, 1.0), (0.003, 0.07, 0.68, 0.93, 0.98))


_PROBS = np.array([0.0, *LABEL_QUANTILES, 100.0]) / 100
_ENDS = {"area": (0.6, 1.3), "components": (1.0, 1.25), "h": (0.7, 1.0), "w": (0.7, 1.05)}


def _inverse_cdf(class_id: int, name: str) -> np.ndarray:
    """log of the class's quantile points of one measure at _PROBS."""
    points = np.array(REAL_LABELS[class_id][name], dtype=float)
    low, high = _ENDS[name]
    ends = [points[0] * low, min(points[-1] * high, HEIGHT if name == "h" else 1e9)]
    return np.log(np.array([ends[0], *points, ends[1]]))


_SIZE_MEASURES = ("area", "components", "h", "w")
_LOG_QUANTILES = {c: {m: _inverse_cdf(c, m) for m in _SIZE_MEASURES} for c in REAL_LABELS}
assert set(_SIZE_MEASURES) <= set(LABEL_MEASURES)


def _sizes(rng: np.random.Generator, class_id: int) -> dict[str, float]:
    """A mask's target area, components, box height and width, coupled by one latent size."""
    latent = rng.standard_normal()
    own = rng.standard_normal(len(_SIZE_MEASURES))
    out = {}
    for name, e in zip(_SIZE_MEASURES, own):
        rho = (COMPONENTS_COUPLING if name == "components" else COUPLING)[class_id]
        z = rho * latent + math.sqrt(1 - rho ** 2) * e
        u = 0.5 * (1 + math.erf(z / math.sqrt(2)))
        out[name] = float(np.exp(np.interp(u, _PROBS, _LOG_QUANTILES[class_id][name])))
    out["components"] = max(1, int(round(out["components"])))
    return out


def _band(rng: np.random.Generator, x_left: float, width: float, y0: float, y1: float,
          wobble: float, drift: float = 0.0) -> np.ndarray:
    """A vertical band's polygon: two wobbly sides from y0 to y1, width apart, the band
    slanting by drift px from its top to its bottom."""
    k = 10
    ys = np.linspace(y0, y1, k)
    left = x_left + np.linspace(0, drift, k) + np.cumsum(rng.normal(0, wobble, k))
    right = left + width * np.clip(1 + np.cumsum(rng.normal(0, 0.08, k)), 0.4, 1.6)
    return np.concatenate([np.column_stack([left, ys]), np.column_stack([right, ys])[::-1]])


def _blob(rng: np.random.Generator, cx: float, cy: float, w: float, h: float,
          rough: float) -> np.ndarray:
    """A rough closed outline about (cx, cy) within its w x h box (a perturbed ellipse)."""
    angle = np.linspace(0, 2 * np.pi, 24, endpoint=False) + rng.uniform(0, 0.2, 24)
    radius = np.ones(24)
    for k in (2, 3, 5):
        radius += rough / k * rng.normal() * np.cos(k * angle + rng.uniform(0, 2 * np.pi))
    radius = np.clip(radius / radius.max(), 0.45, 1.0)
    outline = radius[:, None] * np.column_stack([np.cos(angle), np.sin(angle)])
    outline -= (outline.max(0) + outline.min(0)) / 2  # then stretched to fill the box
    return np.array([cx, cy]) + outline / (outline.max(0) - outline.min(0)) * np.array([w, h])


def _shares(rng: np.random.Generator, n: int, alpha: float = 1.0) -> np.ndarray:
    """n positive shares summing to 1 (a Dirichlet: the smaller alpha, the more unequal)."""
    return rng.dirichlet(np.full(n, alpha))


def _row(rng: np.random.Generator, lo: float, hi: float, box_w: float,
         widths: np.ndarray) -> np.ndarray:
    """The left ends of pieces of these widths side by side, at least 3 px apart, spanning
    box_w (or more, if they need it) placed uniformly within [lo, hi]."""
    n = len(widths)
    gaps = np.zeros(0)
    if n > 1:
        spare = max(box_w - widths.sum(), 3.0 * (n - 1))
        gaps = np.maximum(spare * rng.dirichlet(np.ones(n - 1)), 3.0)
    span = widths.sum() + gaps.sum()
    start = rng.uniform(lo, max(lo, hi - span))
    return start + np.concatenate([[0.0], np.cumsum(widths[:-1] + gaps)])


def _heights_in_box(rng: np.random.Generator, heights: np.ndarray,
                    box_h: float) -> np.ndarray:
    """Tops of pieces of these heights within a box of height box_h placed uniformly in the
    image: one piece at the box's top, one at its bottom, the others anywhere."""
    box_h = float(np.clip(box_h, heights.max(), HEIGHT))
    y0 = rng.uniform(0, HEIGHT - box_h) if box_h < HEIGHT else 0.0
    tops = y0 + rng.random(len(heights)) * (box_h - heights)
    if len(heights) > 1:
        first, last = rng.choice(len(heights), 2, replace=False)
        tops[first], tops[last] = y0, y0 + box_h - heights[last]
    return tops


def _pieces(rng: np.random.Generator, lo: float, hi: float, size: dict, aspect: np.ndarray,
            rough: float, alpha: float = 1.0) -> list[np.ndarray]:
    """Rough blobs of the mask's area split n ways, each of ``aspect`` (height / width), side
    by side over the box of the drawn size."""
    n = size["components"]
    areas = np.maximum(size["area"] * _shares(rng, n, alpha), 150) / 0.76  # outline < box
    w = np.sqrt(areas / aspect)
    h = np.minimum(aspect * w, HEIGHT)
    w = areas / h
    lefts = _row(rng, lo, hi, min(size["w"], hi - lo - 4), w)
    tops = _heights_in_box(rng, h, size["h"])
    return [_blob(rng, x + wi / 2, y + hi_ / 2, wi, hi_, rough)
            for x, y, wi, hi_ in zip(lefts, tops, w, h)]


def _pits(rng: np.random.Generator, lo: float, hi: float) -> dict:
    """Class 1: up to ~13 tall pits spread over a box up to the sheet's width."""
    size = _sizes(rng, 1)
    aspect = np.exp(rng.uniform(np.log(1.5), np.log(4.5), size["components"]))
    return {"cls": 1, "polys": _pieces(rng, lo, hi, size, aspect, 0.25),
            "dark": rng.random() < 0.7}


def _marks(rng: np.random.Generator, lo: float, hi: float) -> dict:
    """Class 2: one thin vertical line, sometimes broken or doubled."""
    size = _sizes(rng, 2)
    n, height = min(size["components"], 3), min(size["h"], HEIGHT)
    stacked = rng.random() < 0.5
    line_w = float(np.clip(size["area"] / (0.95 * height * (1 if stacked else n)), 5, 45))
    y0 = -3.0 if height >= HEIGHT - 2 else rng.uniform(0, HEIGHT - height)
    x = rng.uniform(lo, max(lo, hi - size["w"]))
    polys = []
    for i in range(n):
        if stacked:  # one line broken along its length
            cut = np.linspace(y0, y0 + height + 3, n + 1)
            top, bottom, left = cut[i] + (4 if i else 0), cut[i + 1], x
        else:  # lines side by side
            top, bottom = y0, y0 + height * (rng.uniform(0.5, 1.0) if i else 1.0)
            left = x + i * (line_w + rng.uniform(3, 20))
        polys.append(_band(rng, left, line_w, top, bottom, 0.8))
    return {"cls": 2, "polys": polys, "dark": rng.random() < 0.8}


def _bands(rng: np.random.Generator, lo: float, hi: float) -> dict:
    """Class 3: vertical bands side by side, full height in half the masks."""
    size = _sizes(rng, 3)
    box_w, height = min(size["w"], hi - lo - 4), min(size["h"], HEIGHT)
    n = max(1, min(size["components"], int(box_w // 12)))
    area = min(size["area"], 0.9 * box_w * height)
    heights = height * np.concatenate([[1.0], rng.uniform(0.35, 1.0, n - 1)])
    widths = np.maximum(area * _shares(rng, n, 0.6) / heights, 3)
    if n >= 3 and rng.random() < 0.12:  # one band and its specks (tiny components)
        heights[1:] = rng.uniform(8, 30, n - 1)
        widths[1:] = rng.uniform(3, 9, n - 1)
        widths[0] = area / heights[0]
    # one band narrower than its box slants across it (a long diagonal scratch)
    drift = max(0.0, box_w - widths[0]) * rng.choice([-1, 1]) if n == 1 else 0.0
    lefts = _row(rng, lo + max(0.0, -drift), hi - max(0.0, drift), box_w - abs(drift), widths)
    y_top = -3.0 if height >= HEIGHT - 2 else rng.uniform(0, HEIGHT - height)
    polys = []
    for left, width, h in zip(lefts, widths, heights):
        top = y_top + rng.uniform(0, height - h)
        polys.append(_band(rng, left, width, top, top + h + 3 * (h >= HEIGHT - 2),
                           min(3.0, 0.15 * width), drift))
    return {"cls": 3, "polys": polys, "bright": rng.random() < 0.5}


def _blobs(rng: np.random.Generator, lo: float, hi: float) -> dict:
    """Class 4: one large rough blob and smaller ones beside it."""
    size = _sizes(rng, 4)
    aspect = size["h"] / size["w"] * size["components"] * np.exp(
        rng.normal(0, 0.3, size["components"]))
    return {"cls": 4, "polys": _pieces(rng, lo, hi, size, aspect, 0.35)}


def sample_layout(rng: np.random.Generator, class_weights: tuple = CLASS_WEIGHTS) -> dict:
    """One image's labels: the defect classes (the classic frequencies) and pieces, then an
    optional black off-sheet region on the left or right that stops short of them.

    Returns ``{"off_sheet": None | (on_left, x_top, x_bottom), "defects": [{"cls": 1..4,
    "polys": [...], ...}]}``; the polygons, filled, are the masks (``render.layout_masks``).
    """
    defects = place_defects(rng, (_pits, _marks, _bands, _blobs), class_weights, 0.0, float(WIDTH))
    off_sheet = None
    if rng.random() < P_OFF_SHEET:
        on_left = bool(rng.random() < 0.5)
        if defects:  # the side with more room
            xs = np.concatenate([p[:, 0] for d in defects for p in d["polys"]])
            on_left = bool(xs.min() > WIDTH - 1 - xs.max())
        share = float(np.interp(rng.random(), *OFF_SHEET_SHARES))
        slant = rng.normal(0, 4, 2)
        room = WIDTH  # keep the defects on the sheet
        if defects:
            xs = np.concatenate([p[:, 0] for d in defects for p in d["polys"]])
            room = xs.min() if on_left else WIDTH - 1 - xs.max()
        width = min(share * WIDTH, room - 8 - np.abs(slant).max())
        if width >= 3:
            x = width if on_left else WIDTH - width
            off_sheet = (on_left, x + slant[0], x + slant[1])
    return {"off_sheet": off_sheet, "defects": defects}
