"""Augmentation presets: masks move with the image, photometric changes leave masks alone,
seeded runs repeat, and the preset a model was trained with is in its checkpoint."""

import cv2
import pytest
import torch
from helpers import TINY_TRAIN, run_cli

from pipeline import checkpoint
from pipeline.training.config import TrainConfig
from pipeline.data import augment


def bright_square(top: int = 40, left: int = 150) -> tuple[torch.Tensor, torch.Tensor]:
    """A dim 128x384 image with a bright square where class 3's mask is."""
    image = torch.full((3, 128, 384), 70, dtype=torch.uint8)
    masks = torch.zeros((4, 128, 384), dtype=torch.uint8)
    image[:, top:top + 40, left:left + 60] = 170
    masks[2, top:top + 40, left:left + 60] = 1
    return image, masks


def test_strong_moves_the_masks_with_the_image():
    torch.manual_seed(0)
    pipeline, shifted = augment.build("strong"), 0
    for _ in range(60):
        image, masks = augment.apply(pipeline, *bright_square())
        assert image.dtype == masks.dtype == torch.uint8 and image.shape == (3, 128, 384)
        assert set(masks.unique().tolist()) <= {0, 1} and masks[[0, 1, 3]].sum() == 0
        grey, inside = image[0].float(), masks[2].bool()
        contrast = grey[inside].mean() - grey[~inside].mean()
        assert contrast > 3  # the defect is still there, even x0.3 darker with gamma 2
        if contrast > 30:  # clear enough to locate: where it is, the mask is
            smooth = torch.from_numpy(cv2.medianBlur(image[0].numpy(), 5)).float()
            bright = smooth > grey[~inside].mean() + contrast / 2
            assert (bright & inside).sum() / (bright | inside).sum() > 0.93
        shifted += not torch.equal(masks, bright_square()[1])
    assert 5 < shifted < 40  # about 30% of the samples are shifted


def test_light_changes_pixels_never_masks_and_repeats_with_the_seed():
    image, masks = bright_square()
    runs = []
    for _ in range(2):
        torch.manual_seed(3)
        pipeline = augment.build("light")
        runs.append([augment.apply(pipeline, image, masks) for _ in range(20)])
    assert all(torch.equal(m, masks) for _, m in runs[0])
    assert sum(not torch.equal(i, image) for i, _ in runs[0]) > 10
    assert all(torch.equal(a[0], b[0]) for a, b in zip(*runs))


def test_strong_spans_dark_to_bright():
    torch.manual_seed(1)
    pipeline, image = augment.build("strong"), bright_square()[0]
    means = [float(augment.apply(pipeline, image, bright_square()[1])[0].float().mean())
             for _ in range(200)]
    base = float(image.float().mean())
    assert min(means) < 0.45 * base and max(means) > 1.5 * base


def test_presets_and_refusals():
    assert augment.build("none") is None and augment.build("flips") is None
    with pytest.raises(ValueError, match="--augment 'heavy' is not one of none, flips"):
        augment.build("heavy")
    with pytest.raises(ValueError, match="augment"):
        TrainConfig(augment="heavy")
    assert TrainConfig().augment == "flips"


def test_the_preset_is_recorded_in_the_checkpoint(tmp_path):
    data, run = tmp_path / "data", tmp_path / "run"
    assert run_cli("synth", "--out", data, "--n-train", 8, "--n-test", 2, "--seed", 4,
                   "--workers", 1, "--quiet") == 0
    assert run_cli("folds", "--data-dir", data, "--run-dir", run, "--n-folds", 2) == 0
    assert run_cli("train", "--data-dir", data, "--run-dir", run, "--fold", "0", "--epochs", 1,
                   "--max-steps", 1, "--augment", "strong", *TINY_TRAIN) == 0
    state = checkpoint.load(run / "checkpoints" / "fold0" / "best.pt")
    assert state["config"]["augment"] == "strong"


def test_a_preset_pickles_into_workers_and_draws_the_same():
    """DataLoader workers get a pickled copy of the dataset's pipeline."""
    import pickle
    image, masks = bright_square()
    outputs = []
    for pipeline in (augment.build("strong"), pickle.loads(pickle.dumps(augment.build("strong")))):
        torch.manual_seed(8)
        outputs.append([augment.apply(pipeline, image, masks)[0] for _ in range(12)])
    assert all(torch.equal(a, b) for a, b in zip(*outputs))


def test_the_preset_table_names_known_steps():
    for preset, steps in augment.PRESET_STEPS.items():
        assert preset in augment.PRESETS
        for name, (low, high), p in steps:
            assert name in augment.STEPS or name == "shift"
            assert low <= high and 0 < p <= 1
