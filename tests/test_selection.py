"""Which epoch is the fold's best: the ranking, and a real run whose ``best.pt`` is the epoch a
brute-force tuning of each validation's counts picks."""

import itertools
import json

import numpy as np
import pandas as pd
import pytest

from helpers import run_cli

from pipeline import checkpoint
from pipeline.data import synthetic
from pipeline.inference import tuning
from pipeline.training import selection

ROWS = [{"epoch": 0, "val_loss": 0.30, "val_score": 0.80, "val_tuned": 0.84},
        {"epoch": 1},   # not validated
        {"epoch": 2, "val_loss": 0.20, "val_score": 0.82, "val_tuned": 0.83},
        {"epoch": 3, "val_loss": 0.25, "val_score": 0.79, "val_tuned": 0.86},
        {"epoch": 4, "val_loss": 0.20, "val_score": 0.81, "val_tuned": 0.86}]


@pytest.mark.parametrize("select, best, top", [
    ("tuned", 3, [3, 4, 0]), ("default", 2, [2, 4, 0]), ("loss", 2, [2, 4, 3])])
def test_each_select_ranks_by_its_column_ties_to_the_earlier_epoch(select, best, top):
    assert selection.best_row(ROWS, select)["epoch"] == best
    assert selection.top_epochs(ROWS, select, 3) == top


def test_no_validated_epoch_and_an_unknown_select():
    assert selection.best_row([{"epoch": 0}], "tuned") is None
    with pytest.raises(ValueError, match="unknown --select 'iou'; valid: tuned, default, loss"):
        selection.best_row(ROWS, "iou")


def brute_force_tuned(counts: np.ndarray) -> float:
    """The best score over every per-class (threshold, min_area), pair by pair (no gate)."""
    n, k, classes, _ = counts.shape
    total = 0.0
    for c in range(classes):
        best = -1.0
        for t, area in itertools.product(range(k), tuning.MIN_AREAS):
            dice = []
            for i in range(n):
                inter, pred, truth = (int(v) for v in counts[i, t, c])
                if pred < area:
                    inter, pred = 0, 0
                dice.append(1.0 if pred + truth == 0 else 2 * inter / (pred + truth))
            best = max(best, float(np.mean(dice)))
        total += best
    return total / classes


@pytest.mark.slow
def test_best_pt_is_the_epoch_brute_force_tuning_of_the_counts_picks(tmp_path, monkeypatch):
    data = tmp_path / "data"
    synthetic.write_dataset(data, n_train=16, n_test=0, seed=4, quiet=True, workers=1)
    # Every image's left half is class 1, the rest as drawn: a class that even a barely
    # trained model finds in part, so the tuned score moves from epoch to epoch.
    table = pd.read_csv(data / "train.csv")
    ids = sorted(p.name for p in (data / "train_images").iterdir())
    half = pd.DataFrame({"ImageId": ids, "ClassId": 1, "EncodedPixels": f"1 {256 * 800}"})
    pd.concat([table[table["ClassId"] != 1], half]).to_csv(data / "train.csv", index=False)
    run = tmp_path / "run"
    assert run_cli("folds", "--data-dir", data, "--run-dir", run, "--n-folds", 2) == 0
    logged = []
    real = tuning.default_and_tuned

    def spy(counts, *args, **kwargs):   # records what each validation tuned on
        logged.append(counts.copy())
        return real(counts, *args, **kwargs)

    monkeypatch.setattr(tuning, "default_and_tuned", spy)
    assert run_cli("train", "--data-dir", data, "--run-dir", run, "--fold", "0",
                   "--epochs", "4", "--encoder-weights", "none", "--scale", "0.25",
                   "--crop", "64x128", "--batch-size", "4", "--workers", "0", "--lr", "3e-3",
                   "--quiet") == 0
    log = json.loads((run / "logs" / "fold0.json").read_text())
    assert len(logged) == len(log) == 4
    scores = [brute_force_tuned(counts) for counts in logged]
    assert [row["val_tuned"] for row in log] == pytest.approx(scores, abs=1e-12)
    assert len(set(np.round(scores, 9))) > 1, "every epoch scored the same: nothing to pick"
    best = checkpoint.load(run / "checkpoints" / "fold0" / "best.pt")
    assert best["epoch"] == int(np.argmax(scores))
    assert best["config"]["select"] == "tuned"
