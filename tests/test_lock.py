"""One trainer per run and fold: the lock file, its stale take-over, config.json's timing, and
the commands that read a fold's checkpoints refusing one that is being trained."""

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import run_cli

from pipeline.config import RunPaths
from pipeline.data import synthetic
from pipeline.training import lock

TINY = ["--encoder-weights", "none", "--scale", "0.125", "--crop", "32x64", "--batch-size", "2",
        "--workers", "0", "--device", "cpu", "--quiet"]


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture()
def sleeper():
    """A live process that is not us: the holder of a planted lock."""
    child = subprocess.Popen(["sleep", "60"])
    yield child.pid
    child.kill()
    child.wait()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lock-data")
    synthetic.write_dataset(root, n_train=6, n_test=1, seed=4, quiet=True, workers=1)
    return root


def test_a_second_holder_is_refused_with_the_pid_and_the_path(tmp_path):
    with lock.fold_lock(tmp_path / "fold0") as path:
        assert path.read_text().strip() == str(os.getpid())
        with pytest.raises(RuntimeError) as refused:
            lock.acquire(path)
        assert f"process {os.getpid()}" in str(refused.value) and str(path) in str(refused.value)
        assert path.read_text().strip() == str(os.getpid())
    assert not path.exists()


def test_the_lock_is_released_on_error(tmp_path):
    with pytest.raises(ZeroDivisionError):
        with lock.fold_lock(tmp_path / "fold0"):
            1 / 0
    assert not (tmp_path / "fold0" / ".lock").exists()


@pytest.mark.parametrize("content", ["{pid}\n", "", "garbage"])
def test_a_stale_lock_is_taken_over_with_a_warning(tmp_path, caplog, content):
    path = tmp_path / "fold0" / ".lock"
    path.parent.mkdir()
    path.write_text(content.format(pid=dead_pid()))
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        with lock.fold_lock(path.parent):
            assert path.read_text().strip() == str(os.getpid())
    assert "taking over the stale training lock" in caplog.text and str(path) in caplog.text
    assert not path.exists()


def test_holder_alive_reads_the_lock_without_taking_it(tmp_path, sleeper):
    fold_dir = tmp_path / "checkpoints" / "fold0"
    assert lock.holder_alive(fold_dir) is None                 # no lock
    fold_dir.mkdir(parents=True)
    held = fold_dir / ".lock"
    held.write_text(f"{sleeper}\n")
    assert lock.holder_alive(fold_dir) == sleeper
    with pytest.raises(RuntimeError, match=f"fold 0 .* process {sleeper} "):
        lock.check_runs_not_training([RunPaths(tmp_path)])
    stale = f"{dead_pid()}\n"
    held.write_text(stale)
    assert lock.holder_alive(fold_dir) is None                 # a dead trainer's lock is stale
    lock.check_runs_not_training([RunPaths(tmp_path)])         # ... and ignored
    assert held.read_text() == stale                           # read, never taken or removed


def test_commands_that_read_checkpoints_refuse_a_fold_being_trained(
        tiny_run_copy, tmp_path, sleeper, capsys):
    """cv could tune on a best.pt that the trainer replaces a second later: every command
    that loads a run's fold checkpoints refuses a fold whose lock a live process holds."""
    data, run = tiny_run_copy
    held = run / "checkpoints" / "fold1" / ".lock"
    held.write_text(f"{sleeper}\n")
    out = tmp_path / "out"
    commands = {
        "cv": ["cv", "--data-dir", data, "--run-dir", run, "--device", "cpu"],
        "cv --fold 1": ["cv", "--data-dir", data, "--run-dir", run, "--fold", 1],
        "robustness": ["robustness", "--data-dir", data, "--run-dir", run, "--shifts", "none"],
        "predict": ["predict", "--data-dir", data, "--run-dir", run, "--out", out / "a.csv"],
        "predict --checkpoints": ["predict", "--data-dir", data, "--run-dir", run,
                                  "--checkpoints", held.parent / "best.pt", "--out",
                                  out / "b.csv"],
        "pseudo-label": ["pseudo-label", "--data-dir", data, "--run-dir", run, "--out",
                         out / "pseudo.csv"],
        "segment": ["segment", "--run-dir", run, "--input", data / "test_images", "--out",
                    out / "segments"],
        "export": ["export", "--format", "onnx", "--run-dir", run, "--fold", 1, "--out",
                   out / "m.onnx"],
        "upload-weights": ["upload-weights", "--run-dir", run, "--dataset", "me/weights"],
        "plan-kernel": ["plan-kernel", "--data-dir", data, "--run-dir", run],
    }
    for name, argv in commands.items():
        capsys.readouterr()
        assert run_cli(*argv) == 1, name
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: fold 1 "), (name, err)
        assert f"process {sleeper} " in err and str(held) in err, (name, err)
        assert "wait for the training to finish or stop it" in err, (name, err)
        assert held.read_text() == f"{sleeper}\n", name       # the trainer's lock untouched
    assert not out.exists() and not (run / "reports" / "cv.json").exists()
    assert not (run / "postprocess.json").exists()
    capsys.readouterr()
    assert run_cli("cv", "--data-dir", data, "--run-dir", run, "--fold", 0, "--quiet") == 0
    assert "error" not in capsys.readouterr().err             # fold 0 is not being trained


def test_train_refuses_a_fold_held_by_a_live_process(data, tmp_path, sleeper, capsys):
    run = tmp_path / "run"
    assert run_cli("folds", "--data-dir", data, "--run-dir", run, "--n-folds", 2) == 0
    held = run / "checkpoints" / "fold0" / ".lock"
    held.parent.mkdir(parents=True)
    held.write_text(f"{sleeper}\n")
    capsys.readouterr()
    assert run_cli("train", "--data-dir", data, "--run-dir", run, "--fold", 0, "--epochs", 1,
                   *TINY) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: process {sleeper} is already training this fold (lock {held})")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert held.read_text() == f"{sleeper}\n"           # the holder's lock is untouched
    assert not (run / "config.json").exists()            # a refused run writes nothing
    assert not (run / "checkpoints" / "fold0" / "last.pt").exists()


def test_config_json_is_written_only_once_the_checks_pass(data, tmp_path, capsys):
    run = tmp_path / "run"
    assert run_cli("folds", "--data-dir", data, "--run-dir", run, "--n-folds", 2) == 0
    (run / "folds.csv").write_text((run / "folds.csv").read_text().replace(".jpg", ".png"))
    assert run_cli("train", "--data-dir", data, "--run-dir", run, "--fold", 0, *TINY) == 1
    assert "does not match the training images" in capsys.readouterr().err
    assert not (run / "config.json").exists()
    assert not (run / "checkpoints" / "fold0" / ".lock").exists()


@pytest.mark.slow
def test_two_train_processes_on_one_fold(data, tmp_path, capsys):
    """A real second process is refused while the first trains; once the first is killed,
    its lock is stale and ``--resume`` takes the fold over."""
    run = tmp_path / "run"
    assert run_cli("folds", "--data-dir", data, "--run-dir", run, "--n-folds", 2) == 0
    args = ["train", "--data-dir", str(data), "--run-dir", str(run), "--fold", "0", *TINY]
    first = subprocess.Popen([sys.executable, "-m", "pipeline", *args, "--epochs", "1000"],
                             stderr=subprocess.PIPE, text=True)
    held = run / "checkpoints" / "fold0" / ".lock"
    try:
        deadline = time.monotonic() + 120
        while not (run / "checkpoints" / "fold0" / "last.pt").exists():
            assert first.poll() is None, first.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.2)
        capsys.readouterr()
        assert run_cli(*args, "--epochs", 2) == 1
        assert f"process {first.pid} is already training" in capsys.readouterr().err
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert held.read_text().strip() == str(first.pid)  # a SIGKILL leaves its lock
    # the same settings (a resume refuses others); --max-steps only stops it early
    assert run_cli(*args, "--epochs", 1000, "--max-steps", 1, "--resume") == 0
    assert "taking over the stale training lock" in capsys.readouterr().err
    assert not held.exists()
