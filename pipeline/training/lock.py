"""One training process per (run, fold): ``checkpoints/fold<k>/.lock`` holds the trainer's PID.

The lock is a ``pidlock`` file: of two trainers only one gets it, the other is refused with the
holder's PID; a dead holder's lock is taken over with a warning; it goes when its ``with`` block
ends, error or not. Commands that read a run's checkpoints (``cv``, ``predict`` ...) refuse a
fold that a running ``train`` holds (``check_runs_not_training``); a stale lock is ignored.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable
from pathlib import Path

from pipeline.config import RunPaths
from pipeline.data import pidlock

LOCK_NAME = ".lock"
TRAINING = pidlock.Purpose("training", "training this fold", "--run-dir")


def acquire(path: Path) -> None:
    """Take the training lock at ``path`` or raise RuntimeError naming the PID that holds it."""
    pidlock.acquire(path, TRAINING)


def release(path: Path) -> None:
    """Remove the lock if it is still ours."""
    pidlock.release(path)


def fold_lock(fold_dir: Path) -> contextlib.AbstractContextManager[Path]:
    """Hold ``fold_dir/.lock`` for the ``with`` block; released on exit, error or not."""
    return pidlock.held(Path(fold_dir) / LOCK_NAME, TRAINING)


def holder_alive(fold_dir: Path) -> int | None:
    """The PID of the running process that trains ``fold_dir``; None when there is none (no
    lock, or a stale one). Reads only: the lock is neither taken nor removed."""
    return pidlock.live_holder(Path(fold_dir) / LOCK_NAME)


def check_not_training(fold_dirs: Iterable[Path]) -> None:
    """RuntimeError naming the fold, the trainer's PID and the fix for the first of
    ``fold_dirs`` that a running ``train`` holds: its ``best.pt`` may be replaced while read."""
    for fold_dir in map(Path, fold_dirs):
        pid = holder_alive(fold_dir)
        if pid is not None:
            match = re.fullmatch(r"fold(\d+)", fold_dir.name)
            fold = f"fold {match.group(1)} ({fold_dir})" if match else str(fold_dir)
            raise RuntimeError(f"{fold} is being trained by process {pid} (lock "
                               f"{fold_dir / LOCK_NAME}): its checkpoints may change while "
                               "read; wait for the training to finish or stop it")


def check_runs_not_training(runs: Iterable[RunPaths], folds: Iterable[int] | None = None) -> None:
    """``check_not_training`` on the ``folds`` (default: every fold folder) of each run."""
    folds = None if folds is None else list(folds)
    for run in runs:
        fold_dirs = (sorted(run.checkpoints.glob("fold*")) if folds is None
                     else map(run.fold_dir, folds))
        check_not_training(fold_dirs)
