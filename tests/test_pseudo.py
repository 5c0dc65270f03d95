import json

import numpy as np
import pytest

from pipeline.data import labels
from pipeline.inference import pseudo
from pipeline.inference.postprocess import PostProcess
from pipeline.inference.pseudo import Rule


def random_oof(seed, n=400):
    """Presence, decisions and truth with the agreement of a useful model (class 2: a model
    that is right about half the time, class 4: presence unrelated to truth)."""
    rng = np.random.default_rng(seed)
    truth = rng.random((n, 4)) < [0.3, 0.1, 0.5, 0.2]
    noise = rng.random((n, 4))
    presence = np.clip(np.where(truth, 0.6, 0.3) + (noise - 0.5) * [0.6, 1.6, 0.5, 1.2], 0, 1)
    predicted = np.where(rng.random((n, 4)) < 0.9, presence > 0.5, ~(presence > 0.5))
    return np.round(presence, 2), predicted, truth


def rule_with(hi, lo):
    return Rule(tuple(hi), tuple(lo), 0.95, (0,) * 4, (None,) * 4, (0,) * 4, (None,) * 4,
                0, 0, (0,) * 4)


def brute_keep(rule, presence, predicted):
    kept = []
    for i in range(len(presence)):
        ok = True
        for c in range(4):
            if predicted[i, c]:
                ok &= rule.hi[c] is not None and presence[i, c] >= rule.hi[c]
            else:
                ok &= rule.lo[c] is not None and presence[i, c] <= rule.lo[c]
        kept.append(bool(ok))
    return np.array(kept)


def brute_choose(presence, predicted, truth, target, c):
    """(hi, n+, precision+, lo, n-, precision-) of class c by a plain search of the grids."""
    hi = lo = (None, 0, None)
    for h in pseudo.HI_GRID:
        rows = [i for i in range(len(presence)) if predicted[i, c] and presence[i, c] >= h]
        right = sum(bool(truth[i, c]) for i in rows)
        if rows and right / len(rows) >= target:
            hi = (h, len(rows), right / len(rows))
            break
    for low in reversed(pseudo.LO_GRID):
        rows = [i for i in range(len(presence)) if not predicted[i, c] and presence[i, c] <= low]
        right = sum(not truth[i, c] for i in rows)
        if rows and right / len(rows) >= target:
            lo = (low, len(rows), right / len(rows))
            break
    return hi + lo


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_keep_equals_a_loop_over_images_and_classes(seed):
    rng = np.random.default_rng(seed)
    presence = np.round(rng.random((300, 4)), 2)
    predicted = rng.random((300, 4)) < 0.4
    rule = rule_with([0.6, None, 0.8, 0.7], [0.3, 0.2, None, 0.45])
    kept = pseudo.keep(rule, presence, predicted)
    assert kept.dtype == bool and kept.shape == (300,)
    np.testing.assert_array_equal(kept, brute_keep(rule, presence, predicted))
    loose = rule_with([0.5] * 4, [0.5] * 4)
    assert 0 < pseudo.keep(loose, presence, predicted).sum() < 300


@pytest.mark.parametrize("seed,target", [(0, 0.95), (1, 0.9), (2, 0.8)])
def test_choose_rule_equals_a_brute_force_search(seed, target):
    presence, predicted, truth = random_oof(seed)
    rule = pseudo.choose_rule(presence, predicted, truth, precision=target)
    for c in range(4):
        hi, n_pos, p_pos, lo, n_neg, p_neg = brute_choose(presence, predicted, truth, target, c)
        assert (rule.hi[c], rule.n_positive[c], rule.lo[c], rule.n_negative[c]) == \
            (hi, n_pos, lo, n_neg), c
        assert rule.positive_precision[c] == pytest.approx(p_pos)
        assert rule.negative_precision[c] == pytest.approx(p_neg)
    kept = brute_keep(rule, presence, predicted)
    assert rule.oof_kept == kept.sum() and rule.n_oof == len(presence)
    assert list(rule.oof_kept_positive) == predicted[kept].sum(axis=0).tolist()


def test_reported_precision_is_a_hand_count():
    # class 1: positives with presence 0.9, 0.8, 0.7, 0.6 whose truth is T, T, T, F
    presence = np.array([[0.9, 0.1, 0.1, 0.1], [0.8, 0.1, 0.1, 0.1], [0.7, 0.1, 0.1, 0.1],
                         [0.6, 0.1, 0.1, 0.1], [0.05, 0.1, 0.1, 0.1], [0.2, 0.1, 0.1, 0.1]])
    predicted = np.zeros((6, 4), bool)
    predicted[:4, 0] = True
    truth = np.zeros((6, 4), bool)
    truth[:3, 0] = True
    truth[5, 0] = True          # a miss at presence 0.2: negatives are right only up to 0.19
    rule = pseudo.choose_rule(presence, predicted, truth, precision=0.75)
    # from the grid's first value 0.5 up to 0.6 all 4 count, 3 right = 75%
    assert (rule.hi[0], rule.n_positive[0], rule.positive_precision[0]) == (0.5, 4, 0.75)
    assert (rule.lo[0], rule.n_negative[0], rule.negative_precision[0]) == (0.19, 1, 1.0)
    rule = pseudo.choose_rule(presence, predicted, truth, precision=0.95)
    # above 0.6 the wrong one drops out: 3 of 3
    assert (rule.hi[0], rule.n_positive[0], rule.positive_precision[0]) == (0.61, 3, 1.0)
    # classes 2..4: never predicted, truth empty: every negative right up to the top of LO_GRID
    assert rule.lo[1:] == (0.5,) * 3 and rule.n_negative[1:] == (6,) * 3
    assert rule.hi[1:] == (None,) * 3 and rule.positive_precision[1:] == (None,) * 3
    assert rule.oof_kept == 4        # images 0, 1, 2 (positives) and 4 (presence 0.05)


def test_a_class_that_never_reaches_the_precision_keeps_no_positive_of_it():
    presence, predicted, truth = random_oof(3)
    truth[:, 1] = False                      # class 2: every positive prediction is wrong
    rule = pseudo.choose_rule(presence, predicted, truth)
    assert rule.hi[1] is None and rule.n_positive[1] == 0 and rule.positive_precision[1] is None
    assert rule.lo[1] == 0.5                 # its negatives are all right
    rng = np.random.default_rng(4)
    test_predicted = rng.random((500, 4)) < 0.3
    test_presence = np.where(test_predicted, 1.0, 0.0)       # as confident as can be
    kept = pseudo.keep(rule, test_presence, test_predicted)
    assert kept.any() and not (kept & test_predicted[:, 1]).any()
    assert kept.sum() == (~test_predicted[:, 1]).sum() < 500
    oof_kept = pseudo.keep(rule, presence, predicted)
    assert not (oof_kept & predicted[:, 1]).any() and rule.oof_kept_positive[1] == 0


def test_oof_decisions_by_hand():
    thresholds = np.array([np.nan, 0.5])   # K = 2: argmax, 0.5
    counts = np.zeros((3, 2, 4, 3), np.int64)
    counts[0, 0] = [[5, 50, 60], [0, 0, 0], [0, 0, 0], [0, 0, 10]]      # argmax slice
    counts[0, 1] = [[9, 90, 60], [0, 80, 0], [40, 400, 300], [0, 0, 10]]  # 0.5 slice
    counts[1, 1] = [[0, 0, 0], [120, 150, 130], [0, 500, 0], [0, 0, 0]]
    counts[1, 0, 3] = [7, 7, 7]
    counts[2, 1, 2] = [0, 0, 20]
    presence = np.array([[0.9, 0.9, 0.9, 0.9], [0.9, 0.9, 0.4, 0.9], [0.1, 0.1, 0.7, 0.1]])
    params = PostProcess(head="sigmoid", threshold=[None, 0.5, 0.5, None],
                         min_area=[0, 100, 0, 0], presence=[None, None, 0.6, None])
    predicted, area, truth = pseudo.oof_decisions(counts, thresholds, presence, params)
    # image 0: class 1 at argmax (50 px); class 2 80 px < min_area 100; class 3 open gate
    # image 1: class 2 150 px kept; class 3 500 px but presence 0.4 < gate 0.6; class 4 7 px
    # image 2: nothing predicted; class 3 true
    assert area.tolist() == [[50, 0, 400, 0], [0, 150, 0, 7], [0, 0, 0, 0]]
    assert predicted.tolist() == (area > 0).tolist()
    assert truth.tolist() == [[True, False, True, True], [False, True, False, True],
                              [False, False, True, False]]
    with pytest.raises(ValueError, match="threshold 0.4 is not one of"):
        pseudo.oof_decisions(counts, thresholds, presence, params.replace(threshold=0.4))
    with pytest.raises(ValueError, match="presence gate"):
        pseudo.oof_decisions(counts, thresholds, None, params)


def test_the_csv_round_trips(tmp_path):
    path = tmp_path / "pseudo" / "pseudo.csv"
    rles = {"b.jpg": ["", "1 5", "", ""], "a.jpg": ["3 4 10 2", "", "", "7 1"],
            "c.jpg": ["", "", "", ""], "d.jpg": ["9 9", "", "", ""]}
    pseudo.write_pseudo_csv(path, ["b.jpg", "a.jpg", "c.jpg"], rles)
    assert path.read_text().splitlines()[:3] == ["ImageId,ClassId,EncodedPixels",
                                                 "a.jpg,1,3 4 10 2", "a.jpg,2,"]
    table = labels.read_table(path)
    assert list(table.columns) == ["ImageId", "ClassId", "EncodedPixels"]
    assert table["ImageId"].tolist() == ["a.jpg"] * 4 + ["b.jpg"] * 4 + ["c.jpg"] * 4
    assert table["ClassId"].tolist() == ["1", "2", "3", "4"] * 3
    nonempty = labels.read_labels(path)
    assert nonempty.values.tolist() == [["a.jpg", 1, "3 4 10 2"], ["a.jpg", 4, "7 1"],
                                        ["b.jpg", 2, "1 5"]]
    pseudo.write_pseudo_csv(path, [], rles)
    assert path.read_text() == "ImageId,ClassId,EncodedPixels\n"
    with pytest.raises(ValueError, match="image e.jpg: pseudo-labels need 4 RLE strings"):
        pseudo.write_pseudo_csv(path, ["e.jpg"], rles)
    with pytest.raises(ValueError, match="listed twice"):
        pseudo.write_pseudo_csv(path, ["a.jpg", "a.jpg"], rles)


def test_a_model_without_a_gate_is_refused():
    _, predicted, truth = random_oof(0, n=20)
    with pytest.raises(ValueError, match="pseudo-labels need a presence gate .*train with --gate"):
        pseudo.choose_rule(None, predicted, truth)
    with pytest.raises(ValueError, match="train with --gate"):
        pseudo.keep(rule_with([0.5] * 4, [0.5] * 4), None, predicted)


def test_rule_round_trips_through_json_and_the_report_has_a_row_per_class():
    presence, predicted, truth = random_oof(5)
    rule = pseudo.choose_rule(presence, predicted, truth, precision=0.9)
    assert Rule.from_dict(json.loads(json.dumps(rule.as_dict()))) == rule
    with pytest.raises(ValueError, match="keys"):
        Rule.from_dict({"hi": [None] * 4})
    kept = pseudo.keep(rule, presence[:100], predicted[:100])
    report = pseudo.format_report(rule, presence[:100], predicted[:100])
    lines = report.splitlines()
    assert f"test keeps {kept.sum()} of 100" in lines[0]
    assert [line.split()[0] for line in lines[2:]] == ["1", "2", "3", "4"]
    positives = predicted[:100][kept].sum(axis=0)
    assert [int(line.split()[-1]) for line in lines[2:]] == positives.tolist()
    assert len(pseudo.format_report(rule).splitlines()) == 6
