"""End to end on a tiny synthetic set: train -> cv -> predict -> validate, DDP, bad inputs."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from helpers import TINY_TRAIN, run_cli, train_tiny

from pipeline.data import rle
from pipeline.inference import submission

pytestmark = pytest.mark.slow   # every test here trains a tiny run first

INFER = ["--workers", "0", "--batch-size", "3", "--quiet"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(data dir, run dir) after 2 folds of a very short training."""
    return train_tiny(tmp_path_factory.mktemp("e2e"), n_train=12, n_test=5, seed=2, max_steps=2)


def test_cv_writes_reports_and_postprocessing(trained, capsys):
    data, run = trained
    assert run_cli("cv", "--data-dir", data, "--run-dir", run, *INFER) == 0
    assert "competition score" in capsys.readouterr().out
    report = json.loads((run / "reports" / "cv.json").read_text())
    assert report["n_images"] == 12 and report["folds"] == [0, 1]
    assert report["tuned"]["score"] >= report["default"]["score"]
    labels = pd.read_csv(data / "train.csv")   # 12 images x 4 classes, counted independently
    assert report["default"]["all_empty_baseline"] == pytest.approx(1 - len(labels) / 48)
    assert [m["input_scale"] for m in report["models"]] == [0.25, 0.25]
    assert json.loads((run / "postprocess.json").read_text())["head"] == "softmax"
    for name in ("confusion_default", "confusion_tuned", "min_area", "overlays"):
        assert (run / "reports" / f"{name}.png").stat().st_size > 1000


def test_predict_writes_a_valid_submission(trained, tmp_path, capsys):
    data, run = trained
    out = tmp_path / "submission.csv"
    # cv tuned without TTA: hflip is the user's explicit choice
    assert run_cli("predict", "--data-dir", data, "--run-dir", run, "--out", out,
                   "--tta", "hflip", "--accept-postprocess", *INFER) == 0
    assert "2 model(s)" in capsys.readouterr().out
    sample = submission.read_sample(data / "sample_submission.csv")
    table = submission.validate(out, sample)
    assert list(dict.fromkeys(table["ImageId"])) == sample.image_ids
    assert run_cli("score", out, "--sample", data / "sample_submission.csv",
                   "--truth", data / "test_truth.csv", "--json") == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["n_images"] == 5
    assert scores["score"] == pytest.approx(dice_by_hand(table, data / "test_truth.csv"))


def dice_by_hand(table: pd.DataFrame, truth_csv: Path) -> float:
    """Mean Dice over every (image, class) pair, decoded and counted pixel by pixel here."""
    truth = pd.read_csv(truth_csv, dtype=str, keep_default_na=False)
    dice = []
    for image_id in dict.fromkeys(table["ImageId"]):
        for class_id in "1234":
            pred = table.loc[(table["ImageId"] == image_id) & (table["ClassId"] == class_id),
                             "EncodedPixels"]
            true = truth.loc[(truth["ImageId"] == image_id) & (truth["ClassId"] == class_id),
                             "EncodedPixels"]
            p = rle.decode(pred.iloc[0] if len(pred) else "").astype(bool)
            t = rle.decode(true.iloc[0] if len(true) else "").astype(bool)
            total = p.sum() + t.sum()
            dice.append(1.0 if total == 0 else 2 * (p & t).sum() / total)
    return float(np.mean(dice))


def test_min_area_override_empties_everything(trained, tmp_path):
    data, run = trained
    out = tmp_path / "submission.csv"
    args = ["predict", "--data-dir", data, "--run-dir", run, "--out", out, "--threshold", "0.0"]
    assert run_cli(*args, *INFER) == 0    # every pixel on: 4 full masks per image
    table = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert len(table) == 20 and set(table["EncodedPixels"]) == {"1 409600"}
    assert run_cli(*args, "--min-area", "409601", *INFER) == 0
    table = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert set(table["ClassId"]) == {"0"} and len(table) == 5


def test_original_format_sample(trained, tmp_path):
    data, run = trained
    ids = submission.read_sample(data / "sample_submission.csv").image_ids
    sample = tmp_path / "sample_old.csv"
    pd.DataFrame({"ImageId_ClassId": [f"{i}_{c}" for i in ids for c in range(1, 5)],
                  "EncodedPixels": "1 1"}).to_csv(sample, index=False)
    out = tmp_path / "submission.csv"
    assert run_cli("predict", "--data-dir", data, "--run-dir", run, "--sample", sample,
                   "--out", out, "--threshold", "0.0", *INFER) == 0
    table = submission.validate(out, submission.read_sample(sample))
    assert len(table) == 20 and (table["EncodedPixels"] != "").any()


def test_torchrun_predict_equals_single_process(trained, tmp_path):
    data, run = trained
    single, sharded = tmp_path / "single.csv", tmp_path / "sharded.csv"
    args = ["--data-dir", str(data), "--run-dir", str(run), "--threshold", "0.3",
            "--device", "cpu", *INFER]
    assert run_cli("predict", *args, "--out", single) == 0
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "pipeline", "predict", *args, "--out", str(sharded)],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sharded.read_bytes() == single.read_bytes()


def copy_data(trained, tmp_path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(trained[0], data)
    return data


def test_missing_corrupt_and_wrong_size_test_images(trained, tmp_path, capsys):
    data, run = copy_data(trained, tmp_path), trained[1]
    images = sorted((data / "test_images").iterdir())
    args = ["predict", "--data-dir", data, "--run-dir", run, "--out", tmp_path / "s.csv", *INFER]
    images[0].write_bytes(b"not a jpeg")
    assert run_cli(*args) == 1
    assert f"{images[0].name} cannot be decoded" in capsys.readouterr().err
    cv2.imwrite(str(images[0]), cv2.imread(str(images[1]))[:128])
    assert run_cli(*args) == 1
    assert f"{images[0].name} is 1600x128" in capsys.readouterr().err
    images[0].unlink()
    assert run_cli(*args) == 1
    assert f"not in {data / 'test_images'}" in capsys.readouterr().err
    shutil.copy(images[1], data / "test_images" / "extra0000.jpg")
    shutil.copy(images[1], images[0])
    assert run_cli(*args) == 1
    assert "extra0000.jpg" in capsys.readouterr().err
    assert not (tmp_path / "s.csv").exists()


def test_mixed_heads_need_post_processing_tuned_for_them(trained, tmp_path, capsys):
    """softmax + sigmoid checkpoints combine as per-class probabilities (a sigmoid-style
    ensemble): the softmax run's argmax post-processing does not fit them."""
    data, run = trained
    other = tmp_path / "sigmoid"
    assert run_cli("folds", "--data-dir", data, "--run-dir", other, "--n-folds", 2) == 0
    assert run_cli("train", "--data-dir", data, "--run-dir", other, "--fold", 0, "--epochs", 1,
                   "--max-steps", 1, "--head", "sigmoid", "--loss", "bce", *TINY_TRAIN) == 0
    mixed = [run / "checkpoints" / "fold0" / "best.pt", other / "checkpoints" / "fold0" / "best.pt"]
    for checkpoints in (mixed, mixed[1:]):
        predict = ["predict", "--data-dir", data, "--run-dir", run, "--checkpoints",
                   *checkpoints, "--out", tmp_path / "s.csv", *INFER]
        assert run_cli(*predict) == 1   # the run's postprocess.json was not tuned for them
        assert "was tuned for other checkpoints: 1 of the" in capsys.readouterr().err
        assert run_cli(*predict, "--accept-postprocess") == 1    # nor can it serve them
        err = capsys.readouterr().err
        assert "post-processing is for the softmax head but the checkpoints have the sigmoid " \
               "head: rerun `make cv`" in err
    assert not (tmp_path / "s.csv").exists()


def test_a_gated_unet_trains_tunes_its_gate_and_predicts(trained, tmp_path, capsys):
    data = trained[0]
    run = tmp_path / "unet"
    assert run_cli("folds", "--data-dir", data, "--run-dir", run, "--n-folds", 2) == 0
    assert run_cli("train", "--data-dir", data, "--run-dir", run, "--model", "unet",
                   "--gate", "--cls-weight", "0.5", "--epochs", 1, "--max-steps", 2,
                   *TINY_TRAIN) == 0
    assert run_cli("cv", "--data-dir", data, "--run-dir", run, *INFER) == 0
    report = json.loads((run / "reports" / "cv.json").read_text())
    assert report["grid"]["presence"][0] is None and len(report["grid"]["presence"]) > 1
    assert [m["name"] for m in report["models"]] == ["unet", "unet"]
    assert all(m["gate"] for m in report["models"])
    assert report["tuned"]["score"] >= report["default"]["score"]
    out = tmp_path / "submission.csv"
    capsys.readouterr()
    assert run_cli("predict", "--data-dir", data, "--run-dir", run, "--out", out, *INFER) == 0
    assert "2 model(s)" in capsys.readouterr().out
    submission.validate(out, submission.read_sample(data / "sample_submission.csv"))
