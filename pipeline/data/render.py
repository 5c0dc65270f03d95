"""Synthetic steel: one image's defect layout (labels) and its rendering as a grey image.

A layout holds an optional dark sheet edge and up to two defect classes, each as polygons
(the masks) plus the geometry that draws it; ``render_image`` turns a layout into pixels.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from pipeline.config import HEIGHT, N_CLASSES, WIDTH

# Class draw weights, solved so that, with P_DEFECT and P_TWO_CLASSES, an image holds class
# 1..4 with probability 7.1%, 2.0%, 41% and 6.4%, as in the real train set.
CLASS_WEIGHTS = (0.111, 0.031, 0.757, 0.101)
# "balanced": every class as likely as the others, for a demo whose every class can be learnt
# and scored; "real": the real train set's class frequencies.
CLASS_MIXES = {"real": CLASS_WEIGHTS, "balanced": (0.25, 0.25, 0.25, 0.25)}
P_DEFECT, P_TWO_CLASSES, P_DARK_EDGE = 0.53, 0.06, 0.15


def _pits(rng: np.random.Generator, lo: float, hi: float) -> dict:
    """Class 1: one to three clusters of small dark or bright pits, each boxed coarsely."""
    spots, polys = [], []
    for _ in range(int(rng.integers(1, 4))):
        n = int(rng.integers(2, 8))
        cx, cy = rng.uniform(lo + 30, hi - 30), rng.uniform(25, HEIGHT - 25)
        xy = np.column_stack([cx + rng.normal(0, 6, n), cy + rng.normal(0, 12, n)])
        radius = rng.uniform(2.0, 5.0, n)
        spots.append(np.column_stack([xy, radius, np.sign(rng.random(n) - 0.4)]))
        (x0, y0), (x1, y1) = xy.min(0) - radius.max() - 5, xy.max(0) + radius.max() + 5
        polys.append(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]) + rng.normal(0, 2, (4, 2)))
    return {"cls": 1, "polys": polys, "spots": np.concatenate(spots)}


def _marks(rng: np.random.Generator, lo: float, hi: float) -> dict:
    """Class 2: one or two thin, slightly wavy vertical marks."""
    lines, polys = [], []
    for _ in range(int(rng.integers(1, 3))):
        length = rng.uniform(40, 200)
        y = np.linspace(0, length, 6) + rng.uniform(0, HEIGHT - length)
        x = rng.uniform(lo + 20, hi - 20) + np.cumsum(rng.normal(0, 1.5, 6))
        lines.append(np.column_stack([x, y]))
        pad = rng.uniform(5, 10)
        polys.append(np.concatenate([np.column_stack([x - pad, y]),
                                     np.column_stack([x + pad, y])[::-1]]))
    return {"cls": 2, "polys": polys, "lines": lines, "thickness": int(rng.integers(2, 4))}


def _bands(rng: np.random.Generator, lo: float, hi: float) -> dict:
    """Class 3: one to three long scratch bands, vertical or diagonal along the strip."""
    bands, polys = [], []
    for _ in range(int(rng.choice([1, 2, 3], p=[0.7, 0.25, 0.05]))):
        if rng.random() < 0.55:  # vertical streak band across the strip
            half = rng.uniform(8, 55)
            x0 = rng.uniform(lo + half, hi - half)
            x1 = np.clip(x0 + rng.normal(0, 25), lo + half, hi - half)
            y0, y1 = -5.0, HEIGHT + 5.0
            if rng.random() < 0.3:  # only part of the strip's height
                y0 = rng.uniform(-20, HEIGHT / 2)
                y1 = rng.uniform(y0 + 80, HEIGHT + 20)
            p0, p1 = np.array([x0, y0]), np.array([x1, y1])
        else:  # long diagonal scratch band along the rolling direction
            half = rng.uniform(12, 45)
            length = rng.uniform(min(200, 0.5 * (hi - lo)), min(900, hi - lo - 20))
            x0 = rng.uniform(lo + 10, hi - 10 - length)
            p0 = np.array([x0, rng.uniform(20, HEIGHT - 20)])
            p1 = np.array([x0 + length, rng.uniform(20, HEIGHT - 20)])
        normal = np.array([p0[1] - p1[1], p1[0] - p0[0]]) / np.linalg.norm(p1 - p0)
        corners = np.array([p0 + half * normal, p1 + half * normal,
                            p1 - half * normal, p0 - half * normal])
        polys.append(corners + rng.normal(0, 2.0, corners.shape))
        bands.append((p0, p1, half))
    return {"cls": 3, "polys": polys, "bands": bands}


def _blobs(rng: np.random.Generator, lo: float, hi: float) -> dict:
    """Class 4: one or two large dark rough blobs, outlined by their convex hull."""
    shapes, polys = [], []
    for _ in range(int(rng.choice([1, 2], p=[0.8, 0.2]))):
        rx, ry = rng.uniform(40, min(200, (hi - lo) / 3)), rng.uniform(40, 120)
        cx, cy = rng.uniform(lo + rx, hi - rx), rng.uniform(ry / 2, HEIGHT - ry / 2)
        n = int(rng.integers(9, 15))
        angle = np.sort(rng.uniform(0, 2 * np.pi, n))
        scale = rng.uniform(0.55, 1.0, n)
        shapes.append(np.column_stack([cx + rx * scale * np.cos(angle),
                                       cy + ry * scale * np.sin(angle)]))
        hull = cv2.convexHull(shapes[-1].astype(np.float32))[:, 0, :].astype(np.float64)
        polys.append(hull + rng.normal(0, 2.0, hull.shape))
    return {"cls": 4, "polys": polys, "shapes": shapes}


def sample_layout(rng: np.random.Generator, class_weights: tuple = CLASS_WEIGHTS,
                  p_dark_edge: float = P_DARK_EDGE) -> dict:
    """Draw one image's labels: optional dark sheet edge and defect shapes, nothing rendered.

    Returns ``{"edge": None | (on_left, width_px), "defects": [{"cls": 1..4, "polys": [...],
    ...drawing geometry}]}``; the polygons, filled, are the masks (see ``layout_masks``).
    """
    lo, hi, edge = 0.0, float(WIDTH), None
    if rng.random() < p_dark_edge:
        edge = (bool(rng.random() < 0.5), int(np.exp(rng.uniform(np.log(4), np.log(500)))))
        lo, hi = (edge[1] + 8.0, hi) if edge[0] else (lo, WIDTH - edge[1] - 8.0)
    defects = place_defects(rng, (_pits, _marks, _bands, _blobs), class_weights, lo, hi)
    return {"edge": edge, "defects": defects}


def place_defects(rng: np.random.Generator, makers: tuple, class_weights: tuple,
                  lo: float, hi: float) -> list:
    """No defect, or one or two classes drawn by ``class_weights``, each drawn by its maker
    (``makers[c - 1](rng, lo, hi)``) in its own part of the columns ``lo..hi``; polygons
    clipped to that span. The worlds' layouts share it, so their random streams are alike."""
    classes = []
    if rng.random() < P_DEFECT:
        n = 2 if rng.random() < P_TWO_CLASSES else 1
        weights = np.array(class_weights)
        classes = list(rng.choice(N_CLASSES, size=n, replace=False, p=weights / weights.sum()) + 1)
    ranges = [(lo, hi)]
    if len(classes) == 2:  # keep the two classes apart so that they rarely overlap
        cut = lo + (hi - lo) * rng.uniform(0.35, 0.65)
        ranges = [(lo, cut - 10), (cut + 10, hi)][::int(rng.choice([1, -1]))]
    defects = [makers[c - 1](rng, *r) for c, r in zip(classes, ranges)]
    for defect in defects:
        defect["polys"] = [np.clip(p, (lo, 0), (hi - 1, HEIGHT - 1)) for p in defect["polys"]]
    return defects


def layout_masks(layout: dict) -> np.ndarray:
    """The (N_CLASSES, H, W) uint8 masks of a layout: its polygons filled with 1."""
    masks = np.zeros((N_CLASSES, HEIGHT, WIDTH), dtype=np.uint8)
    for defect in layout["defects"]:
        for poly in defect["polys"]:  # one at a time: fillPoly makes holes of overlaps
            cv2.fillPoly(masks[defect["cls"] - 1], [np.round(poly).astype(np.int32)], 1)
    return masks


def _smooth_noise(rng: np.random.Generator, rows: int, cols: int, sigma: float,
                  size: tuple[int, int] = (HEIGHT, WIDTH)) -> np.ndarray:
    """Gaussian noise on a (rows, cols) grid, upsampled smoothly to size (height, width)."""
    grid = rng.standard_normal((rows, cols), dtype=np.float32) * np.float32(sigma)
    return cv2.resize(grid, size[::-1], interpolation=cv2.INTER_CUBIC)


def _crop(polys: list[np.ndarray], pad: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the polygons' bounding box grown by pad, within the image."""
    points = np.concatenate(polys)
    x0, y0 = np.maximum(np.floor(points.min(0)).astype(int) - pad, 0)
    x1, y1 = np.minimum(np.ceil(points.max(0)).astype(int) + pad + 1, (WIDTH, HEIGHT))
    return int(x0), int(y0), int(x1), int(y1)


def _texture(rng: np.random.Generator) -> np.ndarray:
    """Bare steel: grey level, uneven lighting, vertical streaks, mottling and grain."""
    img = _smooth_noise(rng, 2, 6, rng.uniform(5, 12)) + np.float32(rng.uniform(80, 112))
    img += _smooth_noise(rng, 6, WIDTH, rng.uniform(3, 7))  # column-wise streaking
    strong = rng.standard_normal(WIDTH).astype(np.float32) * (rng.random(WIDTH) < 0.02)
    img += cv2.GaussianBlur(strong[None, :] * np.float32(12), (7, 1), 0)
    img += _smooth_noise(rng, 48, 300, 3.0)  # mottling
    img += rng.standard_normal((HEIGHT, WIDTH), dtype=np.float32) * np.float32(4.0)
    return img


def _draw_pits(img: np.ndarray, defect: dict, rng: np.random.Generator, contrast: float) -> None:
    """Class 1: add small blurred dark or bright ellipses."""
    layer = np.zeros_like(img)
    for x, y, r, sign in defect["spots"]:
        axes = (max(1, round(r)), max(1, round(r * rng.uniform(1.0, 2.0))))
        cv2.ellipse(layer, (round(x), round(y)), axes, 0, 0, 360, float(sign), -1, cv2.LINE_AA)
    img += cv2.GaussianBlur(layer, (5, 5), 1.0) * np.float32(rng.uniform(55, 90) * contrast)


def _draw_marks(img: np.ndarray, defect: dict, rng: np.random.Generator, contrast: float) -> None:
    """Class 2: darken thin anti-aliased polylines."""
    layer = np.zeros_like(img)
    lines = [np.round(line).astype(np.int32) for line in defect["lines"]]
    cv2.polylines(layer, lines, False, 1.0, defect["thickness"], cv2.LINE_AA)
    img -= cv2.GaussianBlur(layer, (3, 3), 0.8) * np.float32(rng.uniform(50, 75) * contrast)


def _draw_bands(img: np.ndarray, defect: dict, rng: np.random.Generator, contrast: float) -> None:
    """Class 3: inside each band, scratches along its axis, broken, over patches."""
    for (p0, p1, half), poly in zip(defect["bands"], defect["polys"]):
        x0, y0, x1, y1 = _crop([poly], 4)
        size = (y1 - y0, x1 - x0)
        inside = np.zeros(size, np.float32)
        cv2.fillPoly(inside, [np.round(poly - (x0, y0)).astype(np.int32)], 1.0)
        ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        axis = (p1 - p0) / np.linalg.norm(p1 - p0)
        across = (xs - p0[0]) * axis[1] - (ys - p0[1]) * axis[0] + half + 2
        profile = cv2.GaussianBlur(rng.standard_normal((1, int(2 * half) + 5)), (0, 0), 1.2)[0]
        profile /= profile.std()
        profile *= np.where(np.abs(profile) > 1.0, 1.5, 0.3)  # a few sharp scratches
        stripes = profile.astype(np.float32)[np.clip(across, 0, profile.size - 1).astype(int)]
        grid = (max(2, size[0] // 64), max(2, size[1] // 40))
        broken = np.clip(0.6 + _smooth_noise(rng, *grid, 0.6, size), 0, 1)  # scratches come, go
        patches = _smooth_noise(rng, 2 * grid[0] + 2, 2 * grid[1], 0.5, size)
        patches += np.float32(rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1))
        value = (stripes * broken + patches) * np.float32(rng.uniform(22, 35) * contrast)
        fade = np.clip((half + 2 - np.abs(across - half - 2)) / np.float32(0.3 * half), 0, 1)
        img[y0:y1, x0:x1] += cv2.GaussianBlur(inside, (5, 5), 1.5) * fade * value


def _draw_blobs(img: np.ndarray, defect: dict, rng: np.random.Generator, contrast: float) -> None:
    """Class 4: darken the blob shapes with a rough, mottled texture."""
    x0, y0, x1, y1 = _crop(defect["shapes"], 8)
    size = (y1 - y0, x1 - x0)
    inside = np.zeros(size, np.float32)
    for shape in defect["shapes"]:  # one at a time: fillPoly makes holes of overlaps
        cv2.fillPoly(inside, [np.round(shape - (x0, y0)).astype(np.int32)], 1.0)
    inside = cv2.GaussianBlur(inside, (9, 9), 2.5)
    rough = _smooth_noise(rng, max(2, size[0] // 4), max(2, size[1] // 4), 1.0, size)
    rough += 0.5 * rng.standard_normal(size, np.float32)
    darken = np.float32(-rng.uniform(40, 65)) + 22 * rough
    img[y0:y1, x0:x1] += inside * darken * np.float32(contrast)


def render_image(layout: dict, rng: np.random.Generator, contrast: float = 1.0,
                 look: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None
                 ) -> np.ndarray:
    """The (H, W) uint8 grey image of a layout; `contrast` scales every defect's strength,
    `look` (e.g. ``world.apply_look``) changes the float image before it is quantised."""
    img = _texture(rng)
    drawers = (_draw_pits, _draw_marks, _draw_bands, _draw_blobs)
    for defect in layout["defects"]:
        drawers[defect["cls"] - 1](img, defect, rng, contrast)
    if layout["edge"] is not None:
        left, width = layout["edge"]
        dark = np.zeros((1, WIDTH), np.float32)
        dark[0, slice(0, width) if left else slice(WIDTH - width, WIDTH)] = 1.0
        dark = cv2.GaussianBlur(dark, (5, 1), 0)
        floor = rng.uniform(4, 14) + 2 * rng.standard_normal(img.shape, np.float32)
        img = img * (1 - dark) + floor * dark
    if look is not None:
        img = look(img, rng)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)
