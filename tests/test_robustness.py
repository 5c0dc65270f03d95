"""Input shifts (``data.shifts``) and the ``robustness`` command: each shift does what its name
says; scores under the ``none`` shift are cv's; the all-empty baseline counts the labels."""

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import run_cli, train_tiny

from pipeline import metrics
from pipeline.data import images, shifts
from pipeline.inference import oof, postprocess, predict, robustness
from pipeline.inference.config import InferenceConfig
from pipeline.inference.postprocess import PostProcess

INFER = ["--workers", "0", "--batch-size", "4", "--quiet"]


@pytest.fixture(scope="module")
def steel() -> np.ndarray:
    """A 256x1600 grey image stored as 3 channels, mid-grey with texture (no clipping at the
    levels the tests look at)."""
    rng = np.random.default_rng(0)
    grey = rng.integers(60, 180, size=(256, 1600), dtype=np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


@pytest.mark.parametrize("name", list(shifts.SHIFTS))
def test_every_shift_keeps_shape_and_dtype_and_is_deterministic(steel, name):
    shift = shifts.SHIFTS[name]
    out = shift(steel.copy(), "a.jpg")
    assert out.shape == steel.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out, shift(steel.copy(), "a.jpg"))
    assert (name == "none") == np.array_equal(out, steel)
    assert pickle.loads(pickle.dumps(shift))(steel, "a.jpg").tobytes() == out.tobytes()


def test_brightness_shifts_scale_the_grey_levels(steel):
    dark = shifts.SHIFTS["dark-x0.3"](steel, "a.jpg")
    assert dark.mean() / steel.mean() == pytest.approx(0.3, abs=0.005)
    assert np.abs(dark - steel * 0.3).max() <= 0.5 + 1e-4    # rounded, float32
    bright = shifts.SHIFTS["bright-x1.8"](steel, "a.jpg")
    assert np.abs(bright - np.clip(steel * 1.8, 0, 255)).max() <= 0.5 + 1e-4
    assert bright.max() == 255 and (bright >= steel).all()


def test_contrast_halves_the_deviations_from_the_mean(steel):
    out = shifts.SHIFTS["contrast-x0.5"](steel, "a.jpg").astype(float)
    assert out.mean() == pytest.approx(steel.mean(), abs=0.5)
    assert out.std() / steel.std() == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize("name, exponent", [("gamma-2.0", 2.0), ("gamma-0.5", 0.5)])
def test_gamma_follows_the_formula(steel, name, exponent):
    expected = np.rint(255 * (steel / 255.0) ** exponent)
    np.testing.assert_array_equal(shifts.SHIFTS[name](steel, "a.jpg"), expected)


def test_blur_spreads_a_line_by_sigma_2():
    line = np.zeros((64, 64, 3), dtype=np.uint8)
    line[:, 32] = 255
    spread = shifts.SHIFTS["blur"](line, "a.jpg")[32, :, 0].astype(float)
    x = np.arange(64) - 32
    assert (spread * x ** 2).sum() / spread.sum() == pytest.approx(2.0 ** 2, rel=0.03)


def test_noise_is_seeded_by_the_image_id(steel):
    noise = shifts.SHIFTS["noise"]
    first, again, other = noise(steel, "a.jpg"), noise(steel, "a.jpg"), noise(steel, "b.jpg")
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    grain = first.astype(float) - steel
    assert grain.std() == pytest.approx(12, rel=0.02) and abs(grain.mean()) < 0.1
    assert (first[..., 0] == first[..., 2]).all()     # grey stays grey


def test_jpeg_q20_loses_detail_but_keeps_the_picture(steel):
    out = shifts.SHIFTS["jpeg-q20"](steel, "a.jpg").astype(float)
    assert np.abs(out - steel).mean() > 5       # the pixel texture is gone ...
    assert abs(out.mean() - steel.mean()) < 2   # ... the grey level is not


def test_dark_edge_darkens_only_the_left_12_percent(steel):
    out = shifts.SHIFTS["dark-edge"](steel, "a.jpg")
    edge = round(0.12 * 1600)
    np.testing.assert_array_equal(out[:, edge:], steel[:, edge:])
    ratio = out[:, :edge].mean(axis=(0, 2)) / steel[:, :edge].mean(axis=(0, 2))
    assert ratio[0] < 0.1 and ratio[edge // 2] == pytest.approx(0.52, abs=0.05)
    assert (np.diff(ratio) > -0.02).all() and ratio[-1] > 0.98    # a smooth ramp up


def test_shift_names_parse_and_unknown_names_list_the_valid_ones():
    assert shifts.parse("all") == list(shifts.SHIFTS)
    assert shifts.parse("blur, none,blur") == ["blur", "none"]
    with pytest.raises(ValueError, match="valid: none, bright-x1.8, .*dark-edge"):
        shifts.parse("none,fog")


def test_the_loader_shifts_each_image_right_after_reading(real_sample):
    image_dir = real_sample / "train_images"
    ids = images.list_images(image_dir)[:2]
    loader = predict.make_loader(image_dir, ids, 1.0, InferenceConfig(batch_size=2, workers=0),
                                 shift=shifts.SHIFTS["dark-edge"])
    batch = next(iter(loader))
    for image_id, image in zip(batch["image_id"], batch["image"]):
        expected = shifts.dark_edge(images.read_image(image_dir / image_id), image_id)
        np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), expected)


def test_score_shift_equals_masks_scored_by_brute_force():
    """Per-class thresholds, min_area and a presence gate, from the accumulator's counts."""
    rng = np.random.default_rng(1)
    truth = rng.random((6, 4, 16, 24)) > 0.85
    truth[:2, 1:] = False
    probs = torch.from_numpy(np.clip(truth * 0.4 + rng.random(truth.shape) * 0.6, 0, 0.99)
                             .astype(np.float32))
    presence = torch.from_numpy(rng.random((6, 4)).astype(np.float32))
    params = PostProcess(head="sigmoid", threshold=(0.3, 0.5, 0.3, 0.6), min_area=(0, 30, 60, 5),
                         presence=(None, 0.3, None, 0.5))
    accumulator = oof.OOFAccumulator("sigmoid", tuple(dict.fromkeys(params.threshold)))
    accumulator.add([str(i) for i in range(6)], probs, torch.from_numpy(truth), presence)
    result = robustness.score_shift(accumulator, params)
    brute = metrics.score_masks(postprocess.class_masks(probs, params, presence).numpy(), truth)
    assert result["score"] == brute.score and result["nonempty"] == brute.nonempty
    assert result["all_empty_baseline"] == (truth.sum(axis=(2, 3)) == 0).mean()
    assert result["margin"] == brute.score - brute.all_empty_baseline


def test_unknown_shift_is_a_one_line_error(tmp_path, capsys):
    assert run_cli("robustness", "--run-dir", tmp_path, "--data-dir", tmp_path,
                   "--shifts", "none,fog") == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "fog" in error and ", ".join(shifts.SHIFTS) in error


def test_missing_postprocessing_is_a_one_line_error(tmp_path, capsys):
    assert run_cli("robustness", "--run-dir", tmp_path, "--data-dir", tmp_path) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "postprocess.json" in error and "make cv" in error


@pytest.fixture(scope="module")
def tuned(tmp_path_factory) -> tuple[Path, Path]:
    """(data dir, run dir) of 2 folds trained 1 step, after ``cv``."""
    data, run = train_tiny(tmp_path_factory.mktemp("robust"), n_train=8, n_test=2, seed=3,
                           max_steps=1)
    assert run_cli("cv", "--data-dir", data, "--run-dir", run, *INFER) == 0
    return data, run


@pytest.mark.slow
def test_unshifted_scores_are_cvs_and_the_reports_are_written(tuned, capsys):
    data, run = tuned
    capsys.readouterr()
    assert run_cli("robustness", "--data-dir", data, "--run-dir", run,
                   "--shifts", "none,dark-x0.3,jpeg-q20", *INFER) == 0
    out, err = capsys.readouterr()
    cv = json.loads((run / "reports" / "cv.json").read_text())
    report = json.loads((run / "reports" / "robustness.json").read_text())
    assert [r["name"] for r in report["shifts"]] == ["none", "dark-x0.3", "jpeg-q20"]
    none = report["shifts"][0]
    assert none["score"] == cv["tuned"]["score"]
    assert none["all_empty_baseline"] == cv["tuned"]["all_empty_baseline"]
    assert none["nonempty"] == pytest.approx(cv["tuned"]["nonempty"], nan_ok=True)
    assert (run / "reports" / "robustness.png").stat().st_size > 1000
    assert [line.split()[0] for line in out.splitlines()[3:6]] == ["none", "dark-x0.3",
                                                                   "jpeg-q20"]
    assert err.count("info: shift ") == 3 and "info: shift 3/3 jpeg-q20" in err


@pytest.mark.slow
def test_all_empty_baseline_counts_the_labels_of_the_oof_images(tuned):
    data, run = tuned
    assert run_cli("robustness", "--data-dir", data, "--run-dir", run, "--shifts", "none",
                   "--fold", "0", *INFER) == 0
    fold0 = pd.read_csv(run / "folds.csv").query("fold == 0")["ImageId"]
    labelled = pd.read_csv(data / "train.csv")
    n_defects = labelled["ImageId"].isin(set(fold0)).sum()    # non-empty (image, class) rows
    report = json.loads((run / "reports" / "robustness.json").read_text())
    assert report["folds"] == [0] and report["shifts"][0]["n_images"] == len(fold0)
    assert report["shifts"][0]["all_empty_baseline"] == pytest.approx(
        1 - n_defects / (4 * len(fold0)), abs=1e-12)


@pytest.mark.slow
def test_every_pixel_on_scores_what_the_labels_give_and_warns_below_baseline(
        tuned, tmp_path, capsys):
    """Threshold 0 (every pixel on): Dice 2|T| / (|image| + |T|) per pair, whatever the shift;
    far below all-empty, so the command warns and still exits 0."""
    data, run = tuned
    mine = tmp_path / "run"
    mine.mkdir()
    shutil.copy(run / "folds.csv", mine)
    (mine / "checkpoints").symlink_to(run / "checkpoints")
    PostProcess(head="softmax", threshold=0.0).save(mine / "postprocess.json")
    capsys.readouterr()
    assert run_cli("robustness", "--data-dir", data, "--run-dir", mine,
                   "--shifts", "none,blur", *INFER) == 0
    out, err = capsys.readouterr()
    labelled = pd.read_csv(data / "train.csv")
    areas = labelled["EncodedPixels"].map(lambda r: sum(int(v) for v in r.split()[1::2]))
    n_pairs = 4 * len(pd.read_csv(run / "folds.csv"))
    expected = (2 * areas / (256 * 1600 + areas)).sum() / n_pairs
    report = json.loads((mine / "reports" / "robustness.json").read_text())
    assert [r["score"] for r in report["shifts"]] == pytest.approx([expected] * 2, abs=1e-12)
    assert report["below_baseline"] == ["none", "blur"] and out.count("BELOW") == 2
    assert "warning: below the all-empty baseline under shift(s): none, blur" in err


@pytest.mark.slow
def test_images_per_fold_scores_the_first_images_of_each_fold(tuned, capsys):
    data, run = tuned
    assert run_cli("robustness", "--data-dir", data, "--run-dir", run, "--shifts", "none",
                   "--images-per-fold", 1, *INFER) == 0
    report = json.loads((run / "reports" / "robustness.json").read_text())
    n_folds = pd.read_csv(run / "folds.csv")["fold"].nunique()
    assert report["images_per_fold"] == 1 and report["shifts"][0]["n_images"] == n_folds
    assert "(first 1 images of each)" in capsys.readouterr().out
    assert run_cli("robustness", "--data-dir", data, "--run-dir", run,
                   "--images-per-fold", 0, *INFER) == 1
