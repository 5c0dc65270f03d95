"""bench/recipes.py: the medians and spread of an entry's seeds, one table from runs saved by
several invocations, a saved file that is not one named in one line, and a smoke run of two
entries through the pipeline's own commands."""

import json
import math

import pytest

from helpers import BENCH, bench_script

SCRIPT = BENCH / "recipes.py"


@pytest.fixture(scope="module")
def recipes():
    return bench_script("recipes")


def row(entry, seed, tuned, per_class=(0.1, 0.2, float("nan"), 0.4)):
    return {"entry": entry, "seed": seed, "default": tuned - 0.01, "tuned": tuned,
            "baseline": 0.86, "nonempty": tuned - 0.5, "nonempty_per_class": list(per_class),
            "train_seconds": 100.0 + seed}


def test_an_entrys_seeds_give_medians_and_the_spread(recipes):
    summary = recipes.summary([row("demo", 0, 0.89), row("demo", 1, 0.90),
                               row("demo", 2, 0.93)])
    assert summary["tuned"] == pytest.approx(0.90)
    assert summary["spread"] == pytest.approx(0.04)
    assert summary["train_seconds"] == 101.0
    assert summary["nonempty_per_class"][:2] == pytest.approx([0.1, 0.2])
    assert math.isnan(summary["nonempty_per_class"][2])


def test_runs_saved_by_several_invocations_make_one_table(recipes, tmp_path, monkeypatch,
                                                          capsys):
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps([row("demo", 0, 0.89), row("ema", 0, 0.895)]))
    second.write_text(json.dumps([row("demo", 1, 0.91), row("ema", 0, 0.899)]))
    monkeypatch.setattr("sys.argv", ["recipes.py", "--table", f"{first},{second}"])
    recipes.main()
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert [line.split(" | ")[0] for line in lines[1:]] == ["| demo", "| ema"]
    demo, ema = (line.split(" | ") for line in lines[1:])
    assert demo[1] == "0,1" and demo[3] == "0.0200"        # both seeds, their spread
    assert "0.9000" in demo[2]                              # the median of 0.89 and 0.91
    assert ema[1] == "0" and "0.8990" in ema[2]             # seed 0 run twice: the last kept
    assert "n/a" in demo[7]                                 # a class without pairs


def test_a_file_that_is_not_saved_runs_is_one_line(recipes, tmp_path, monkeypatch):
    bad = tmp_path / "runs.json"
    bad.write_text("{not json")
    monkeypatch.setattr("sys.argv", ["recipes.py", "--table", str(bad)])
    with pytest.raises(SystemExit, match=r"cannot read runs from .*runs\.json.*--out"):
        recipes.main()


@pytest.mark.slow
def test_two_entries_run_through_the_pipelines_commands(recipes, tmp_path, monkeypatch,
                                                        capsys):
    out = tmp_path / "runs.json"
    monkeypatch.chdir(SCRIPT.parent.parent)
    monkeypatch.setattr("sys.argv", [
        "recipes.py", "--only", "demo,starter", "--n-train", "12", "--out", str(out),
        "--train-args", "--epochs 1 --max-steps 1 --val-every 1 --batch-size 2"])
    recipes.main()
    runs = json.loads(out.read_text())
    assert [r["entry"] for r in runs] == ["demo", "starter"]
    for run in runs:
        assert 0 <= run["default"] <= 1 and 0 <= run["tuned"] <= 1
        assert run["tuned"] >= run["default"] - 1e-9     # tuning includes the defaults' point
        assert run["train_seconds"] > 0
    assert 0 <= runs[1]["fixed"] <= 1                     # the starter's own post-processing
    assert "| demo | 0 |" in capsys.readouterr().out
