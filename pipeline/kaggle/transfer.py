"""Files to and from Kaggle: the competition archive in (safe extraction, layout check) and the
weights dataset out (weights-only checkpoints + post-processing + config)."""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import zipfile
import zlib
from pathlib import Path, PureWindowsPath

from tqdm import tqdm

from pipeline import checkpoint, fileio
from pipeline.kaggle import api
from pipeline.config import DataPaths, RunPaths

MARKER = ".download-complete"
WEIGHT_KEYS = ("model", "model_info", "config", "fold", "epoch", "code_version")


def archive_path(data: DataPaths) -> Path:
    """Where the archive is downloaded: a hidden sibling of DATA_DIR (``*.tmp``: git-ignored)."""
    return data.root.parent / f".{data.root.name}.download.tmp" / f"{api.COMPETITION}.zip"


def download(data: DataPaths, quiet: bool = False) -> Path:
    """Download, safely extract and check the competition data into DATA_DIR (once; resumable)."""
    root, marker = data.root, data.root / MARKER
    if marker.is_file():
        print(f"{root} already holds the competition data ({marker}): nothing to do")
        return root
    if root.is_file() or (root.is_dir() and any(root.iterdir())):
        raise FileExistsError(f"{root} exists but has no {MARKER}, so it is not a finished "
                              "download: move it away or pass another --data-dir")
    try:
        archive = api.download_archive(archive_path(data).parent, quiet)
    except KeyboardInterrupt:
        raise RuntimeError(f"interrupted; the partial download {archive_path(data)} is kept: "
                           "run the same command again to resume") from None
    staging = root.parent / f".{root.name}.extract.tmp"
    shutil.rmtree(staging, ignore_errors=True)
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
    if root.is_dir():
        root.rmdir()
    os.rename(staging, root)
    shutil.rmtree(archive.parent, ignore_errors=True)
    print(f"wrote {root}: {n_train} training and {n_test} test images, train.csv, "
          "sample_submission.csv")
    return root


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


def _write_if_changed(path: Path, data: bytes) -> None:
    # An unchanged file keeps its mtime, so the client can resume an interrupted upload of it.
    if not (path.is_file() and path.read_bytes() == data):
        fileio.write_bytes(path, data)


def stage_weights(run: RunPaths, checkpoints: list[Path], dataset: str, title: str,
                  folder: Path) -> list[str]:
    """Write weights-only checkpoints, postprocess.json, config.json and dataset metadata;
    beside each checkpoint of a model that needs smp/timm, its ``torch.export`` program
    (``fold<k>.pt2``), which the offline kernel runs with torch alone."""
    import torch

    from pipeline.models import registry

    for needed, fix in ((run.config_json, "train first (`make train`)"),
                        (run.postprocess_json, "run `make cv` first")):
        if not needed.is_file():
            raise FileNotFoundError(f"{needed} does not exist: {fix}")
    if not checkpoints:
        raise FileNotFoundError(f"no checkpoint {run.checkpoints}/fold*/best.pt: train first "
                                "(`make train`) or pass --checkpoints")
    sources: dict[str, Path] = {}
    for path in map(Path, checkpoints):
        state = checkpoint.load(path)
        if "model" not in state or "model_info" not in state:
            raise ValueError(f"{path} is not a checkpoint of this pipeline (no model_info)")
        name = f"fold{state['fold']}.pt" if "fold" in state else f"{path.parent.name}.pt"
        if name in sources:
            raise ValueError(f"{path} and {sources[name]} would both be {name}: pass one "
                             "checkpoint per fold")
        sources[name] = path
        buffer = io.BytesIO()  # no optimizer, scheduler or scaler state: weights only
        torch.save({k: state[k] for k in WEIGHT_KEYS if k in state}, buffer)
        _write_if_changed(folder / name, buffer.getvalue())
        if registry.spec_of(state, path).requires:
            exported = folder / f"{Path(name).stem}.pt2"
            registry.export(registry.rebuild(state, path), exported)
            sources[exported.name] = path
    for source in (run.postprocess_json, run.config_json):
        _write_if_changed(folder / source.name, source.read_bytes())
    metadata = {"title": title, "id": dataset, "licenses": [{"name": "CC0-1.0"}]}
    _write_if_changed(folder / "dataset-metadata.json",
                      (json.dumps(metadata, indent=2) + "\n").encode())
    keep = {*sources, run.postprocess_json.name, run.config_json.name, "dataset-metadata.json"}
    for stale in folder.iterdir():
        if stale.name not in keep:
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    return sorted(keep - {"dataset-metadata.json"})
