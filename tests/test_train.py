"""Training on a tiny synthetic set: learning, resume equivalence, DDP, bad inputs."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from helpers import run_cli

from pipeline import checkpoint
from pipeline.training.config import TrainConfig
from pipeline.data import synthetic
from pipeline.data.dataset import SteelDataset, Transform, collate
from pipeline.models.losses import build_loss
from pipeline.models.registry import build_model
from pipeline.training.train import train_fold

TINY = ["--encoder-weights", "none", "--scale", "0.25", "--crop", "64x128", "--batch-size", "4",
        "--workers", "0", "--lr", "1e-3", "--background-prior", "0.95", "--quiet"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """16 synthetic training images and 3 test images."""
    root = tmp_path_factory.mktemp("synthetic")
    synthetic.write_dataset(root, n_train=16, n_test=3, seed=1, quiet=True, workers=1)
    return root


def fresh_run(tmp_path: Path, data: Path, name: str = "run", n_folds: int = 2) -> Path:
    run = tmp_path / name
    assert run_cli("folds", "--data-dir", data, "--run-dir", run, "--n-folds", n_folds) == 0
    return run


@pytest.mark.slow
def test_a_few_steps_reduce_the_loss(tiny_data):
    torch.manual_seed(0)
    ids = sorted(p.name for p in (tiny_data / "train_images").iterdir())[:4]
    from pipeline.config import DataPaths
    from pipeline.data import labels as label_io
    labels, image_ids = label_io.load_train(DataPaths(tiny_data))
    dataset = SteelDataset(tiny_data / "train_images", ids, label_io.rle_table(labels, image_ids),
                           Transform(scale=0.25, crop=(64, 128)))
    batch = collate([dataset[i] for i in range(4)])
    model = build_model(encoder_weights="none", background_prior=0.9)
    loss_fn = build_loss("ce", "softmax")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        loss = loss_fn(model(batch["image"].float() / 255), batch["masks"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0], losses


@pytest.mark.slow
def test_train_writes_checkpoints_logs_and_curves(tiny_data, tmp_path):
    run = fresh_run(tmp_path, tiny_data)
    assert run_cli("train", "--data-dir", tiny_data, "--run-dir", run, "--fold", "0",
                   "--epochs", "2", *TINY) == 0
    state = checkpoint.load(run / "checkpoints" / "fold0" / "best.pt")
    assert set(state) >= {"model", "optimizer", "scheduler", "scaler", "epoch", "config",
                          "metrics", "code_version", "model_info"}
    assert state["model_info"]["head"] == "softmax" and state["model_info"]["input_scale"] == 0.25
    log = json.loads((run / "logs" / "fold0.json").read_text())
    assert [row["epoch"] for row in log] == [0, 1]
    assert state["metrics"] == max(log, key=lambda row: row["val_tuned"])   # --select tuned
    # The validation baseline, counted independently from folds.csv and train.csv.
    folds = pd.read_csv(run / "folds.csv")
    val_ids = set(folds.loc[folds["fold"] == 0, "ImageId"])
    labels = pd.read_csv(tiny_data / "train.csv")
    defect_pairs = labels["ImageId"].isin(val_ids).sum()
    assert log[0]["val_baseline"] == pytest.approx(1 - defect_pairs / (4 * len(val_ids)))
    assert (run / "logs" / "fold0.csv").is_file()
    assert (run / "reports" / "curves_fold0.png").stat().st_size > 1000
    assert json.loads((run / "config.json").read_text())["epochs"] == 2


@pytest.mark.slow
def test_resume_continues_exactly(tiny_data, tmp_path):
    base = ["--data-dir", tiny_data, "--fold", "0", "--epochs", "2", *TINY]
    straight = fresh_run(tmp_path, tiny_data, "straight")
    assert run_cli("train", "--run-dir", straight, *base) == 0
    interrupted = fresh_run(tmp_path, tiny_data, "interrupted")
    steps_per_epoch = json.loads((straight / "logs" / "fold0.json").read_text())[0]["steps"]
    assert run_cli("train", "--run-dir", interrupted, *base, "--max-steps", steps_per_epoch) == 0
    assert len(json.loads((interrupted / "logs" / "fold0.json").read_text())) == 1
    assert run_cli("train", "--run-dir", interrupted, *base, "--resume") == 0
    a = json.loads((straight / "logs" / "fold0.json").read_text())
    b = json.loads((interrupted / "logs" / "fold0.json").read_text())
    assert len(b) == 2
    assert b[1]["train_loss"] == pytest.approx(a[1]["train_loss"], rel=1e-4)
    assert b[1]["val_loss"] == pytest.approx(a[1]["val_loss"], rel=1e-4)


@pytest.mark.slow
def test_two_process_gloo_run(tiny_data, tmp_path):
    run = fresh_run(tmp_path, tiny_data)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc_per_node=2"]
    result = subprocess.run(
        [*torchrun, "-m", "pipeline", "train", "--data-dir", str(tiny_data), "--run-dir",
         str(run), "--fold", "all", "--epochs", "1", "--device", "cpu", *TINY],
        capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for fold in (0, 1):   # both folds in one process group
        log = json.loads((run / "logs" / f"fold{fold}.json").read_text())
        assert len(log) == 1 and log[0]["steps"] >= 1
        state = checkpoint.load(run / "checkpoints" / f"fold{fold}" / "last.pt")
        assert not any(k.startswith("module.") for k in state["model"])


@pytest.mark.slow
def test_corrupt_image_fails_with_path_or_is_skipped(tiny_data, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    victim = sorted((data / "train_images").iterdir())[0]
    victim.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    run = fresh_run(tmp_path, data)
    args = ["train", "--data-dir", data, "--run-dir", run, "--fold", "0,1", "--epochs", "1",
            *TINY]
    assert run_cli(*args) == 1
    assert victim.name in capsys.readouterr().err
    assert run_cli(*args, "--skip-bad-images") == 0
    err = capsys.readouterr().err
    assert f"warning: skipped: image {victim}" in err
    assert "warning: skipped 1 unreadable image(s) in epoch 0" in err


def test_wrong_image_size_is_an_error_naming_the_file(tiny_data, tmp_path, capsys):
    import cv2
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    victim = sorted((data / "train_images").iterdir())[1]
    cv2.imwrite(str(victim), cv2.imread(str(victim))[:, :800])
    run = fresh_run(tmp_path, data)
    assert run_cli("train", "--data-dir", data, "--run-dir", run, "--fold", "0,1",
                   "--epochs", "1", *TINY) == 1
    err = capsys.readouterr().err
    assert victim.name in err and "expected 1600x256" in err


def test_nan_loss_stops_without_saving(tiny_data, tmp_path, capsys):
    run = fresh_run(tmp_path, tiny_data)
    assert run_cli("train", "--data-dir", tiny_data, "--run-dir", run, "--fold", "0",
                   "--epochs", "1", *TINY, "--lr", "1e30") == 1
    assert "loss became" in capsys.readouterr().err
    assert not (run / "checkpoints" / "fold0" / "last.pt").exists()


def test_crop_larger_than_the_scaled_image_is_refused(tiny_data, tmp_path, capsys):
    run = fresh_run(tmp_path, tiny_data)
    assert run_cli("train", "--data-dir", tiny_data, "--run-dir", run, "--fold", "0",
                   *TINY, "--crop", "128x128") == 1
    assert "--crop 128x128 is larger than the 64x400 images" in capsys.readouterr().err


def test_config_roundtrip():
    cfg = TrainConfig(crop=(64, 128), class_weights=(1.0, 2.0, 2.0, 1.0, 2.0))
    assert TrainConfig.from_dict(cfg.as_dict()) == cfg
    with pytest.raises(ValueError, match="training settings: unknown key .nope."):
        TrainConfig.from_dict({"nope": 1})


def test_unknown_fold_is_refused(tiny_data, tmp_path, capsys):
    run = fresh_run(tmp_path, tiny_data)
    assert run_cli("train", "--data-dir", tiny_data, "--run-dir", run, "--fold", "7") == 1
    assert "--fold [7]" in capsys.readouterr().err


@pytest.mark.slow
def test_train_fold_function_returns_best(tiny_data, tmp_path):
    run = fresh_run(tmp_path, tiny_data)
    cfg = TrainConfig(data_dir=str(tiny_data), run_dir=str(run), encoder_weights="none",
                      scale=0.25, crop=(64, 128), batch_size=4, workers=0, epochs=1,
                      max_steps=1, quiet=True)
    best = train_fold(cfg, 0)
    assert best["epoch"] == 0 and best["steps"] == 1


@pytest.mark.slow
def test_val_every_validates_some_epochs_and_always_the_last(tiny_data, tmp_path):
    run = fresh_run(tmp_path, tiny_data)
    assert run_cli("train", "--data-dir", tiny_data, "--run-dir", run, "--fold", "0",
                   "--epochs", "3", "--val-every", "2", *TINY) == 0
    log = json.loads((run / "logs" / "fold0.json").read_text())
    assert ["val_score" in row for row in log] == [False, True, True]
    best = checkpoint.load(run / "checkpoints" / "fold0" / "best.pt")
    assert best["epoch"] == max(log[1:], key=lambda row: row["val_tuned"])["epoch"]
    assert (run / "reports" / "curves_fold0.png").stat().st_size > 1000
