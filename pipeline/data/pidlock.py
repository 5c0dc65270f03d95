"""PID lock files: one process at a time on a folder (a dataset's writing, a fold's training).

A lock is a file created with ``O_CREAT | O_EXCL`` that holds its process's PID, so of two
processes only one gets it; the other is refused with the holder's PID. A lock whose process no
longer runs (a killed one) is stale and taken over with a warning. ``held`` removes the lock when
its ``with`` block ends, error or not.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline import fileio

log = logging.getLogger(__name__)

ATTEMPTS = 8
EMPTY_WAITS = 3   # reads of an empty lock before it counts as stale (its creator was killed)


@dataclass(frozen=True)
class Purpose:
    """What a lock guards, for its messages: ``kind`` names the lock ("training"), ``doing``
    says what its holder does ("training this fold"), ``flag`` picks another folder."""

    kind: str
    doing: str
    flag: str


def holder(path: Path) -> int | None:
    """The PID written in a lock file; None while it is empty, unreadable or gone."""
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def live_holder(path: Path) -> int | None:
    """The PID of the running process that holds the lock at ``path``; None when there is no
    lock, or its process no longer runs (a stale lock). Reads only: takes nothing over."""
    pid = holder(path)
    return pid if pid is not None and fileio.pid_alive(pid) else None


def _create(path: Path) -> bool:
    """Create the lock holding our PID; False when it exists already."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as file:
        file.write(f"{os.getpid()}\n")
    return True


def acquire(path: Path, purpose: Purpose) -> None:
    """Take the lock at ``path`` or raise RuntimeError naming the PID that holds it."""
    path = Path(path)
    fix = f"make {path.parent} writable or pass another {purpose.flag}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OSError(f"cannot create {path.parent} for the {purpose.kind} lock "
                      f"({error.strerror}): {fix}") from None
    empty_reads = 0
    for _ in range(ATTEMPTS):
        try:
            if _create(path):
                return
        except OSError as error:
            raise OSError(f"cannot create the {purpose.kind} lock {path} ({error.strerror}): "
                          f"{fix}") from None
        pid = holder(path)
        if pid is None and empty_reads < EMPTY_WAITS:
            empty_reads += 1
            time.sleep(0.2)  # the holder may be between creating the file and writing its PID
            continue
        if pid is not None and fileio.pid_alive(pid):
            raise RuntimeError(f"process {pid} is already {purpose.doing} (lock {path}): wait "
                               "for it to end; if no such process runs, delete the lock")
        log.warning("taking over the stale %s lock %s of process %s, which no longer runs",
                    purpose.kind, path, pid if pid is not None else "unknown")
        if holder(path) == pid:  # unchanged since read: no other process took it over
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    raise RuntimeError(f"could not take the {purpose.kind} lock {path} after {ATTEMPTS} "
                       "attempts: another process keeps taking it; delete it once none runs")


def release(path: Path) -> None:
    """Remove the lock if it is still ours."""
    if holder(Path(path)) == os.getpid():
        with contextlib.suppress(FileNotFoundError):
            Path(path).unlink()


@contextlib.contextmanager
def held(path: Path, purpose: Purpose) -> Iterator[Path]:
    """Hold the lock at ``path`` for the ``with`` block; released on exit, error or not."""
    acquire(path, purpose)
    try:
        yield Path(path)
    finally:
        release(path)
