"""Ensembles of runs: the folder, out-of-fold averaging, cv, predict, compare, bad members."""

import json
import re
import shutil

import pandas as pd
import pytest
import torch

from helpers import TINY_TRAIN, run_cli, train_tiny
from pipeline.config import RunPaths
from pipeline.data import folds
from pipeline.inference import ensembles, predict
from pipeline.inference.config import InferenceConfig

INFER = ["--workers", "0", "--batch-size", "3", "--quiet"]


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    """(data, softmax run without a gate, gated sigmoid run), both on one folds.csv, with cv."""
    root = tmp_path_factory.mktemp("ensemble")
    data, plain = train_tiny(root, n_train=12, n_test=5, seed=3, max_steps=2)
    gated = root / "gated"
    gated.mkdir()
    shutil.copy(plain / "folds.csv", gated / "folds.csv")
    assert run_cli("train", "--data-dir", data, "--run-dir", gated, "--epochs", 1,
                   "--max-steps", 2, "--head", "sigmoid", "--loss", "bce", "--gate",
                   "--seed", 1, *TINY_TRAIN) == 0
    for run in (plain, gated):
        assert run_cli("cv", "--data-dir", data, "--run-dir", run, *INFER) == 0
    return data, plain, gated


def test_ensemble_oof_probabilities_are_the_weighted_average_of_the_members(members, tmp_path):
    data, plain, gated = members
    out = tmp_path / "ens"
    assert run_cli("ensemble", "--run-dir", plain, "--run-dir", gated, "--weights", "2,1",
                   "--out", out) == 0
    source = ensembles.resolve(out)
    assert source.is_ensemble and [m.weight for m in source.members] == [2.0, 1.0]
    assert source.fold_models(1) == [(plain / "checkpoints/fold1/best.pt", 2.0),
                                     (gated / "checkpoints/fold1/best.pt", 1.0)]
    # each member's weight is shared by its folds on the test set
    assert [w for _, w in source.all_models()] == [1.0, 1.0, 0.5, 0.5]
    split = folds.read_folds(out / "folds.csv")
    val_ids = folds.split_ids(split, 1)[1][:3]
    device, settings = torch.device("cpu"), InferenceConfig(workers=0, quiet=True)
    chosen = source.fold_models(1)
    ensemble = predict.load_models([p for p, _ in chosen], device, settings, [2.0, 1.0])
    alone = [predict.load_models([p], device, settings) for p, _ in chosen]

    def first_batch(models):
        loader = predict.make_loader(data / "train_images", val_ids, models.input_scale, settings)
        return next(iter(predict.iterate_probabilities(models, loader, device, settings)))

    mixed, (a, b) = first_batch(ensemble), [first_batch(m) for m in alone]
    torch.testing.assert_close(mixed.probs, (2 * a.probs + b.probs) / 3, atol=1e-6, rtol=1e-5)
    # only the gated member has a presence score: it is the ensemble's
    assert a.presence is None
    torch.testing.assert_close(mixed.presence, b.presence)


def test_cv_predict_and_compare_take_an_ensemble(members, tmp_path, capsys):
    data, plain, gated = members
    out = tmp_path / "ens"
    assert run_cli("ensemble", "--run-dir", plain, "--run-dir", gated, "--out", out) == 0
    assert run_cli("cv", "--data-dir", data, "--run-dir", out, *INFER) == 0
    report = json.loads((out / "reports" / "cv.json").read_text())
    assert report["n_images"] == 12
    assert [m["name"] for m in report["members"]] == [plain.name, gated.name]
    assert len(report["models"]) == 4   # two members x two folds
    # the drift reference the kernel checks against: the training prior counted from train.csv
    table = pd.read_csv(data / "train.csv").dropna()
    prior = [table.loc[table["ClassId"] == c, "ImageId"].nunique() / 12 for c in (1, 2, 3, 4)]
    assert report["drift"]["train_prior"] == pytest.approx(prior)
    assert report["drift"]["oof"]["n_images"] == 12
    tuned = json.loads((out / "postprocess.json").read_text())
    assert tuned["head"] == "sigmoid"   # a softmax and a sigmoid member: per-class thresholds
    capsys.readouterr()
    assert run_cli("compare", out) == 0
    table = capsys.readouterr().out
    rows = [line.split()[0] for line in table.splitlines()[3:6]]
    assert rows == [plain.name, gated.name, "ens"]
    submission = tmp_path / "s.csv"
    assert run_cli("predict", "--data-dir", data, "--run-dir", out, "--out", submission,
                   *INFER) == 0
    assert "4 model(s)" in capsys.readouterr().out
    assert len(pd.read_csv(submission)) == len(pd.read_csv(data / "sample_submission.csv"))
    assert run_cli("robustness", "--data-dir", data, "--run-dir", out, "--shifts", "none,blur",
                   "--quiet", "--workers", "0") == 0
    assert (out / "reports" / "robustness.json").is_file()


def test_a_new_member_list_drops_the_old_tuning(members, tmp_path):
    data, plain, gated = members
    out = tmp_path / "ens"
    assert run_cli("ensemble", "--run-dir", plain, "--run-dir", gated, "--out", out) == 0
    (out / "postprocess.json").write_text("{}")
    assert run_cli("ensemble", "--run-dir", plain, "--run-dir", gated, "--out", out) == 0
    assert (out / "postprocess.json").is_file()   # same members: kept
    assert run_cli("ensemble", "--run-dir", plain, "--run-dir", gated, "--weights", "1,3",
                   "--out", out) == 0
    assert not (out / "postprocess.json").exists()


def test_bad_members_and_weights_are_refused_in_one_line(members, tmp_path, capsys):
    data, plain, gated = members
    moved = tmp_path / "moved"
    shutil.copytree(gated, moved)
    table = pd.read_csv(moved / "folds.csv")
    table.loc[0, "fold"] = 1 - table.loc[0, "fold"]
    table.to_csv(moved / "folds.csv", index=False)
    no_cv = tmp_path / "no-cv"
    shutil.copytree(gated, no_cv)
    shutil.rmtree(no_cv / "reports")
    good = tmp_path / "good"
    assert run_cli("ensemble", "--run-dir", plain, "--run-dir", gated, "--out", good) == 0
    out = str(tmp_path / "ens")
    cases = [
        (["--run-dir", plain, "--run-dir", moved], "members with different folds: .*1 image"),
        (["--run-dir", plain, "--run-dir", no_cv], "has no cv .*run `python -m pipeline cv"),
        (["--run-dir", plain, "--run-dir", gated, "--weights", "0,0"], "sum to a positive"),
        (["--run-dir", plain, "--run-dir", gated, "--weights", "1,-1"], "sum to a positive"),
        (["--run-dir", plain, "--run-dir", gated, "--weights", "1"], "1 weight.* for 2 member"),
        (["--run-dir", plain, "--run-dir", good], "is an ensemble: pass its members"),
        (["--run-dir", plain], "at least two"),
        (["--run-dir", plain, "--run-dir", plain], "given twice"),
    ]
    for argv, message in cases:
        capsys.readouterr()
        assert run_cli("ensemble", *argv, "--out", out) == 1, argv
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1
        assert re.search(message, err), (argv, err)
        assert not (tmp_path / "ens").exists()
    assert run_cli("ensemble", "--run-dir", plain, "--run-dir", gated, "--out", plain) == 1
    assert "exists and is not an ensemble folder" in capsys.readouterr().err
    assert not (RunPaths(plain).root / ensembles.ENSEMBLE_FILE).exists()


def test_the_benchmark_table_shows_every_row_and_the_pseudo_labels(tmp_path):
    from helpers import bench_script

    bench = bench_script("ensembles")
    row = {"name": "fpn", "oof_default": 0.9, "oof_tuned": 0.92, "all_empty": 0.86,
           "nonempty_tuned": 0.5, "test": 0.93, "test_all_empty": 0.86}
    results = {"rows": [row, {**row, "name": "fpn + unet", "oof_tuned": 0.94}],
               "pseudo": {"n_kept": 7, "n_test": 100, "kept_positive": [1, 0, 2, 3],
                          "truth": {"dice": 0.81, "presence_right": 0.9}}}
    lines = bench.table(results).splitlines()
    assert lines[2].startswith("| fpn | 0.9000 | 0.9200 |")
    assert lines[3].startswith("| fpn + unet | 0.9000 | 0.9400 |")
    assert "7 of 100 test images" in lines[-1] and "0.8100" in lines[-1]
    # a run counts as trained only with a best.pt for every fold of its folds.csv
    run = tmp_path / "run"
    (run / "checkpoints" / "fold0").mkdir(parents=True)
    (run / "folds.csv").write_text("ImageId,fold,classes\na.jpg,0,3\nb.jpg,1,\n")
    (run / "checkpoints" / "fold0" / "best.pt").write_bytes(b"")
    assert not bench.trained(run)
    (run / "checkpoints" / "fold1").mkdir()
    (run / "checkpoints" / "fold1" / "best.pt").write_bytes(b"")
    assert bench.trained(run)
