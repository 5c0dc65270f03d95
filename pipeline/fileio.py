"""Atomic file writes: a temp file in the target directory, then an atomic rename."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success it replaces ``path``, on error it goes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The caller creates the file, so it gets the usual permissions (umask), unlike mkstemp's.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except OSError as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if error.filename is not None or str(path) in str(error):
            raise
        # A failed write (a full disk) names no file: name the one being written.
        raise OSError(error.errno, f"cannot write {path}: {error.strerror or error} "
                      f"({free_space(path)} free)") from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def nearest_existing(path: Path) -> Path:
    """``path`` if it exists, else its nearest existing parent."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_space(path: Path) -> str:
    """The free space of the file system holding ``path`` (or its nearest existing parent),
    for error messages, e.g. '1.2 GB'."""
    try:
        free = shutil.disk_usage(nearest_existing(path)).free
    except OSError:
        return "unknown space"
    return f"{free / 1e9:.1f} GB" if free >= 1e8 else f"{free / 1e6:.1f} MB"


def check_writable(path: Path, flag: str) -> None:
    """Refuse, before any long work, an output ``path`` that cannot be written: a directory
    there, or a nearest existing parent that is a file or not writable."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{flag} {path} is a directory: give a file name, e.g. "
                                f"{path / 'submission.csv'}")
    parent = nearest_existing(path.parent)
    if not parent.is_dir():
        raise NotADirectoryError(f"{flag} {path}: {parent} is a file, not a directory: "
                                 "choose another output path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"{flag} {path}: the directory {parent} is not writable: "
                              "choose another output path or fix its permissions")


def write_bytes(path: Path, data: bytes) -> None:
    """Write bytes to path atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: Path, text: str) -> None:
    """Write text to path atomically."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: object) -> None:
    """Write obj as indented JSON to path atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID runs (on this machine)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it runs, as another user
        return True
    return True


def remove_temps(path: Path) -> list[Path]:
    """Remove the temp files that killed atomic writes of ``path`` left (see ``atomic_path``);
    temps of a process that still runs are kept. Returns the removed paths."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    removed = []
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = tmp.name[len(path.name) + 2:].split(".")[0]
        if pid.isdigit() and int(pid) != os.getpid() and pid_alive(int(pid)):
            continue
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        removed.append(tmp)
    return removed
