"""Defect-centred crops: where ``focused_crop`` places a crop, and the dataset that uses it."""

import numpy as np
import pytest
import torch

from pipeline.data import synthetic
from pipeline.data.dataset import SteelDataset, Transform, focused_crop
from pipeline.data import labels
from pipeline.config import DataPaths


def sparse_masks(rng: np.random.Generator) -> np.ndarray:
    """(4, 64, 400) masks: a few classes, each a handful of scattered pixels."""
    masks = np.zeros((4, 64, 400), np.uint8)
    for c in rng.choice(4, size=int(rng.integers(1, 4)), replace=False):
        ys, xs = rng.integers(0, 64, 3), rng.integers(0, 400, 3)
        masks[c, ys, xs] = 1
    return masks


def test_every_focused_crop_holds_a_pixel_of_the_drawn_class():
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    drawn = []
    for _ in range(2000):
        masks, crop = sparse_masks(rng), (32, 96)
        c, top, left = focused_crop(masks, crop)
        assert 0 <= top <= 64 - 32 and 0 <= left <= 400 - 96
        assert masks[c, top:top + 32, left:left + 96].any(), (c, top, left)
        drawn.append((c, tuple(np.flatnonzero(masks.reshape(4, -1).any(1)))))
    # the class is drawn uniformly from the image's classes: class 0 when present, 1/k times
    with_0 = [c == 0 for c, present in drawn if 0 in present]
    expected = np.mean([1 / len(present) for c, present in drawn if 0 in present])
    assert abs(np.mean(with_0) - expected) < 0.05


def test_a_crop_as_large_as_the_image_and_a_defect_free_image():
    masks = np.zeros((4, 16, 16), np.uint8)
    assert focused_crop(masks, (8, 8)) is None
    masks[2, 15, 15] = 1
    assert focused_crop(masks, (16, 16)) == (2, 0, 0)
    for _ in range(50):
        assert focused_crop(masks, (4, 4)) == (2, 12, 12)   # the only place holding the pixel


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("focus-data")
    synthetic.write_dataset(root, n_train=12, n_test=0, seed=2, quiet=True, workers=1)
    return root


def test_the_dataset_with_crop_focus_1_crops_on_defects(data):
    table, image_ids = labels.load_train(DataPaths(data))
    rles = labels.rle_table(table, image_ids)
    defective = [i for i in image_ids if any(rles.loc[i])]
    assert len(defective) >= 3
    focused = SteelDataset(data / "train_images", defective, rles,
                           Transform(scale=0.5, crop=(32, 64), crop_focus=1.0))
    at_random = SteelDataset(data / "train_images", defective, rles,
                             Transform(scale=0.5, crop=(32, 64)))
    torch.manual_seed(0)
    hits = [focused[i % len(defective)]["masks"].any().item() for i in range(60)]
    misses = [not at_random[i % len(defective)]["masks"].any().item() for i in range(60)]
    assert all(hits)
    assert any(misses)   # without focus a 32x64 window often holds no defect


def test_crop_focus_outside_0_1_is_refused():
    with pytest.raises(ValueError, match="--crop-focus is a probability in"):
        Transform(crop=(32, 64), crop_focus=-0.1)


def test_crop_focus_on_defect_free_images_crops_at_random_with_a_warning(data, caplog):
    """The documented fallback: no defect to focus on gives random crops, and training warns."""
    from pipeline.training import train
    from pipeline.training.config import TrainConfig

    table, image_ids = labels.load_train(DataPaths(data))
    rles = labels.rle_table(table, image_ids)
    clean = [i for i in image_ids if not any(rles.loc[i])]
    assert len(clean) >= 2
    focused = SteelDataset(data / "train_images", clean, rles,
                           Transform(scale=0.5, crop=(32, 64), crop_focus=1.0))
    torch.manual_seed(0)
    means = set()
    for i in range(20):
        item = focused[i % len(clean)]
        assert item["image"].shape[-2:] == (32, 64) and not item["masks"].any()
        means.add(item["image"].float().mean().item())
    assert len(means) > 2                  # crops move: not one fixed window
    cfg = TrainConfig(crop=(32, 64), crop_focus=0.5)
    with caplog.at_level("WARNING"):
        train._check_focus(cfg, focused, 3)
    assert "--crop-focus 0.5: the training images of fold 3 hold no defect" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):   # the balanced sampler's empty groups: once per fold
        train._check_focus(TrainConfig(crop=(32, 64), sampler="balanced"), focused, 1)
    assert ("--sampler balanced: no training image of fold 1 in class 1, class 2, class 3, "
            "class 4" in caplog.text)
    caplog.clear()
    defective = [i for i in image_ids if any(rles.loc[i])]
    with caplog.at_level("WARNING"):
        train._check_focus(cfg, SteelDataset(data / "train_images", defective, rles,
                                             Transform(scale=0.5, crop=(32, 64))), 0)
    assert caplog.text == ""
