"""The competition data in: download the archive (resumable), extract it safely (no zip-slip,
link or zip bomb), check the layout, and mark DATA_DIR finished, once."""

from __future__ import annotations

import logging
import os
import shutil
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath

from tqdm import tqdm

from pipeline import fileio
from pipeline.config import DataPaths
from pipeline.kaggle import api

log = logging.getLogger(__name__)

MARKER = ".download-complete"


@dataclass(frozen=True)
class Downloaded:
    """DATA_DIR after ``download``: fresh with its image counts, or already there before."""

    root: Path
    already: bool = False  # the data was there already: nothing was downloaded
    train_images: int = 0
    test_images: int = 0

    @property
    def marker(self) -> Path:
        """The file that says DATA_DIR is a finished download."""
        return self.root / MARKER


def archive_path(data: DataPaths) -> Path:
    """Where the archive is downloaded: a hidden sibling of DATA_DIR (``*.tmp``: git-ignored)."""
    return data.root.parent / f".{data.root.name}.download.tmp" / f"{api.COMPETITION}.zip"


def download(data: DataPaths, quiet: bool = False) -> Downloaded:
    """Download, safely extract and check the competition data into DATA_DIR (once; resumable)."""
    root = data.root
    if (root / MARKER).is_file():
        return Downloaded(root, already=True)
    if root.is_file() or (root.is_dir() and any(root.iterdir())):
        raise FileExistsError(f"{root} exists but has no {MARKER}, so it is not a finished "
                              "download: move it away or pass another --data-dir")
    log.info("downloading the competition data to %s (resumable)", archive_path(data))
    try:
        archive = api.download_archive(archive_path(data).parent, quiet)
    except KeyboardInterrupt:
        raise RuntimeError(f"interrupted; the partial download {archive_path(data)} is kept: "
                           "run the same command again to resume") from None
    staging = root.parent / f".{root.name}.extract.tmp"
    n_train, n_test = _extract(archive, staging, root, quiet)
    if root.is_dir():
        root.rmdir()
    os.rename(staging, root)
    shutil.rmtree(archive.parent, ignore_errors=True)
    return Downloaded(root, train_images=n_train, test_images=n_test)


def _extract(archive: Path, staging: Path, root: Path, quiet: bool) -> tuple[int, int]:
    """Extract into ``staging``, check the layout and write the marker; the image counts.
    A bad archive is deleted (the next run fetches it again) and nothing is left in staging."""
    shutil.rmtree(staging, ignore_errors=True)
    log.info("extracting %s", archive)
    try:
        n_files = extract_safely(archive, staging, quiet)
        n_train, n_test = check_layout(DataPaths(staging))
        info = archive.stat()
        # The marker goes in before the rename, so layout and marker appear together.
        fileio.write_json(staging / MARKER, {"archive": archive.name, "bytes": info.st_size,
                                             "last_modified": int(info.st_mtime),
                                             "files": n_files})
    except (ValueError, zipfile.BadZipFile) as error:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(archive.parent, ignore_errors=True)
        raise ValueError(f"{error} (deleted {archive}; nothing was written to {root})") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return n_train, n_test


# The real archive: about 18k JPEGs, 1.7 GB uncompressed at a ratio near 1; these leave room.
MAX_TOTAL_BYTES = 8 * 2**30
MAX_RATIO = 200           # per member of at least RATIO_FLOOR bytes (deflate tops out near 1030)
RATIO_FLOOR = 2**20


def _check_member(info: zipfile.ZipInfo, base: Path, archive: Path) -> None:
    name = info.filename
    if name.startswith(("/", "\\")) or PureWindowsPath(name).drive:
        raise ValueError(f"{archive}: member {name!r} is an absolute path; refusing to extract")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise ValueError(f"{archive}: member {name!r} is a symbolic link; refusing to extract")
    target = (base / name).resolve()
    if target != base and base not in target.parents:
        raise ValueError(f"{archive}: member {name!r} would be written outside {base} "
                         "(zip-slip); refusing to extract")


def _check_sizes(members: list[zipfile.ZipInfo], base: Path, archive: Path, max_total: int,
                 max_ratio: float) -> None:
    """Refuse duplicate members, a total size over ``max_total`` bytes and a member that
    expands more than ``max_ratio`` times (a zip bomb), from the directory alone."""
    seen: dict[Path, str] = {}
    for info in members:
        target = (base / info.filename).resolve()
        if target in seen:
            raise ValueError(f"{archive}: members {seen[target]!r} and {info.filename!r} are "
                             "the same file; refusing an archive with duplicate members")
        seen[target] = info.filename
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size >= RATIO_FLOOR and ratio > max_ratio:
            raise ValueError(f"{archive}: member {info.filename!r} expands {ratio:.0f} times "
                             f"({info.file_size} bytes), over the limit of {max_ratio}: a zip "
                             "bomb, not the competition data; refusing to extract")
    total = sum(info.file_size for info in members)
    if total > max_total:
        raise ValueError(f"{archive}: {total} bytes uncompressed, over the limit of {max_total}; "
                         "refusing to extract (not the competition data)")


def extract_safely(archive: Path, target: Path, quiet: bool = False,
                   max_total: int = MAX_TOTAL_BYTES, max_ratio: float = MAX_RATIO) -> int:
    """Extract a zip into a new directory after checking every member and the sizes the zip's
    directory declares (zipfile never writes more than a member's declared size); a corrupt
    member (bad CRC or deflate stream) is a ValueError naming it. Returns the file count."""
    with zipfile.ZipFile(archive) as zf:
        members = zf.infolist()
        base = target.resolve()
        for info in members:  # all checked before anything is written
            _check_member(info, base, archive)
        _check_sizes(members, base, archive, max_total, max_ratio)
        target.mkdir(parents=True)
        for info in tqdm(members, desc="extracting", unit="file", disable=True if quiet else None):
            try:
                zf.extract(info, target)
            except (zipfile.BadZipFile, zlib.error, EOFError) as error:
                raise ValueError(f"{archive}: member {info.filename!r} is corrupt ({error})") \
                    from None
    return sum(not info.is_dir() for info in members)


def check_layout(data: DataPaths) -> tuple[int, int]:
    """The (train, test) image counts of a competition layout; ValueError naming what is wrong."""
    from pipeline.data.images import list_images, read_image

    missing = [p.name for p in (data.train_csv, data.sample_submission) if not p.is_file()]
    missing += [f"{p.name}/" for p in (data.train_images, data.test_images) if not p.is_dir()]
    if missing:
        raise ValueError(f"the archive lacks {', '.join(missing)}: it is not the Severstal data")
    counts = []
    for folder in (data.train_images, data.test_images):
        image_ids = list_images(folder)
        if not image_ids:
            raise ValueError(f"the archive's {folder.name}/ holds no .jpg image")
        read_image(folder / image_ids[0])  # ValueError unless a readable 256x1600 JPEG
        counts.append(len(image_ids))
    return counts[0], counts[1]
