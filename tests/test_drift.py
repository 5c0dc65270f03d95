import json

import numpy as np
import pytest

from pipeline.inference import drift


def figures_with(shares, n=1000, area=1000):
    """Test figures of n images where class c is predicted on the first shares[c] * n."""
    present = np.arange(n)[:, None] < np.round(np.asarray(shares) * n)[None, :]
    return drift.figures(present, np.where(present, area, 0))


def reference_with(shares, n=1000):
    oof = figures_with(shares, n)
    return {"oof": oof, "train_prior": [0.07, 0.02, 0.41, 0.06], "n_train": 2000}


def test_figures_on_literal_arrays():
    present = np.array([[1, 0, 1, 0], [1, 0, 0, 0], [0, 0, 1, 0], [1, 0, 1, 0]], bool)
    areas = np.array([[100, 0, 50, 0], [300, 0, 0, 0], [0, 7, 10, 0], [200, 0, 20, 0]])
    got = drift.figures(present, areas)
    assert got == {"n_images": 4, "share": [0.75, 0.0, 0.75, 0.0],
                   "median_area": [200.0, None, 20.0, None]}
    assert json.loads(json.dumps(got)) == got
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        drift.figures(present[:, :3], areas[:, :3])


def test_reference_holds_oof_figures_and_the_training_prior(tmp_path):
    oof_predicted = np.array([[1, 0, 1, 0], [0, 0, 1, 1]], bool)
    oof_area = np.array([[500, 0, 900, 0], [0, 0, 300, 4000]])
    train = np.zeros((10, 4), bool)
    train[:3, 0] = train[:6, 2] = True
    ref = drift.reference(oof_predicted, oof_area, train)
    assert ref["oof"]["share"] == [0.5, 0.0, 1.0, 0.5]
    assert ref["oof"]["median_area"] == [500.0, None, 600.0, 4000.0]
    assert ref["train_prior"] == [0.3, 0.0, 0.6, 0.0] and ref["n_train"] == 10
    drift.save(tmp_path / "drift.json", ref)
    assert drift.load(tmp_path / "drift.json") == ref
    (tmp_path / "bad.json").write_text('{"oof": {}}')
    with pytest.raises(ValueError, match="bad.json is not a drift reference"):
        drift.load(tmp_path / "bad.json")


def test_a_class_predicted_nowhere_on_test_warns():
    ref = reference_with([0.08, 0.02, 0.20, 0.06])
    lines = drift.check(figures_with([0.08, 0.02, 0.0, 0.06]), ref)
    assert len(lines) == 1
    assert lines[0].startswith("class 3: predicted on 0.0% of the 1,000 test images vs "
                               "20.0% out-of-fold")
    assert "a model that predicts nothing on new images?" in lines[0]


def test_no_warning_within_the_factor():
    ref = reference_with([0.08, 0.02, 0.20, 0.06])
    # every class moved, but by less than 2x either way (0.08 -> 0.05 is 1.6x fewer)
    assert drift.check(figures_with([0.05, 0.035, 0.30, 0.04]), ref) == []
    assert drift.check(figures_with([0.05, 0.035, 0.30, 0.04]), ref, factor=1.5) != []


def test_too_many_positives_warn_the_other_way():
    ref = reference_with([0.08, 0.02, 0.20, 0.06])
    lines = drift.check(figures_with([0.40, 0.02, 0.20, 0.06]), ref)
    assert len(lines) == 1 and lines[0].startswith("class 1: predicted on 40.0%")
    assert "5.0x more" in lines[0]
    lines = drift.check(figures_with([0.08, 0.02, 0.20, 0.01]), ref)
    assert len(lines) == 1 and lines[0].startswith("class 4:") and "6.0x fewer" in lines[0]


def test_the_floor_spares_tiny_test_sets():
    ref = reference_with([0.2, 0.0, 0.2, 0.0])
    # 5 test images: class 1 on none (expected 1), class 2 on 1 (never OOF): not alarming
    tiny = drift.figures(np.array([[0, 1, 1, 0]] + [[0, 0, 0, 0]] * 4, bool),
                         np.array([[0, 50, 50, 0]] + [[0, 0, 0, 0]] * 4))
    assert drift.check(tiny, ref) == []
    # the same shares on 100 images (20 class-1 images expected, none seen) warn
    many = figures_with([0.0, 0.2, 0.2, 0.0], n=100)
    lines = drift.check(many, ref)
    assert [line.split(":")[0] for line in lines] == ["class 1", "class 2"]
    assert "never predicted out-of-fold" in lines[1]
    assert drift.check(tiny, ref, pseudo_images=0.01) != []


def test_the_table_has_a_row_per_class():
    ref = reference_with([0.08, 0.02, 0.20, 0.06])
    table = drift.format_table(figures_with([0.08, 0.0, 0.20, 0.06], area=2500), ref)
    lines = table.splitlines()
    rows = [line.split() for line in lines[2:]]
    assert [row[0] for row in rows] == ["1", "2", "3", "4"]
    assert rows[1] == ["2", "0.0%", "-", "2.0%", "1,000", "2.0%"]
    assert rows[2] == ["3", "20.0%", "2,500", "20.0%", "1,000", "41.0%"]
