import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline import cli
from pipeline.data import rle
from pipeline.data import labels as label_io
from pipeline.inference import postprocess, submission


@pytest.fixture()
def full_sample(real_sample):
    return submission.read_sample(real_sample / "sample_submission_full.csv")


@pytest.fixture()
def old_sample(real_sample, tmp_path):
    """An original-format sample built from the real old-format predictions' rows."""
    table = pd.read_csv(real_sample / "test_predictions_oldformat.csv", keep_default_na=False)
    path = tmp_path / "sample_old.csv"
    table.assign(EncodedPixels="1 1").to_csv(path, index=False)
    return submission.read_sample(path)


def predictions_from_oldformat(real_sample):
    table = pd.read_csv(real_sample / "test_predictions_oldformat.csv", keep_default_na=False)
    keys = table["ImageId_ClassId"].str.rpartition("_")
    out = {}
    for image_id, class_id, encoded in zip(keys[0], keys[2].astype(int), table.EncodedPixels):
        out.setdefault(image_id, [""] * 4)[class_id - 1] = encoded
    return out


def test_sample_formats(full_sample, old_sample):
    assert full_sample.format == "current" and len(full_sample.image_ids) == 5506
    assert old_sample.format == "original" and len(old_sample.image_ids) == 1801


def test_original_format_roundtrip_is_byte_identical(real_sample, old_sample, tmp_path):
    predictions = predictions_from_oldformat(real_sample)
    out = tmp_path / "submission.csv"
    submission.write(submission.build(old_sample, predictions), out)
    assert out.read_bytes() == (real_sample / "test_predictions_oldformat.csv").read_bytes()
    table = submission.validate(out, old_sample)
    assert submission.to_predictions(table, old_sample) == predictions


def test_current_format_rows_and_order(real_sample, tmp_path):
    predictions = predictions_from_oldformat(real_sample)
    ids = list(predictions)
    sample_path = tmp_path / "sample.csv"
    pd.DataFrame({"ImageId": ids, "EncodedPixels": "1 409600", "ClassId": 0}).to_csv(
        sample_path, index=False)
    sample = submission.read_sample(sample_path)
    out = tmp_path / "submission.csv"
    table = submission.build(sample, predictions)
    submission.write(table, out)
    submission.validate(out, sample)
    n_defect_rows = sum(bool(r) for rles in predictions.values() for r in rles)
    n_clean = sum(not any(rles) for rles in predictions.values())
    assert len(table) == n_defect_rows + n_clean
    assert list(dict.fromkeys(table["ImageId"])) == ids
    assert (table[table.ClassId == "0"]["EncodedPixels"] == "1 409600").all()
    assert submission.to_predictions(pd.read_csv(out, dtype=str, keep_default_na=False),
                                     sample) == predictions


def test_full_real_sample_validates_as_is(real_sample, full_sample):
    table = submission.validate(real_sample / "sample_submission_full.csv", full_sample)
    assert len(table) == 5506


@pytest.mark.parametrize("breakage,message", [
    (lambda t: t.rename(columns={"ClassId": "Class"}), "columns"),
    (lambda t: t.iloc[1:], "missing"),
    (lambda t: pd.concat([t, t.iloc[:1].assign(ImageId="zzz.jpg")]), "not in the sample"),
    (lambda t: t.iloc[[1, 0, *range(2, len(t))]], "order"),
    (lambda t: t.assign(ClassId=t.ClassId.where(t.index != 3, "7")), "ClassId '7'"),
    (lambda t: t.assign(EncodedPixels=t.EncodedPixels.where(t.index != 5, "5 3 1 2")),
     "line 7: RLE runs are unsorted"),
    (lambda t: t.assign(EncodedPixels=t.EncodedPixels.where(t.index != 2, "409600 2")),
     "line 4: RLE run .* past pixel"),
    (lambda t: t.assign(EncodedPixels=t.EncodedPixels.where(t.index != 2, "1 2 3")), "odd"),
    (lambda t: pd.concat([t.iloc[:1], t.iloc[:1].assign(ClassId="3", EncodedPixels="1 5"),
                          t.iloc[1:]]), "ClassId-0 row beside"),
])
def test_validator_rejects_broken_current_files(real_sample, full_sample, tmp_path, breakage,
                                                message):
    table = pd.read_csv(real_sample / "sample_submission_full.csv", dtype=str,
                        keep_default_na=False).iloc[:50].reset_index(drop=True)
    sample_path = tmp_path / "sample.csv"
    table.to_csv(sample_path, index=False)
    broken = tmp_path / "broken.csv"
    breakage(table).to_csv(broken, index=False)
    with pytest.raises(ValueError, match=message):
        submission.validate(broken, submission.read_sample(sample_path))


def test_validator_rejects_broken_original_files(real_sample, old_sample, tmp_path):
    table = pd.read_csv(real_sample / "test_predictions_oldformat.csv", dtype=str,
                        keep_default_na=False)
    swapped = table.iloc[[1, 0, *range(2, len(table))]]
    path = tmp_path / "swapped.csv"
    swapped.to_csv(path, index=False)
    with pytest.raises(ValueError, match="same rows, same order"):
        submission.validate(path, old_sample)
    table.iloc[:-4].to_csv(path, index=False)
    with pytest.raises(ValueError, match="7200 rows, the sample has 7204"):
        submission.validate(path, old_sample)


def test_oracle_scores_exactly_one(real_sample, tmp_path):
    """Truth masks fed as probabilities through post-processing, RLE and CSV score 1.0."""
    labels = label_io.read_labels(real_sample / "train.csv")
    ids = sorted(set(labels.ImageId)) + ["0a1cade03.jpg"]
    table = label_io.rle_table(labels, ids)
    masks = torch.from_numpy(np.stack(
        [label_io.masks_from_rles(list(table.loc[i])) for i in ids])).float()
    pred = postprocess.class_masks(masks, postprocess.PostProcess(head="sigmoid", threshold=0.5,
                                                                  min_area=1))
    predictions = {i: [rle.encode(m) for m in pred[n].numpy()] for n, i in enumerate(ids)}
    sample_path = tmp_path / "sample.csv"
    pd.DataFrame({"ImageId": ids, "EncodedPixels": "1 409600", "ClassId": 0}).to_csv(
        sample_path, index=False)
    sample = submission.read_sample(sample_path)
    out = tmp_path / "submission.csv"
    submission.write(submission.build(sample, predictions), out)
    scores = submission.score(submission.to_predictions(submission.validate(out, sample), sample),
                              labels)
    assert scores.score == 1.0 and scores.nonempty == 1.0
    assert scores.all_empty_baseline == pytest.approx(1 - 5 / 24)


def test_cli_validate(real_sample, capsys):
    sample = str(real_sample / "sample_submission_full.csv")
    assert cli.main(["validate", sample, "--sample", sample]) == 0
    assert "valid current-format submission" in capsys.readouterr().out
    assert cli.main(["validate", str(real_sample / "train.csv"), "--sample", sample]) == 1
    assert "columns" in capsys.readouterr().err


def test_read_sample_errors(tmp_path, real_sample):
    with pytest.raises(FileNotFoundError):
        submission.read_sample(tmp_path / "nope.csv")
    shutil.copy(real_sample / "train.csv", tmp_path / "train.csv")
    with pytest.raises(ValueError, match="neither"):
        submission.read_sample(tmp_path / "train.csv")
