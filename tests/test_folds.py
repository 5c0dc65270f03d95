import pandas as pd
import pytest

from pipeline.data import folds


def toy_labels(n_images=200, seed=0):
    """Labels with the real set's class mix: ~half defect-free, class 3 dominant, combos."""
    rng = pd.Series(range(n_images)).sample(frac=1, random_state=seed).tolist()
    image_ids = [f"{i:09x}.jpg" for i in range(n_images)]
    rows = []
    for rank, image_id in zip(rng, image_ids):
        if rank % 2 == 0:
            continue
        classes = {1: [3], 3: [1], 5: [3], 7: [4], 9: [3], 11: [3, 4], 13: [2], 15: [3]}
        for class_id in classes.get(rank % 16, [3]):
            rows.append((image_id, class_id, "1 5"))
    rows.append((image_ids[0], 1, "1 5"))   # a one-off combination
    rows.append((image_ids[0], 2, "9 5"))
    rows.append((image_ids[0], 4, "20 5"))
    labels = pd.DataFrame(rows, columns=["ImageId", "ClassId", "EncodedPixels"])
    return labels.drop_duplicates(["ImageId", "ClassId"]), image_ids


def test_every_image_in_exactly_one_fold_and_deterministic():
    labels, image_ids = toy_labels()
    table = folds.make_folds(labels, image_ids, n_folds=5, seed=3)
    assert sorted(table["ImageId"]) == sorted(image_ids)
    assert table["ImageId"].is_unique
    assert set(table["fold"]) == set(range(5))
    pd.testing.assert_frame_equal(table, folds.make_folds(labels, image_ids, n_folds=5, seed=3))
    assert not table.equals(folds.make_folds(labels, image_ids, n_folds=5, seed=4))


def test_class_counts_are_balanced():
    labels, image_ids = toy_labels(400)
    counts = folds.fold_class_counts(folds.make_folds(labels, image_ids, n_folds=5))
    for column in counts.columns:
        assert counts[column].max() - counts[column].min() <= 2, counts


def test_rare_combinations_are_merged():
    keys = pd.Series(["0"] * 10 + ["3"] * 10 + ["1+2+4"] + ["1+3"] * 2)
    merged = folds.strata(keys, n_folds=5)
    assert set(merged) == {"0", "3"}
    assert merged.iloc[-1] in {"0", "3"}


def test_class_sets_include_defect_free_images():
    labels, image_ids = toy_labels(20)
    keys = folds.class_sets(labels, image_ids)
    assert keys[image_ids[0]].startswith("1+2")
    assert (keys == "0").sum() == len(image_ids) - labels["ImageId"].nunique()


def test_bad_arguments(tmp_path):
    labels, image_ids = toy_labels(4)
    with pytest.raises(ValueError, match="cannot make 5 folds"):
        folds.make_folds(labels, image_ids, n_folds=5)
    with pytest.raises(ValueError, match="at least 2"):
        folds.make_folds(labels, image_ids, n_folds=1)
    with pytest.raises(FileNotFoundError, match="make folds"):
        folds.read_folds(tmp_path / "folds.csv")


def test_roundtrip_and_mismatch(tmp_path):
    labels, image_ids = toy_labels(30)
    table = folds.make_folds(labels, image_ids, n_folds=3)
    folds.write_folds(table, tmp_path / "folds.csv")
    pd.testing.assert_frame_equal(folds.read_folds(tmp_path / "folds.csv", image_ids), table)
    with pytest.raises(ValueError, match="rerun `make folds`"):
        folds.read_folds(tmp_path / "folds.csv", image_ids[:-1])
