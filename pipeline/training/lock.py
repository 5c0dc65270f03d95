"""One training process per (run, fold): ``checkpoints/fold<k>/.lock`` holds the trainer's PID.

The lock is created with ``O_CREAT | O_EXCL``, so of two processes only one gets it; the other
is refused with the holder's PID. A lock whose process is no longer running (a killed trainer)
is stale and taken over with a warning. The lock goes when its ``with`` block ends, error or not.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

from pipeline import fileio

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"
ATTEMPTS = 8
EMPTY_WAITS = 3   # reads of an empty lock before it counts as stale (its creator was killed)


def _holder(path: Path) -> int | None:
    """The PID written in a lock file; None while it is empty, unreadable or gone."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _create(path: Path) -> bool:
    """Create the lock holding our PID; False when it exists already."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as file:
        file.write(f"{os.getpid()}\n")
    return True


def acquire(path: Path) -> None:
    """Take the lock at ``path`` or raise RuntimeError naming the PID that holds it."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OSError(f"cannot create {path.parent} for the training lock ({error.strerror}): "
                      "make the run directory writable or pass another --run-dir") from None
    empty_reads = 0
    for _ in range(ATTEMPTS):
        try:
            if _create(path):
                return
        except OSError as error:
            raise OSError(f"cannot create the training lock {path} ({error.strerror}): make "
                          "the run directory writable or pass another --run-dir") from None
        holder = _holder(path)
        if holder is None and empty_reads < EMPTY_WAITS:
            empty_reads += 1
            time.sleep(0.2)  # the holder may be between creating the file and writing its PID
            continue
        if holder is not None and fileio.pid_alive(holder):
            raise RuntimeError(f"process {holder} is already training this fold (lock {path}): "
                               "wait for it to end; if no such training runs, delete the lock")
        log.warning("taking over the stale training lock %s of process %s, which no longer "
                    "runs", path, holder if holder is not None else "unknown")
        if _holder(path) == holder:  # unchanged since read: no other process took it over
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    raise RuntimeError(f"could not take the training lock {path} after {ATTEMPTS} attempts: "
                       "another process keeps taking it; delete it once no training runs")


def release(path: Path) -> None:
    """Remove the lock if it is still ours."""
    if _holder(Path(path)) == os.getpid():
        with contextlib.suppress(FileNotFoundError):
            Path(path).unlink()


@contextlib.contextmanager
def fold_lock(fold_dir: Path) -> Iterator[Path]:
    """Hold ``fold_dir/.lock`` for the ``with`` block; released on exit, error or not."""
    path = Path(fold_dir) / LOCK_NAME
    acquire(path)
    try:
        yield path
    finally:
        release(path)
