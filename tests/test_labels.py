import shutil

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.data import images, rle
from pipeline.data import labels as label_io
from pipeline.data.dataset import SteelDataset, Transform
from pipeline.config import CLASS_IDS, DataPaths


@pytest.fixture()
def real_layout(tmp_path, real_sample):
    """The real sample arranged as the competition layout in tmp_path."""
    shutil.copytree(real_sample / "train_images", tmp_path / "train_images")
    shutil.copy(real_sample / "train.csv", tmp_path / "train.csv")
    return DataPaths(tmp_path)


def to_original_format(labels: pd.DataFrame, image_ids: list[str]) -> pd.DataFrame:
    wide = label_io.rle_table(labels, image_ids)
    rows = [(f"{image_id}_{c}", wide.loc[image_id, c]) for image_id in image_ids for c in CLASS_IDS]
    return pd.DataFrame(rows, columns=label_io.ORIGINAL_HEADER)


def test_real_sample_loads_with_defect_free_image(real_layout):
    labels, image_ids = label_io.load_train(real_layout)
    assert list(labels.columns) == label_io.LABEL_COLUMNS
    assert len(image_ids) == 6 and len(labels) == 5
    assert "0a1cade03.jpg" in image_ids
    assert "0a1cade03.jpg" not in set(labels["ImageId"])
    assert set(labels["ClassId"]) == {1, 2, 3, 4}


def test_both_formats_give_the_same_table(real_layout, tmp_path):
    labels, image_ids = label_io.load_train(real_layout)
    original = tmp_path / "train_original.csv"
    shuffled = to_original_format(labels, image_ids).sample(frac=1, random_state=0)
    shuffled.to_csv(original, index=False)
    assert len(pd.read_csv(original)) == 4 * len(image_ids)
    pd.testing.assert_frame_equal(label_io.read_labels(original), labels)


def write_csv(tmp_path, text):
    path = tmp_path / "train.csv"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text,message", [
    ("ImageId,Class,EncodedPixels\na.jpg,1,1 2\n", "malformed header"),
    ("ImageId,ClassId,EncodedPixels\na.jpg,1,1 2\na.jpg,5,1 2\n", r"train.csv:3: unknown ClassId"),
    ("ImageId,ClassId,EncodedPixels\na.jpg,1,1 2\nb.jpg,2,1 2\na.jpg,1,9 2\n", "lines 2 and 4"),
    ("ImageId,ClassId,EncodedPixels\na.jpg,1,1 2\na.jpg,2,1 2 3\n", r"train.csv:3: .*odd"),
    ("ImageId_ClassId,EncodedPixels\na.jpg_1,1 2\na.jpg_7,\n", r"train.csv:3: unknown ClassId"),
    ("ImageId_ClassId,EncodedPixels\na.jpg1,1 2\n", r"train.csv:2: .*not '<image>_<class>'"),
])
def test_bad_csv_raises_with_file_and_line(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        label_io.read_labels(write_csv(tmp_path, text))


def test_missing_image_file_names_the_row(real_layout):
    (real_layout.train_images / "b2ad335bf.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="b2ad335bf.jpg.*class 3"):
        label_io.load_train(real_layout)


def test_missing_image_dir_says_how_to_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="make download"):
        images.list_images(tmp_path / "nope")


def test_masks_and_label_map(real_layout):
    labels, image_ids = label_io.load_train(real_layout)
    table = label_io.rle_table(labels, image_ids)
    masks = label_io.masks_from_rles(list(table.loc["988cf521f.jpg"]))
    assert masks.shape == (4, 256, 1600) and masks.dtype == np.uint8
    assert masks[0].sum() == rle.area(table.loc["988cf521f.jpg", 1]) > 0
    assert masks[1:].sum() == 0
    labels_map = label_io.label_map(masks)
    assert set(np.unique(labels_map)) == {0, 1}
    assert label_io.masks_from_rles(list(table.loc["0a1cade03.jpg"])).sum() == 0


def test_label_map_overlap_highest_class_wins():
    masks = np.zeros((4, 2, 3), dtype=np.uint8)
    masks[0, 0, :] = 1
    masks[2, 0, 1:] = 1
    assert label_io.label_map(masks).tolist() == [[1, 3, 3], [0, 0, 0]]


def test_read_image_errors(tmp_path, real_sample):
    image = images.read_image(real_sample / "train_images" / "0a1cade03.jpg")
    assert image.shape == (256, 1600, 3) and image.dtype == np.uint8
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        images.read_image(tmp_path / "missing.jpg")
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ValueError, match="corrupt.jpg.*cannot be decoded"):
        images.read_image(corrupt)
    with pytest.raises(ValueError, match="expected 800x256"):
        images.read_image(real_sample / "train_images" / "0a1cade03.jpg", shape=(256, 800))


@pytest.mark.parametrize("scale, reduction", [(1.0, 1), (2.0, 1), (0.75, 1), (0.5, 2),
                                              (0.3, 2), (0.25, 4), (0.125, 8), (0.05, 8)])
def test_the_decode_reduction_never_goes_below_the_scale(scale, reduction):
    assert images.reduction_for(scale) == reduction


@pytest.mark.parametrize("reduce", [2, 4, 8])
def test_scaled_decode_matches_decode_then_area_resize(real_sample, reduce):
    for path in sorted((real_sample / "train_images").glob("*.jpg")):
        reduced = images.read_image(path, reduce=reduce)
        size = (256 // reduce, 1600 // reduce)
        resized = images.resize(images.read_image(path), size)
        assert reduced.shape == resized.shape == size + (3,) and reduced.dtype == np.uint8
        diff = np.abs(reduced.astype(int) - resized.astype(int))
        assert diff.mean() < 0.5 and diff.max() <= 8, (path.name, diff.mean(), diff.max())


def test_scaled_decode_checks_the_size_in_the_header(tmp_path, real_sample):
    image = images.read_image(real_sample / "train_images" / "0a1cade03.jpg")
    # 255x1599 decodes to 128x800 at 1/2, as 256x1600 does: only the header tells them apart.
    almost = tmp_path / "almost.jpg"
    almost.write_bytes(cv2.imencode(".jpg", image[:255, :1599])[1].tobytes())
    with pytest.raises(ValueError, match=r"almost\.jpg is 1599x255, expected 1600x256"):
        images.read_image(almost, reduce=2)
    png = tmp_path / "png.jpg"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    with pytest.raises(ValueError, match=r"png\.jpg cannot be decoded"):
        images.read_image(png, reduce=4)
    with pytest.raises(ValueError, match="valid reductions are"):
        images.read_image(real_sample / "train_images" / "0a1cade03.jpg", reduce=3)


def test_datasets_decode_scaled_unless_a_shift_needs_the_full_image(real_layout):
    paths = real_layout
    table, ids = label_io.load_train(paths)
    rles = label_io.rle_table(table, ids)
    scaled = SteelDataset(paths.train_images, ids, rles, Transform(scale=0.25), full_masks=True)
    full = SteelDataset(paths.train_images, ids, rles, Transform(scale=0.25, decode="full"),
                        full_masks=True)
    a, b = scaled[0], full[0]
    assert a["image"].shape == b["image"].shape == (3, 64, 400)
    assert (a["image"].int() - b["image"].int()).abs().float().mean() < 0.5
    assert torch.equal(a["masks"], b["masks"]) and a["masks"].shape == (4, 256, 1600)
    seen = []
    shifted = SteelDataset(paths.train_images, ids, rles, Transform(scale=0.25),
                           full_masks=True, shift=lambda image, _: seen.append(image.shape)
                           or image)
    assert shifted[0]["image"].shape == (3, 64, 400) and seen == [(256, 1600, 3)]
    with pytest.raises(ValueError, match="decode 'fast' is not valid"):
        Transform(scale=0.5, decode="fast")
