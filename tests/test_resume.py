"""A fold killed at any write of any epoch, then ``--resume``d, ends as an uninterrupted run."""

import contextlib
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from helpers import run_cli

from pipeline import checkpoint, fileio
from pipeline.training.config import TrainConfig
from pipeline.data import synthetic
from pipeline.training import train

SCORES = (0.5, 0.7, 0.6)   # epoch 1 is the best; epoch 2 is validated but not the best
AVERAGED = 0.65            # the score of the top-k average (validated after the last epoch)
TIMING = ("seconds", "images_per_s")   # wall-clock columns: the only ones allowed to differ


class Killed(BaseException):
    """What a SIGKILL looks like from inside: nothing after it runs, no handler cleans up."""


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("faults-data")
    synthetic.write_dataset(root, n_train=6, n_test=1, seed=3, quiet=True, workers=1)
    return root


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def scripted_evaluate(model, loader, loss_fn, cfg, context) -> dict:
    """evaluate() scoring by epoch (read from the loader's seed), so the best epoch is known."""
    score = (*SCORES, AVERAGED)[loader.generator.initial_seed() - cfg.seed * 100_003]
    return {"val_loss": 1 - score, "val_score": score, "val_nonempty": score / 2,
            "val_baseline": 0.25, "val_per_class": [score] * 4, "val_tuned": score,
            "val_tuned_nonempty": score / 2}


def config(data: Path, run: Path) -> TrainConfig:
    return TrainConfig(data_dir=str(data), run_dir=str(run), encoder_weights="none",
                       scale=0.125, crop=(32, 64), batch_size=2, workers=0, epochs=len(SCORES),
                       device="cpu", quiet=True)


def averaged_config(data: Path, run: Path) -> TrainConfig:
    """EMA of the weights, and best.pt the mean of the top 2 epochs."""
    return dataclasses.replace(config(data, run), ema_decay=0.5, average_top_k=2)


def new_run(tmp_path: Path, data: Path, name: str) -> Path:
    assert run_cli("folds", "--data-dir", data, "--run-dir", tmp_path / name,
                   "--n-folds", 2) == 0
    return tmp_path / name


def kill_at(monkeypatch, n: int, pid: int) -> dict:
    """Make the n-th atomic write die between writing its temp file and renaming it."""
    real, calls = fileio.atomic_path, {"n": 0}

    @contextlib.contextmanager
    def atomic_path(path):
        calls["n"] += 1
        if calls["n"] != n:
            with real(path) as tmp:
                yield tmp
            return
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        yield path.with_name(f".{path.name}.{pid}.0badc0de.tmp")
        raise Killed(path)

    monkeypatch.setattr(fileio, "atomic_path", atomic_path)
    return calls


def untimed(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


def files_of(run: Path) -> dict:
    """Everything a fold's training leaves: weights, epochs, logs, curves, no temp files."""
    fold = run / "checkpoints" / "fold0"
    out = {name: checkpoint.load(fold / name) for name in ("best.pt", "last.pt")}
    for name in ("best.pt", "last.pt"):
        out[name]["metrics"] = untimed([out[name]["metrics"]])[0]
        out[name]["history"] = untimed(out[name].get("history", []))
    out["logs/fold0.json"] = untimed(json.loads((run / "logs/fold0.json").read_text()))
    out["logs/fold0.csv"] = pd.read_csv(run / "logs/fold0.csv").drop(columns=list(TIMING))
    out["reports/curves_fold0.png"] = (run / "reports/curves_fold0.png").read_bytes()
    out["temps"] = sorted(p.name for p in run.rglob("*.tmp"))
    out["top"] = {p.name: torch.load(p, weights_only=True)
                  for p in sorted(fold.glob("top/*.pt"))}
    return out


def assert_same(a: dict, b: dict) -> None:
    for name in ("best.pt", "last.pt"):
        assert a[name]["epoch"] == b[name]["epoch"], name
        assert a[name]["metrics"] == b[name]["metrics"], name
        assert a[name]["history"] == b[name]["history"], name
        assert a[name].keys() == b[name].keys(), name
        for key, tensor in a[name]["model"].items():
            assert torch.equal(tensor, b[name]["model"][key]), (name, key)
    assert a["logs/fold0.json"] == b["logs/fold0.json"]
    pd.testing.assert_frame_equal(a["logs/fold0.csv"], b["logs/fold0.csv"])
    assert a["reports/curves_fold0.png"] == b["reports/curves_fold0.png"]
    assert a["temps"] == b["temps"] == []
    assert a["top"].keys() == b["top"].keys()
    for name, kept in a["top"].items():
        assert kept["epoch"] == b["top"][name]["epoch"]
        for key, tensor in kept["model"].items():
            assert torch.equal(tensor, b["top"][name]["model"][key]), (name, key)
    assert not a.get("lock") and not b.get("lock")   # the stale lock was taken over, released


@pytest.fixture(scope="module")
def straight(data, tmp_path_factory) -> tuple[dict, int]:
    """The uninterrupted run's files and how many atomic writes it made."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train, "evaluate", scripted_evaluate)
        calls = kill_at(mp, 0, 0)
        run = new_run(tmp_path_factory.mktemp("straight"), data, "run")
        calls["n"] = 0
        assert train.train_fold(config(data, run), 0)["epoch"] == 1
        return files_of(run), calls["n"]


def kill_then_resume(data: Path, tmp_path: Path, monkeypatch, n: int,
                     make_config=config) -> dict:
    monkeypatch.setattr(train, "evaluate", scripted_evaluate)
    run = new_run(tmp_path, data, "killed")
    pid = dead_pid()
    real = fileio.atomic_path
    kill_at(monkeypatch, n, pid)
    with pytest.raises(Killed):
        train.train_fold(make_config(data, run), 0)
    monkeypatch.setattr(fileio, "atomic_path", real)
    (run / "checkpoints" / "fold0" / ".lock").write_text(f"{pid}\n")  # a SIGKILL leaves it
    assert list(run.rglob(f"*.{pid}.0badc0de.tmp")), "the kill left no temp file"
    train.train_fold(make_config(data, run), 0, resume=True)
    return files_of(run) | {"lock": (run / "checkpoints" / "fold0" / ".lock").exists()}


def test_the_straight_run_writes_in_a_known_order(straight):
    files, n_writes = straight
    assert n_writes == 15   # config.json, then per epoch last, best (epochs 0, 1), json, csv, png
    assert files["best.pt"]["epoch"] == 1 and files["last.pt"]["epoch"] == 2
    assert len(files["last.pt"]["history"]) == 3 and files["best.pt"]["history"] == []


# Epoch 1 (the best epoch): its last.pt, best.pt and JSON log; the rest in the slow test.
@pytest.mark.parametrize("n", [7, 8, 9])
def test_a_kill_at_any_write_of_the_best_epoch_resumes_exactly(data, tmp_path, monkeypatch,
                                                               straight, n):
    assert_same(kill_then_resume(data, tmp_path, monkeypatch, n), straight[0])


@pytest.mark.slow
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 10, 11, 12, 13, 14, 15])
def test_a_kill_at_every_other_write_resumes_exactly(data, tmp_path, monkeypatch, straight, n):
    assert_same(kill_then_resume(data, tmp_path, monkeypatch, n), straight[0])


def test_resume_rewrites_lost_log_rows_from_last_pt(data, tmp_path, monkeypatch, straight):
    """The logs of an old run that lost rows are rebuilt from last.pt, not trusted."""
    monkeypatch.setattr(train, "evaluate", scripted_evaluate)
    run = new_run(tmp_path, data, "run")
    train.train_fold(config(data, run), 0)
    (run / "logs" / "fold0.json").write_text(json.dumps([]))
    (run / "logs" / "fold0.csv").unlink()
    train.train_fold(config(data, run), 0, resume=True)
    assert_same(files_of(run), straight[0])


@pytest.fixture(scope="module")
def straight_averaged(data, tmp_path_factory) -> tuple[dict, int]:
    """The uninterrupted EMA + top-2 run's files and how many atomic writes it made."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train, "evaluate", scripted_evaluate)
        calls = kill_at(mp, 0, 0)
        run = new_run(tmp_path_factory.mktemp("straight-averaged"), data, "run")
        calls["n"] = 0
        assert train.train_fold(averaged_config(data, run), 0)["val_score"] == AVERAGED
        return files_of(run), calls["n"]


def test_the_averaged_run_keeps_the_ema_and_the_top_two(straight_averaged):
    files, n_writes = straight_averaged
    # config.json; per epoch the kept top weights (each epoch is top-2 when it ends), last,
    # json, csv, png; best.pt at epochs 0 and 1;
    # then the averaged best.pt
    assert n_writes == 1 + 3 * 5 + 2 + 1
    best = files["best.pt"]
    assert best["metrics"]["averaged_epochs"] == [1, 2] and best["epoch"] == 1
    assert set(files["top"]) == {"epoch1.pt", "epoch2.pt"}
    assert {"train_model", "ema"} <= set(files["last.pt"]) and "ema" not in best


@pytest.mark.slow
@pytest.mark.parametrize("n", range(1, 20))
def test_a_kill_at_any_write_of_an_averaged_run_resumes_exactly(data, tmp_path, monkeypatch,
                                                                straight_averaged, n):
    assert n <= straight_averaged[1]
    assert_same(kill_then_resume(data, tmp_path, monkeypatch, n, averaged_config),
                straight_averaged[0])
