"""Ctrl-C: one line on stderr and exit status 130, with worker processes running (synth's pool,
train's DataLoader workers); locks released, finished files kept."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch.utils.data

from helpers import run_cli

from pipeline.data import synthetic

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--encoder-weights", "none", "--scale", "0.125", "--crop", "32x64", "--batch-size", "2",
        "--device", "cpu", "--quiet"]


def start(*argv) -> subprocess.Popen:
    """``python -m pipeline ...`` in its own process group, as a terminal would start it.
    SIGINT is set back to its default: a background job (``cmd &``) inherits it ignored."""
    return subprocess.Popen([sys.executable, "-m", "pipeline", *map(str, argv)], cwd=ROOT,
                            start_new_session=True, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for(child: subprocess.Popen, ready, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert child.poll() is None, child.communicate()[1]
        assert time.monotonic() < deadline, "the command never got there"
        time.sleep(0.1)


def ctrl_c(child: subprocess.Popen) -> list[str]:
    """SIGINT to the whole process group (what Ctrl-C does); the non-blank stderr lines."""
    try:
        os.killpg(child.pid, signal.SIGINT)
        err = child.communicate(timeout=60)[1]
    finally:
        with contextlib.suppress(ProcessLookupError):   # nothing of the group may outlive it
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    return [line for line in err.splitlines() if line.strip()]


def children(pid: int) -> list[int]:
    """The PIDs of the processes whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def test_ctrl_c_stops_synth_and_its_pool_with_one_line(tmp_path):
    out = tmp_path / "data"
    child = start("synth", "--out", out, "--n-train", 400, "--n-test", 0, "--workers", 2)
    wait_for(child, lambda: len(list((out / "train_images").glob("*.jpg"))) >= 8)
    lines = ctrl_c(child)
    assert child.returncode == 130 and lines == ["error: interrupted"], lines
    assert not (out / synthetic.LOCK_NAME).exists()
    assert not (out / "train.csv").exists()          # stopped before the end: no labels


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_ctrl_c_stops_train_and_its_loader_workers_with_one_line(tmp_path):
    data, run = tmp_path / "data", tmp_path / "run"
    synthetic.write_dataset(data, 12, 0, seed=3, quiet=True, workers=1)
    assert run_cli("folds", "--data-dir", data, "--run-dir", run, "--n-folds", 2) == 0
    child = start("train", "--data-dir", data, "--run-dir", run, "--fold", 0, "--epochs", 1000,
                  "--workers", 2, *TINY)
    held = run / "checkpoints" / "fold0" / ".lock"
    wait_for(child, lambda: held.exists() and len(children(child.pid)) >= 2)  # workers run
    lines = ctrl_c(child)
    others = [line for line in lines if not line.startswith("info: fold 0 epoch ")]
    assert child.returncode == 130 and others == ["error: interrupted"], lines
    assert not held.exists()


class _Masks(torch.utils.data.Dataset):
    """Each item: whether SIGINT is blocked in the process that loads it."""

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> bool:
        return signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, set())


def test_loader_workers_are_born_deaf_to_ctrl_c_and_the_main_process_is_not():
    """A worker between its fork and torch's worker loop printed a traceback on Ctrl-C (seen
    once in a CI run of the train test above): workers now start with SIGINT blocked."""
    from pipeline.data.workers import DataLoader

    loader = DataLoader(_Masks(), batch_size=1, num_workers=2)
    assert [bool(b) for b in loader] == [True, True]
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, set())
    assert [bool(b) for b in DataLoader(_Masks(), batch_size=1)] == [False, False]
