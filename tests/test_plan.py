"""``plan-kernel``: the time of a choice is the sum of its measured passes; its OOF score is
cv's for the same models and TTA."""

import json
import shutil

import pytest

from helpers import TINY_TRAIN, run_cli, train_tiny
from pipeline.inference import plan

INFER = ["--workers", "0", "--batch-size", "3", "--quiet"]


def test_the_time_of_a_choice_is_the_sum_of_its_measured_passes():
    a = plan.Rate("a", n_models=5, passes_per_s=10.0, spread=(9.0, 11.0), load_s=2.0,
                  gpu_passes_per_s=100.0)
    b = plan.Rate("b", n_models=2, passes_per_s=4.0, spread=(4.0, 4.0), load_s=1.0,
                  gpu_passes_per_s=40.0)
    n, overhead = 1000, 0.01
    # hflip: 2 passes per model; a: 5 models x 2 / 10 per s, b: 2 x 2 / 4 per s
    by_hand = (5 * 2.0 + 2 * 1.0) + n * (5 * 2 / 10.0 + 2 * 2 / 4.0 + overhead)
    assert plan.choice_seconds([a, b], "hflip", n, overhead) == pytest.approx(by_hand)
    gpu = (5 * 2.0 + 2 * 1.0) + n * (5 * 4 / 100.0 + 2 * 4 / 40.0 + overhead)
    assert plan.choice_seconds([a, b], "hvflip", n, overhead, gpu=True) == pytest.approx(gpu)
    assert plan.choice_seconds([a], "none", n, 0.0) == pytest.approx(10.0 + n * 0.5)


@pytest.mark.slow
def test_plan_kernel_scores_every_choice_as_cv_does(tmp_path, capsys):
    data, first = train_tiny(tmp_path, n_train=10, n_test=4, seed=7, max_steps=1)
    second = tmp_path / "second"
    second.mkdir()
    shutil.copy(first / "folds.csv", second / "folds.csv")
    assert run_cli("train", "--data-dir", data, "--run-dir", second, "--epochs", 1,
                   "--max-steps", 1, "--head", "sigmoid", "--loss", "bce", "--gate",
                   *TINY_TRAIN) == 0
    for run in (first, second):
        assert run_cli("cv", "--data-dir", data, "--run-dir", run, *INFER) == 0
    ens = tmp_path / "ens"
    assert run_cli("ensemble", "--run-dir", first, "--run-dir", second, "--weights", "3,1",
                   "--out", ens) == 0
    assert run_cli("cv", "--data-dir", data, "--run-dir", ens, "--tta", "hflip", *INFER) == 0
    capsys.readouterr()
    assert run_cli("plan-kernel", "--data-dir", data, "--run-dir", ens, "--limit", 100000,
                   *INFER) == 0
    printed = capsys.readouterr().out
    report = json.loads((ens / "reports" / "kernel-plan.json").read_text())
    rows = {("+".join(r["members"]), r["tta"]): r for r in report["choices"]}
    assert len(rows) == 3 * 3   # {run, second, both} x {none, hflip, hvflip}
    cv = {name: json.loads((path / "reports" / "cv.json").read_text())
          for name, path in (("run", first), ("second", second), ("run+second", ens))}
    # the members' own cv (no TTA) and the ensemble's (hflip) are choices of the plan
    assert rows[("run", "none")]["oof_tuned"] == pytest.approx(cv["run"]["tuned"]["score"])
    assert rows[("second", "none")]["oof_tuned"] == pytest.approx(
        cv["second"]["tuned"]["score"])
    assert rows[("run+second", "hflip")]["oof_tuned"] == pytest.approx(
        cv["run+second"]["tuned"]["score"])
    rates = {r["member"]: r for r in report["rates"]}
    for row in rows.values():
        passes = sum(rates[m]["n_models"] for m in row["members"]) * {
            "none": 1, "hflip": 2, "hvflip": 4}[row["tta"]]
        assert row["passes_per_image"] == passes
        assert row["fits"] == (row["cpu_seconds"] <= 100000 - 300)
        assert row["gpu_seconds"] is None
    assert rows[("run+second", "hvflip")]["cpu_seconds"] > rows[("run", "none")]["cpu_seconds"]
    assert "image passes/s here" in printed and "fit judged on cpu" in printed
    assert run_cli("plan-kernel", "--data-dir", data, "--run-dir", ens, "--limit", 10,
                   "--margin", 20, *INFER) == 1
