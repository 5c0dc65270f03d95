"""How real a dataset looks: quantiles of label geometry per class and of image appearance,
the measures of ``../shared/REAL_DATA.md``, side by side with the real competition's.

Label measures, per mask (one image, one class): its area, its number of 8-connected
components, the median area of those components, the height and width of its bounding box;
quantiles 2 / 10 / 50 / 90 / 98% per class. Image measures, per grey image: the mean, the std
of the grey levels, the share of pixels darker than 10, the std of the Laplacian (fine
texture) and the std of the column means (streaks, edges); quantiles 5 / 25 / 50 / 75 / 95%.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import cv2
import numpy as np

from pipeline.config import CLASS_IDS
from pipeline.data import rle
from pipeline.data.images import list_images
from pipeline.data.labels import read_labels

LABEL_QUANTILES = (2, 10, 50, 90, 98)
IMAGE_QUANTILES = (5, 25, 50, 75, 95)
LABEL_MEASURES = ("area", "components", "median_component", "h", "w")
IMAGE_MEASURES = ("mean", "std", "dark_share", "laplacian_std", "column_std")
DARK = 10  # grey levels below this are off the sheet or unlit

# The real competition's quantiles (REAL_DATA.md): 5,908 real masks, 95 real images.
REAL_LABELS = {
    1: {"area": (526, 1109, 3514, 9158, 14752), "components": (1, 1, 2, 9, 13),
        "median_component": (462, 590, 1126, 3840, 6625), "h": (32, 54, 173, 255, 256),
        "w": (17, 24, 60, 1045, 1354)},
    2: {"area": (656, 1110, 2944, 5673, 8575), "components": (1, 1, 1, 2, 3),
        "median_component": (656, 931, 2315, 4797, 7234), "h": (74, 103, 208, 256, 256),
        "w": (11, 13, 24, 45, 76)},
    3: {"area": (1058, 2650, 11533, 59034, 156487), "components": (1, 1, 2, 6, 9),
        "median_component": (182, 1100, 4644, 20866, 72999), "h": (46, 88, 254, 256, 256),
        "w": (17, 29, 296, 1216, 1588)},
    4: {"area": (2882, 6830, 25346, 70387, 108576), "components": (1, 1, 2, 4, 8),
        "median_component": (1125, 2643, 11799, 40336, 84075), "h": (58, 89, 204, 256, 256),
        "w": (69, 117, 348, 1069, 1483)},
}
REAL_IMAGES = {"mean": (7.4, 35, 74, 97, 125), "std": (13.7, 22.6, 29.1, 40, 53.7),
               "dark_share": (0, 0, 0.06, 0.60, 0.88),
               "laplacian_std": (4.5, 11.4, 17, 23.7, 31.7),
               "column_std": (9.5, 16.4, 22.2, 34, 51)}


def mask_measures(mask: np.ndarray) -> dict[str, float]:
    """The five label measures of one non-empty (H, W) mask (8-connected components)."""
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA]
    ys, xs = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    return {"area": float(areas.sum()), "components": float(n - 1),
            "median_component": float(np.median(areas)),
            "h": float(ys[-1] - ys[0] + 1), "w": float(xs[-1] - xs[0] + 1)}


def image_values(gray: np.ndarray) -> dict[str, float]:
    """The five image measures of one (H, W) uint8 grey image."""
    values = gray.astype(np.float64)
    return {"mean": float(values.mean()), "std": float(values.std()),
            "dark_share": float((gray < DARK).mean()),
            "laplacian_std": float(cv2.Laplacian(values, cv2.CV_64F).std()),
            "column_std": float(values.mean(0).std())}


def _quantiles(rows: list[dict[str, float]], names: tuple[str, ...],
               qs: tuple[int, ...]) -> dict[str, tuple[float, ...]]:
    """measure -> its quantiles qs (percent) over rows; NaNs where rows is empty."""
    if not rows:
        return {name: tuple(float("nan") for _ in qs) for name in names}
    table = np.array([[row[name] for name in names] for row in rows])
    return {name: tuple(float(v) for v in np.percentile(table[:, j], qs))
            for j, name in enumerate(names)}


def label_measures(masks_by_class: Mapping[int, Iterable[np.ndarray]]
                   ) -> dict[int, dict[str, tuple[float, ...]]]:
    """class -> measure -> its 2/10/50/90/98% quantiles over the class's non-empty masks, plus
    ``"masks"``: how many there were."""
    out = {}
    for class_id, masks in masks_by_class.items():
        rows = [mask_measures(m) for m in masks if m.any()]
        out[class_id] = _quantiles(rows, LABEL_MEASURES, LABEL_QUANTILES) | {"masks": len(rows)}
    return out


def image_measures(gray_images: Iterable[np.ndarray]) -> dict[str, tuple[float, ...]]:
    """measure -> its 5/25/50/75/95% quantiles over (H, W) uint8 grey images."""
    return _quantiles([image_values(g) for g in gray_images], IMAGE_MEASURES, IMAGE_QUANTILES)


def read_gray(folder: Path, limit: int | None = None) -> list[np.ndarray]:
    """The first ``limit`` (all: None) JPEGs of a folder, sorted by name, as grey images."""
    grays = []
    for name in list_images(folder)[:limit]:
        gray = cv2.imread(str(Path(folder) / name),    # pixels as stored, as read_image
                          cv2.IMREAD_GRAYSCALE | cv2.IMREAD_IGNORE_ORIENTATION)
        if gray is None:
            raise ValueError(f"{Path(folder) / name} cannot be read as an image: replace or "
                             "remove it")
        grays.append(gray)
    return grays


def dataset_measures(data_dir: Path, limit: int | None = None) -> tuple[dict, dict]:
    """(label_measures, image_measures) of a competition-layout folder: every mask of its
    train.csv and the first ``limit`` images of train_images/."""
    table = read_labels(Path(data_dir) / "train.csv")
    masks = {c: (rle.decode(r) for r in table.loc[table["ClassId"] == c, "EncodedPixels"])
             for c in CLASS_IDS}
    return label_measures(masks), image_measures(read_gray(Path(data_dir) / "train_images",
                                                           limit))


def _row(name: str, real: tuple, ours: tuple) -> str:
    """One table line: the measure, the real quantiles, ours."""
    def cells(values: tuple) -> str:
        return " / ".join(f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}" for v in values)
    return f"| {name} | {cells(real)} | {cells(ours)} |"


def report(labels: dict, images: dict) -> str:
    """A Markdown table of the measures against the real competition's."""
    lines = ["| measure | real | this dataset |", "|---|---|---|"]
    for class_id in CLASS_IDS:
        lines.append(f"| class {class_id}: masks | | {labels[class_id]['masks']} |")
        lines += [_row(f"class {class_id} {name}", REAL_LABELS[class_id][name],
                       labels[class_id][name]) for name in LABEL_MEASURES]
    lines += [_row(name, REAL_IMAGES[name], images[name]) for name in IMAGE_MEASURES]
    return "\n".join(lines)
