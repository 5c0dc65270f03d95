"""Where the OOF score is lost: the split sums to the deficit, the interval holds the score."""

import json

import numpy as np
import pytest

from helpers import run_cli
from pipeline import metrics
from pipeline.inference import breakdown, tuning


def random_pairs(seed: int, n: int = 40):
    """``(intersection, pred_area, true_area)`` (n, 4) with empty and non-empty pairs."""
    rng = np.random.default_rng(seed)
    true_area = rng.integers(0, 3000, (n, 4)) * (rng.random((n, 4)) < 0.4)
    pred_area = rng.integers(0, 3000, (n, 4)) * (rng.random((n, 4)) < 0.4)
    intersection = np.minimum(true_area, pred_area) * rng.random((n, 4)) // 1
    return intersection.astype(np.int64), pred_area, true_area


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_split_sums_exactly_to_the_deficit_of_each_class(seed):
    pairs = random_pairs(seed)
    split = breakdown.split_deficit(*pairs)
    dice = metrics.dice_from_counts(*pairs)
    for c, row in enumerate(split["per_class"]):
        assert row["deficit"] == pytest.approx(1 - dice[:, c].mean(), abs=1e-12)
        assert row["false_positive"] + row["missed"] + row["partial"] == pytest.approx(
            row["deficit"], abs=1e-12)
        # counted by hand: a false positive or a miss costs the whole pair
        intersection, pred, true = (a[:, c] for a in pairs)
        assert row["n_false_positive"] == sum(1 for p, t in zip(pred, true) if t == 0 < p)
        assert row["n_missed"] == sum(1 for p, t in zip(pred, true) if p == 0 < t)
        assert row["missed"] == row["n_missed"] / len(pred)


def test_the_bootstrap_interval_holds_the_tuned_score_and_narrows_with_images():
    small = breakdown.bootstrap(*random_pairs(3, n=20))
    large = breakdown.bootstrap(*random_pairs(3, n=2000))
    for interval in (small, large):
        assert interval["low"] <= interval["tuned"] <= interval["high"]
    assert large["high"] - large["low"] < small["high"] - small["low"]
    assert small["tuned"] == pytest.approx(metrics.dice_from_counts(
        *random_pairs(3, n=20)).mean())


def test_costliest_images_come_first_and_free_ones_are_left_out():
    pairs = random_pairs(4, n=12)
    ranked = breakdown.costliest(*pairs, [f"{i}.jpg" for i in range(12)], k=12)
    cost = (1 - metrics.dice_from_counts(*pairs)).sum(axis=1)
    assert [r["cost"] for r in ranked] == sorted(cost[cost > 0], reverse=True)
    assert all(cost[int(r["image_id"].split(".")[0])] == r["cost"] for r in ranked)


def test_a_fold_tuned_alone_scores_at_least_the_global_values_there():
    rng = np.random.default_rng(5)
    n, thresholds = 30, tuning.SIGMOID_THRESHOLDS
    true = rng.integers(0, 2000, (n, 1, 4)) * (rng.random((n, 1, 4)) < 0.5)
    pred = rng.integers(0, 2000, (n, len(thresholds), 4))
    counts = np.stack([np.minimum(true, pred) // 2, pred, np.broadcast_to(true, pred.shape)],
                      axis=-1)
    chosen = tuning.default_and_tuned(counts, thresholds, "sigmoid").chosen
    rows = breakdown.per_fold(counts, thresholds, "sigmoid", None, np.arange(n) % 3, chosen)
    assert [r["fold"] for r in rows] == [0, 1, 2] and sum(r["n_images"] for r in rows) == n
    for row in rows:
        assert row["tuned_score"] >= row["score_at_chosen"] - 1e-12


def test_cv_reports_the_breakdown_the_gallery_and_the_stability(tiny_run_copy, capsys):
    data, run = tiny_run_copy
    assert run_cli("cv", "--data-dir", data, "--run-dir", run, "--workers", 0, "--quiet") == 0
    printed = capsys.readouterr().out
    report = json.loads((run / "reports" / "cv.json").read_text())
    for row, score in zip(report["breakdown"]["per_class"], report["tuned"]["per_class"]):
        assert row["score"] == pytest.approx(score)
        assert row["false_positive"] + row["missed"] + row["partial"] == pytest.approx(
            row["deficit"])
    interval = report["stability"]["bootstrap"]
    assert interval["tuned"] == pytest.approx(report["tuned"]["score"])
    assert interval["low"] <= interval["tuned"] <= interval["high"]
    assert [r["fold"] for r in report["stability"]["per_fold"]] == [0, 1]
    gallery = report["gallery"]
    if gallery["images"]:
        assert (run / "reports" / gallery["path"]).is_file()
    assert "where the tuned score is lost" in printed and "bootstrap interval" in printed
