"""``train --tensorboard``: the event files read back with TensorBoard's own reader match the
run's logs; a resumed fold keeps one series; without the flag nothing is written."""

import itertools
import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from helpers import TINY_TRAIN, run_cli

from pipeline.config import RunPaths
from pipeline.training import tensorboard

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
SummaryWriter = pytest.importorskip("torch.utils.tensorboard").SummaryWriter

CLASS_KEYS = {"val_per_class": "score", "val_tuned_per_class": "tuned"}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """16 synthetic training images in 2 folds: 8 per fold, 2 steps of 4 per epoch."""
    root = tmp_path_factory.mktemp("tb-data")
    assert run_cli("synth", "--out", root, "--n-train", 16, "--n-test", 1, "--seed", 3,
                   "--workers", 1, "--quiet") == 0
    return root


def train(data: Path, run: Path, *flags) -> None:
    assert run_cli("train", "--data-dir", data, "--run-dir", run, "--fold", 0, "--epochs", 2,
                   *TINY_TRAIN, *flags) == 0


def read_board(run: Path) -> event_accumulator.EventAccumulator:
    board = event_accumulator.EventAccumulator(
        str(tensorboard.board_dir(RunPaths(run), 0)),
        size_guidance={event_accumulator.SCALARS: 0, event_accumulator.IMAGES: 0})
    board.Reload()
    return board


def series(board, tag: str) -> tuple[list[int], list[float]]:
    events = board.Scalars(tag)
    return [e.step for e in events], [e.value for e in events]


@pytest.mark.slow
def test_a_resumed_run_logs_one_series_that_matches_its_history(data, tmp_path):
    run = tmp_path / "run"
    assert run_cli("folds", "--data-dir", data, "--run-dir", run, "--n-folds", 2) == 0
    train(data, run, "--max-steps", 2, "--tensorboard")      # epoch 0, then "killed"
    stale = SummaryWriter(str(tensorboard.board_dir(RunPaths(run), 0)))
    stale.add_scalar("train/loss", 1e6, 3)   # what the killed attempt at epoch 1 logged
    stale.add_scalar("val/score", 1e6, 4)
    stale.close()
    train(data, run, "--resume", "--tensorboard")            # epoch 1
    rows = json.loads((run / "logs" / "fold0.json").read_text())
    board = read_board(run)
    tags = board.Tags()
    assert {"train/loss", "train/lr", "epoch/train_loss", "val/loss", "val/score", "val/tuned",
            "val/baseline", "val/nonempty", "val/tuned_nonempty", "val_per_class/score_class1",
            "val_per_class/tuned_class4"} <= set(tags["scalars"])
    ends = list(itertools.accumulate(row["steps"] for row in rows))
    assert ends == [2, 4]   # the optimizer steps after each epoch
    steps, losses = series(board, "train/loss")
    assert steps == [1, 2, 3, 4] and 1e6 not in losses
    lr_steps, lrs = series(board, "train/lr")
    assert lr_steps == steps
    for row, end in zip(rows, ends):   # an epoch's first step runs at the lr its row logs
        assert lrs[end - row["steps"]] == pytest.approx(row["lr"], rel=1e-6)
        epoch_losses = losses[end - row["steps"]:end]   # equal batches: the row's mean
        assert sum(epoch_losses) / len(epoch_losses) == pytest.approx(row["train_loss"],
                                                                      rel=1e-5)
    for key, tag in (("val_score", "val/score"), ("val_tuned", "val/tuned"),
                     ("val_baseline", "val/baseline"), ("val_loss", "val/loss"),
                     ("train_loss", "epoch/train_loss")):
        assert series(board, tag) == (ends, pytest.approx([row[key] for row in rows],
                                                          rel=1e-6)), tag
    for key, name in CLASS_KEYS.items():
        for class_index in range(4):
            assert series(board, f"val_per_class/{name}_class{class_index + 1}") == (
                ends, pytest.approx([row[key][class_index] for row in rows], rel=1e-6))
    assert tags["images"] and all(tag.startswith("overlays/") for tag in tags["images"])
    shown = board.Images(tags["images"][0])
    assert [image.step for image in shown] == ends
    assert (shown[0].width, shown[0].height) == (400, 2 * 64 + 2)   # --scale 0.25


def test_a_run_without_the_flag_writes_no_event_folder(tiny_run):
    assert (tiny_run[1] / "logs").is_dir() and not (tiny_run[1] / "tb").exists()


def test_the_board_is_a_no_op_without_the_flag_or_off_rank_0(tmp_path):
    from pipeline.distributed import Context
    from pipeline.training.config import TrainConfig

    run = RunPaths(tmp_path)
    for cfg, rank in ((TrainConfig(), 0), (TrainConfig(tensorboard=True), 1)):
        board = tensorboard.for_fold(cfg, run, 0, 0, Context(rank=rank, world_size=2), None)
        assert board.on_step(0) is None
        board.step(0.5, 1e-3, 1)
        board.epoch({"train_loss": 0.5, "val_score": 0.9}, 1, torch.nn.Identity())
        board.close()
    assert list(tmp_path.iterdir()) == []


class ValidationImages:
    """Three validation items of 64x1600 (scale 0.25 would give 64x400): b.jpg alone has a
    defect, of class 2, over the full-size masks' first 128 rows and 400 columns."""

    image_ids = ["a.jpg", "b.jpg", "c.jpg"]
    rles = pd.DataFrame({1: ["", "", ""], 2: ["", "1 128", ""], 3: ["", "", ""],
                         4: ["", "", ""]}, index=image_ids)

    def __getitem__(self, index: int) -> dict:
        masks = torch.zeros(4, 256, 1600, dtype=torch.uint8)
        masks[1, :128, :400] = index == 1
        return {"image": torch.full((3, 64, 1600), 50 * index, dtype=torch.uint8),
                "masks": masks, "image_id": self.image_ids[index]}


def test_overlay_examples_are_images_with_defects_at_most_so_wide():
    ids, inputs, images, truth = tensorboard.examples(ValidationImages(), n=4, width=800)
    assert ids == ["b.jpg"] and inputs.shape == (1, 3, 64, 1600)
    assert images.shape == (1, 3, 32, 800) and images.eq(50).all()
    assert truth.shape == (1, 4, 32, 800)
    assert truth[0, 1, :16, :200].all() and int(truth.sum()) == 16 * 200
    assert tensorboard.examples(ValidationImages(), width=2000)[2].shape == (1, 3, 64, 1600)


def test_contours_are_the_mask_pixels_next_to_the_outside():
    masks = torch.zeros(1, 5, 6, dtype=torch.bool)
    masks[0, 1:4, 1:5] = True      # a 3x4 block: all but its middle row's inner pixels
    masks[0, 0, 5] = True          # a pixel at the image's corner
    expected = masks.clone()
    expected[0, 2, 2:4] = False
    assert torch.equal(tensorboard.contours(masks), expected)


def test_a_panel_shows_truth_above_prediction_in_the_class_colours():
    image = torch.zeros(3, 4, 5, dtype=torch.uint8)
    truth = torch.zeros(4, 4, 5, dtype=torch.bool)
    pred = torch.zeros(4, 4, 5, dtype=torch.bool)
    truth[0, 1, 1] = True          # class 1 in the truth
    pred[2, 2, 3] = True           # class 3 in the prediction
    picture = tensorboard.panel(image, truth, pred)
    assert picture.shape == (3, 10, 5) and picture.dtype == torch.uint8
    assert picture[:, 1, 1].tolist() == [255, 220, 0]        # yellow
    assert picture[:, 4:6].eq(255).all()                      # the line between
    assert picture[:, 6 + 2, 3].tolist() == [255, 60, 60]    # red
    assert int(picture.bool().any(dim=0).sum()) == 2 + 2 * 5
