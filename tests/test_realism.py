"""The realism measures on hand-made masks and images, on the real sample (they give the
documented real quantiles), and the realistic world against the real quantiles."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.data import realism, realistic
from pipeline.data.render import CLASS_MIXES, layout_masks
from pipeline.data.synthetic import write_dataset

REAL_SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "real-sample"

# ../shared/REAL_DATA.md, per mask: 2 / 10 / 50 / 90 / 98% (5,908 real masks).
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
# ../shared/REAL_DATA.md, per image: 5 / 25 / 50 / 75 / 95% (95 real images).
REAL_IMAGES = {"mean": (7.4, 35, 74, 97, 125), "std": (13.7, 22.6, 29.1, 40, 53.7),
               "dark_share": (0, 0, 0.06, 0.60, 0.88),
               "laplacian_std": (4.5, 11.4, 17, 23.7, 31.7),
               "column_std": (9.5, 16.4, 22.2, 34, 51)}


def label_close(name: str, ours: float, real: float, tail: bool) -> bool:
    """Components within 35% (or 1); sizes within x1.6 (x2.2 at the 2% and 98% tails)."""
    if name == "components":
        return abs(ours - real) <= max(1.0, 0.35 * real)
    factor = 2.2 if tail else 1.6
    return real / factor <= ours <= real * factor


def image_close(name: str, ours: float, real: float) -> bool:
    """Shares within 0.15; grey levels within 30% or 6 levels."""
    if name == "dark_share":
        return abs(ours - real) <= 0.15
    return abs(ours - real) <= max(6.0, 0.3 * real)


def test_mask_measures_of_hand_made_masks():
    mask = np.zeros((256, 1600), np.uint8)
    mask[10:20, 100:110] = 1    # 100 px
    mask[30:31, 111:112] = 1    # 1 px, touching no other
    mask[200:230, 500:520] = 1  # 600 px
    mask[230, 520] = 1          # diagonal neighbour: the same 8-connected component
    assert realism.mask_measures(mask) == {"area": 702.0, "components": 3.0,
                                           "median_component": 100.0, "h": 221.0, "w": 421.0}
    q = realism.label_measures({1: [mask, np.zeros_like(mask), mask], 2: []})
    assert q[1]["masks"] == 2 and q[1]["area"] == (702.0,) * 5
    assert q[2]["masks"] == 0 and np.isnan(q[2]["area"]).all()


def test_image_measures_of_hand_made_images():
    flat = np.full((256, 1600), 80, np.uint8)
    half = flat.copy()
    half[:, :800] = 0
    assert realism.image_values(flat) == {"mean": 80.0, "std": 0.0, "dark_share": 0.0,
                                          "laplacian_std": 0.0, "column_std": 0.0}
    values = realism.image_values(half)
    assert values["mean"] == 40.0 and values["std"] == 40.0 and values["column_std"] == 40.0
    assert values["dark_share"] == 0.5 and values["laplacian_std"] > 0
    q = realism.image_measures([flat, half])
    assert q["mean"][0] == pytest.approx(42.0) and q["mean"][-1] == pytest.approx(78.0)


def test_an_unreadable_image_is_named(tmp_path):
    cv2.imwrite(str(tmp_path / "a.jpg"), np.full((8, 8), 90, np.uint8))
    (tmp_path / "b.jpg").write_bytes(b"not a jpeg")
    assert len(realism.read_gray(tmp_path, limit=1)) == 1
    with pytest.raises(ValueError, match=r"b\.jpg cannot be read as an image"):
        realism.read_gray(tmp_path)


@pytest.mark.skipif(not (REAL_SAMPLE / "more_test_images").is_dir(), reason="no real sample")
def test_the_real_sample_gives_the_documented_quantiles():
    images = [image for folder in ("more_test_images", "train_images", "test_images")
              for image in realism.read_gray(REAL_SAMPLE / folder)]
    assert len(images) == 95
    measured = realism.image_measures(images)
    for name, real in REAL_IMAGES.items():
        assert measured[name] == pytest.approx(real, rel=0.02, abs=0.005), name
    assert realism.REAL_IMAGES == REAL_IMAGES and realism.REAL_LABELS == REAL_LABELS


def test_realistic_label_geometry_is_within_the_real_quantiles():
    masks = {c: [] for c in REAL_LABELS}
    for i in range(1200):  # layouts only: every class alike, so that each has ~160 masks
        layout = realistic.sample_layout(np.random.default_rng([9, i, 0]),
                                         CLASS_MIXES["balanced"])
        for c, mask in enumerate(layout_masks(layout), 1):
            if mask.any():
                masks[c].append(mask)
    measured = realism.label_measures(masks)
    far = [(c, name, q, round(ours), real)
           for c, table in REAL_LABELS.items() for name, reals in table.items()
           for q, ours, real in zip(realism.LABEL_QUANTILES, measured[c][name], reals)
           if not label_close(name, ours, real, q in (2, 98))]
    assert far == [], far


@pytest.mark.slow
def test_realistic_images_are_within_the_real_quantiles(tmp_path):
    write_dataset(tmp_path, 320, 0, seed=5, quiet=True, workers=2)
    labels, images = realism.dataset_measures(tmp_path)
    far = [(name, q, round(ours, 3), real) for name, reals in REAL_IMAGES.items()
           for q, ours, real in zip(realism.IMAGE_QUANTILES, images[name], reals)
           if not image_close(name, ours, real)]
    assert far == [], far
    for c in (1, 3, 4):  # defect frequencies as the real train set's (class 2: a few masks)
        assert labels[c]["masks"] > 0
    assert 0.35 < labels[3]["masks"] / 320 < 0.5
