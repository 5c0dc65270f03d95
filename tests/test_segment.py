"""segment: any folder of images -> label PNGs, overlays, segments.csv and segments.json."""

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from helpers import run_cli

from pipeline.config import RunPaths
from pipeline.data import labels
from pipeline.inference import predict, segment, submission
from pipeline.inference.postprocess import PostProcess, class_masks

INFER = ["--workers", "0", "--batch-size", "3", "--quiet"]


@pytest.fixture
def tuned_run(tiny_run_copy) -> tuple[Path, Path]:
    """The tiny run with a postprocess.json whose thresholds are each class's median
    probability on a test image: masks with many pixels on and off, and overlapping classes."""
    data, run = tiny_run_copy
    ensemble = predict.load_models(RunPaths(run).find_checkpoints(), torch.device("cpu"))
    image, _ = segment.read_frame(sorted((data / "test_images").iterdir())[0],
                                  ensemble.input_scale)
    images = torch.from_numpy(image.transpose(2, 0, 1)).float().div(255)[None]
    probs, _ = predict.ensemble_probabilities(ensemble, images)
    medians = [float(probs[0, c].median()) for c in range(4)]
    PostProcess(head=ensemble.head, threshold=medians, min_component=30,
                min_area=100).save(run / "postprocess.json")
    return data, run


def test_competition_images_get_the_masks_predict_writes(tuned_run, tmp_path, capsys):
    data, run = tuned_run
    out_csv, out = tmp_path / "submission.csv", tmp_path / "segments"
    assert run_cli("predict", "--data-dir", data, "--run-dir", run, "--out", out_csv,
                   *INFER) == 0
    assert run_cli("segment", "--run-dir", run, "--input", data / "test_images", "--out", out,
                   *INFER) == 0
    assert "segmented 4 of 4 image(s)" in capsys.readouterr().out
    sample = submission.read_sample(data / "sample_submission.csv")
    predicted = submission.to_predictions(submission.validate(out_csv, sample), sample)
    table = pd.read_csv(out / "segments.csv")
    n_on = 0
    for image_id, rles in predicted.items():
        masks = labels.masks_from_rles(rles)
        written = cv2.imread(str(out / image_id.replace(".jpg", ".png")), cv2.IMREAD_UNCHANGED)
        assert written.dtype == np.uint8 and written.shape == (256, 1600)
        np.testing.assert_array_equal(written, labels.label_map(masks))
        rows = table[table["image"] == image_id].sort_values("class_id")
        assert rows["area"].tolist() == masks.reshape(4, -1).sum(axis=1).tolist()
        n_on += int((written > 0).sum())
    assert 0 < n_on < 4 * 256 * 1600   # not trivially empty or full


def make_mixed_folder(root: Path, real_sample: Path, data: Path) -> Path:
    """Real and synthetic competition images, odd sizes (a PNG, an upper-case .JPG), nested
    folders, a corrupt and a truncated JPEG and a text file."""
    (root / "real").mkdir(parents=True)
    (root / "nested" / "deeper").mkdir(parents=True)
    for name in ("0a1cade03.jpg", "72aaba8ad.jpg"):
        shutil.copy(real_sample / "train_images" / name, root / "real" / name)
    synthetic = sorted((data / "test_images").iterdir())[0]
    shutil.copy(synthetic, root / "synthetic.jpg")
    picture = cv2.imread(str(synthetic))
    cv2.imwrite(str(root / "nested" / "deeper" / "odd.png"), picture[20:220, 100:1000])
    cv2.imwrite(str(root / "nested" / "small.JPG"), cv2.resize(picture, (300, 100)))
    (root / "corrupt.jpg").write_bytes(b"not an image at all")
    whole = (real_sample / "train_images" / "b2ad335bf.jpg").read_bytes()
    (root / "nested" / "truncated.jpg").write_bytes(whole[:len(whole) // 2])
    (root / "notes.txt").write_text("camera 3, shift B")
    return root


def test_a_mixed_folder_mirrors_its_folders_and_lists_what_it_skipped(
        tuned_run, real_sample, tmp_path, capsys):
    data, run = tuned_run
    input_dir, out = make_mixed_folder(tmp_path / "frames", real_sample, data), tmp_path / "out"
    assert run_cli("segment", "--run-dir", run, "--input", input_dir, "--out", out,
                   "--overlays", *INFER) == 0
    printed = capsys.readouterr().out
    assert "segmented 5 of 7 image(s)" in printed and "2 skipped" in printed
    sizes = {"real/0a1cade03": (256, 1600), "real/72aaba8ad": (256, 1600),
             "synthetic": (256, 1600), "nested/deeper/odd": (200, 900),
             "nested/small": (100, 300)}
    table = pd.read_csv(out / "segments.csv")
    for stem, size in sizes.items():
        label = cv2.imread(str(out / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        assert label.dtype == np.uint8 and label.shape == size and label.max() <= 4
        assert cv2.imread(str(out / f"{stem}_overlay.png")).shape == (*size, 3)
        rows = table[table["image"].str.rsplit(".", n=1).str[0] == stem]
        assert rows["class_id"].tolist() == [1, 2, 3, 4]
        assert set(zip(rows["height"], rows["width"])) == {size}
        assert ((rows["area"] > 0) == (rows["components"] > 0)).all()
        assert (rows["presence"].between(0, 1)).all()
    summary = json.loads((out / "segments.json").read_text())
    assert {s["image"] for s in summary["skipped"]} == {"corrupt.jpg", "nested/truncated.jpg"}
    assert all("cannot be decoded" in s["reason"] for s in summary["skipped"])
    assert (summary["n_images"], summary["n_segmented"], summary["n_ignored"]) == (7, 5, 1)
    assert summary["sizes"] == {"256x1600": 3, "100x300": 1, "200x900": 1}
    assert summary["run"] == f"run {run}" and summary["settings"]["batch_size"] == 3
    assert not (out / "corrupt.png").exists() and not (out / "notes.png").exists()


def test_the_output_folder_may_not_be_inside_the_input_folder(tmp_path, capsys):
    (tmp_path / "frames").mkdir()
    (tmp_path / "frames" / "a.jpg").write_bytes(b"x")
    assert run_cli("segment", "--input", tmp_path / "frames",
                   "--out", tmp_path / "frames" / "masks") == 1
    error = capsys.readouterr().err.strip()
    assert "inside --input" in error and len(error.splitlines()) == 1
    assert not (tmp_path / "frames" / "masks").exists()
    assert run_cli("segment", "--input", tmp_path / "frames", "--out", tmp_path) == 1
    assert "is inside --out" in capsys.readouterr().err


def test_glob_and_no_recursive_choose_the_images(tiny_run, tmp_path, capsys):
    data, run = tiny_run
    images = sorted((data / "test_images").iterdir())
    (tmp_path / "in" / "sub").mkdir(parents=True)
    shutil.copy(images[0], tmp_path / "in" / "a.jpg")
    cv2.imwrite(str(tmp_path / "in" / "b.png"), cv2.imread(str(images[1])))
    shutil.copy(images[2], tmp_path / "in" / "sub" / "c.jpg")
    assert run_cli("segment", "--run-dir", run, "--input", tmp_path / "in", "--out",
                   tmp_path / "png", "--glob", "*.png", *INFER) == 0
    assert sorted(pd.read_csv(tmp_path / "png" / "segments.csv")["image"].unique()) == ["b.png"]
    assert run_cli("segment", "--run-dir", run, "--input", tmp_path / "in", "--out",
                   tmp_path / "top", "--no-recursive", *INFER) == 0
    table = pd.read_csv(tmp_path / "top" / "segments.csv")
    assert sorted(table["image"].unique()) == ["a.jpg", "b.png"]
    assert run_cli("segment", "--run-dir", run, "--input", tmp_path / "in", "--out",
                   tmp_path / "none", "--glob", "*.tif", *INFER) == 1
    assert "no .jpg/.jpeg/.png file matching --glob '*.tif'" in capsys.readouterr().err


def test_a_folder_of_unreadable_files_fails_but_lists_them(tiny_run, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "bad.png").write_bytes(b"\x89PNG garbage")
    assert run_cli("segment", "--run-dir", tiny_run[1], "--input", tmp_path / "in", "--out",
                   tmp_path / "out", *INFER) == 1
    assert "none of the 1 image(s)" in capsys.readouterr().err
    summary = json.loads((tmp_path / "out" / "segments.json").read_text())
    assert [s["image"] for s in summary["skipped"]] == ["bad.png"]


def test_find_images_takes_jpeg_and_png_of_any_case_and_refuses_clashing_names(tmp_path):
    for name in ("a.jpg", "a.PNG", "b.JPEG", "sub/c.png", "sub/d.txt", "x.jpg",
                 "x_overlay.jpg"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    listing = segment.find_images(tmp_path, overlays=True)
    assert listing.images == ["a.PNG", "b.JPEG", "sub/c.png", "x.jpg"]
    assert [c["image"] for c in listing.clashes] == ["a.jpg", "x_overlay.jpg"]
    assert listing.n_ignored == 1
    without = segment.find_images(tmp_path, overlays=False)
    assert without.images[-2:] == ["x.jpg", "x_overlay.jpg"]
    assert segment.find_images(tmp_path, "b*", recursive=False).images == ["b.JPEG"]


def test_min_area_and_min_component_scale_with_the_image_area():
    params = PostProcess(threshold=0.5, min_area=(600, 600, 1000, 2000),
                         min_component=(0, 12, 20, 40))
    assert segment.scaled_postprocess(params, (256, 1600)) is params
    quarter = segment.scaled_postprocess(params, (128, 800))
    assert quarter.min_area == (150, 150, 250, 500) and quarter.min_component == (0, 3, 5, 10)
    probs = torch.zeros(1, 4, 128, 800)
    probs[0, 0, :10, :20] = 0.9   # 200 pixels: above 600/4, below 600
    assert class_masks(probs, quarter)[0, 0].sum() == 200
    assert class_masks(probs, params)[0, 0].sum() == 0


def test_images_are_batched_in_runs_of_one_size():
    sizes = [(2, 3), (2, 3), None, (2, 3), (4, 5), (4, 5), (2, 3)]
    items = [{"path": str(i), "error": "bad"} if s is None else {"path": str(i), "size": s}
             for i, s in enumerate(sizes)]
    skipped = []
    batches = [[item["path"] for item in batch]
               for batch in segment.same_size_batches(items, 2, skipped)]
    assert batches == [["0", "1"], ["3"], ["4", "5"], ["6"]]
    assert skipped == [{"image": "2", "reason": "bad"}]
