"""``segment``: any folder of JPEG/PNG frames, no ground truth -> one label PNG per image (0
background, 1-4 the classes, the highest class where they overlap), optional overlays, a table
of every image and class (``segments.csv``) and a summary (``segments.json``).

Size rule (``SIZE_RULE``): pixels are taken to be the size of the training images' pixels, so
an image of any size h x w is fed to each model at that model's input scale, as it is,
``(round(h * s), round(w * s))`` (the models are fully convolutional; ``forward_padded`` pads to
the stride), and the logits are upsampled to h x w. Nothing is stretched: a 256x1600 image
follows ``predict``'s path exactly. The empty-mask threshold ``min_area`` and the component
size limit ``min_component`` were tuned on 256x1600 images: they are scaled by the image's
area ratio ``h * w / (256 * 1600)`` (rounded; unchanged at 256x1600).

Memory stays flat in the number of images: images stream through a DataLoader, runs of
consecutive images of one size are batched (up to ``--batch-size``), only a batch is kept.
"""

from __future__ import annotations

import csv
import fnmatch
import io
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import torch
from tqdm import tqdm

from pipeline import fileio
from pipeline.config import HEIGHT, N_CLASSES, WIDTH
from pipeline.data import images as image_files
from pipeline.data import labels
from pipeline.data.dataset import to_model_input
from pipeline.data.workers import DataLoader
from pipeline.inference import postprocess, predict, reports
from pipeline.inference.config import InferenceConfig

log = logging.getLogger(__name__)

SUFFIXES = (".jpg", ".jpeg", ".png")
TABLE, SUMMARY = "segments.csv", "segments.json"
COLUMNS = ("image", "class_id", "presence", "area", "components", "height", "width")
SIZE_RULE = ("each model sees the image at its input scale of the image's own size (no "
             "stretching); logits upsampled to the image's size; min_area and min_component "
             "scaled by h*w/(256*1600)")


class Listing(NamedTuple):
    """The images to segment (paths relative to the input folder, sorted), the ones left out
    because their outputs would overwrite another's (``{"image", "reason"}``), and the number
    of other files (not .jpg/.jpeg/.png, or not matching the glob)."""

    images: list[str]
    clashes: list[dict]
    n_ignored: int


def check_folders(input_dir: Path, out_dir: Path) -> None:
    """Refuse a missing ``--input``, an ``--out`` that is a file, and folders that overlap."""
    if not input_dir.is_dir():
        raise FileNotFoundError(f"--input {input_dir} is not a folder: give the folder of "
                                "images to segment")
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"--out {out_dir} is a file: give a folder for the outputs")
    source, target = input_dir.resolve(), out_dir.resolve()
    if target == source or source in target.parents:
        raise ValueError(f"--out {out_dir} is inside --input {input_dir}: its PNGs would mix "
                         "with the images; choose an output folder outside the input folder")
    if target in source.parents:
        raise ValueError(f"--input {input_dir} is inside --out {out_dir}: the outputs could "
                         "overwrite images; choose an output folder outside the input folder")


def output_names(image: str, overlays: bool) -> list[str]:
    """The files one image gives, relative to the output folder: its label PNG (and overlay)."""
    stem = Path(image).with_suffix("").as_posix()
    return [f"{stem}.png"] + ([f"{stem}_overlay.png"] if overlays else [])


def find_images(input_dir: Path, pattern: str = "*", recursive: bool = True,
                overlays: bool = False) -> Listing:
    """The JPEG and PNG files (suffix in any case) under ``input_dir`` whose name matches
    ``pattern``, in sorted order of their relative paths."""
    found, n_ignored = [], 0
    for folder, subfolders, files in os.walk(input_dir):
        subfolders[:] = sorted(subfolders) if recursive else []
        for name in files:
            wanted = (Path(name).suffix.lower() in SUFFIXES and fnmatch.fnmatch(name, pattern))
            if wanted:
                found.append((Path(folder) / name).relative_to(input_dir).as_posix())
            n_ignored += not wanted
    owners: dict[str, str] = {}
    kept, clashes = [], []
    for image in sorted(found):
        taken = [owners[name] for name in output_names(image, overlays) if name in owners]
        if taken:
            clashes.append({"image": image, "reason": f"its outputs would overwrite those of "
                            f"{taken[0]} (same name but the suffix): rename one of them"})
            continue
        owners.update(dict.fromkeys(output_names(image, overlays), image))
        kept.append(image)
    return Listing(kept, clashes, n_ignored)


def scaled_postprocess(params, size: tuple[int, int]):
    """``params`` with ``min_area`` and ``min_component`` (pixel counts tuned on 256x1600
    images) scaled by the area ratio of an image of ``size`` (h, w); unchanged at 256x1600."""
    ratio = size[0] * size[1] / (HEIGHT * WIDTH)
    if ratio == 1:
        return params
    return params.replace(min_area=tuple(round(v * ratio) for v in params.min_area),
                          min_component=tuple(round(v * ratio) for v in params.min_component))


def read_frame(path: Path, scale: float, decode: str = "scaled") -> tuple[np.ndarray, tuple]:
    """``((round(h*scale), round(w*scale), 3) uint8 RGB, (h, w))`` of a JPEG or PNG file; a
    JPEG decoded as ``predict`` decodes one (``decode``: scaled or full, ``data.images``).
    ValueError naming the file for an unreadable one."""
    from PIL import Image

    data = path.read_bytes()
    jpeg = data.startswith(image_files.JPEG_START)
    if jpeg and not data.rstrip(b"\0").endswith(image_files.JPEG_END):
        raise ValueError(f"image {path} cannot be decoded (truncated JPEG: no end marker)")
    try:
        with Image.open(io.BytesIO(data)) as header:
            size = header.height, header.width
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise ValueError(f"image {path} cannot be decoded (not a readable image: "
                         f"{type(error).__name__})") from None
    reduce = image_files.reduction_for(scale) if jpeg and decode == "scaled" else 1
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), image_files.REDUCED_FLAGS[reduce])
    except cv2.error as error:   # e.g. more pixels than OpenCV decodes
        raise ValueError(f"image {path} cannot be decoded ({' '.join(str(error).split())})"
                         ) from None
    if image is None:
        raise ValueError(f"image {path} cannot be decoded (corrupt file)")
    decoded = tuple(-(-side // reduce) for side in size)
    if image.shape[:2] == decoded[::-1] != decoded:
        size = size[::-1]   # OpenCV turned it upright by its EXIF orientation
    elif image.shape[:2] != decoded:
        raise ValueError(f"image {path} cannot be decoded (its header says {size[1]}x{size[0]}, "
                         f"it decodes to {image.shape[1] * reduce}x{image.shape[0] * reduce})")
    image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    target = (max(1, round(size[0] * scale)), max(1, round(size[1] * scale)))
    return image_files.resize(image, target), size


class Frames(torch.utils.data.Dataset):
    """Items ``{"image": (3, h', w') uint8 at the scale, "size": (h, w), "path"}`` (with
    ``pictures`` also ``"picture"``, the ``(h, w, 3)`` RGB image for the overlay), or
    ``{"path", "error"}`` for an unreadable file."""

    def __init__(self, root: Path, paths: list[str], scale: float, decode: str,
                 pictures: bool = False):
        self.root, self.paths, self.scale = Path(root), paths, scale
        self.decode, self.pictures = decode, pictures

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        path = self.paths[index]
        try:
            image, size = read_frame(self.root / path, self.scale, self.decode)
            item = {"image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
                    "size": size, "path": path}
            if self.pictures:
                item["picture"] = (image if image.shape[:2] == size else
                                   read_frame(self.root / path, 1.0, "full")[0])
            return item
        except (OSError, ValueError) as error:
            return {"path": path, "error": str(error)}


def same_size_batches(items, batch_size: int, skipped: list[dict]) -> Iterator[list[dict]]:
    """Runs of consecutive readable items of one size, at most ``batch_size`` each; an
    unreadable item goes to ``skipped`` (``{"image", "reason"}``) without breaking a run."""
    batch: list[dict] = []
    for item in items:
        if "error" in item:
            log.warning("skipped: %s", item["error"])
            skipped.append({"image": item["path"], "reason": item["error"]})
            continue
        if batch and (tuple(item["size"]) != tuple(batch[0]["size"]) or len(batch) == batch_size):
            yield batch
            batch = []
        batch.append(item)
    if batch:
        yield batch


def batch_masks(ensemble: predict.Ensemble, params, batch: list[dict], device: torch.device,
                settings: InferenceConfig) -> tuple[np.ndarray, np.ndarray]:
    """``((B, 4, h, w) bool masks, (B, 4) presence)`` of one batch of images of one size, by
    ``predict``'s functions; presence: the gated models' presence probability, else the
    class's largest pixel probability."""
    size, n = tuple(batch[0]["size"]), len(batch)
    images = to_model_input(torch.stack([item["image"] for item in batch]), device)
    if ensemble.compiled and n < settings.batch_size:   # one input shape per size, as predict
        images = torch.cat([images, images[-1:].expand(settings.batch_size - n, -1, -1, -1)])
    probs, presence = predict.ensemble_probabilities(ensemble, images, settings.tta,
                                                     settings.amp, size)
    probs, presence = probs[:n], None if presence is None else presence[:n]
    masks = postprocess.class_masks(probs, scaled_postprocess(params, size), presence)
    score = presence if presence is not None else probs.flatten(2).amax(2)
    return masks.cpu().numpy(), score.float().cpu().numpy()


def write_outputs(out_dir: Path, item: dict, masks: np.ndarray, score: np.ndarray,
                  table: csv.writer) -> np.ndarray:
    """Write an image's label PNG (and overlay) atomically and its 4 table rows; returns its
    ``(4,)`` areas."""
    names = output_names(item["path"], "picture" in item)
    label = labels.label_map(masks.astype(np.uint8))
    fileio.write_bytes(out_dir / names[0], cv2.imencode(".png", label)[1].tobytes())
    if "picture" in item:
        picture = cv2.cvtColor(reports.overlay(np.asarray(item["picture"]), masks),
                               cv2.COLOR_RGB2BGR)
        fileio.write_bytes(out_dir / names[1], cv2.imencode(".png", picture)[1].tobytes())
    areas = masks.reshape(N_CLASSES, -1).sum(axis=1)
    height, width = masks.shape[1:]
    for c in range(N_CLASSES):
        components = (cv2.connectedComponents(masks[c].astype(np.uint8), connectivity=8)[0] - 1
                      if areas[c] else 0)
        table.writerow([item["path"], c + 1, f"{score[c]:.4f}", int(areas[c]), components,
                        height, width])
    return areas


class Progress:
    """A tqdm bar over the images (off with --quiet or off a terminal) and a log line each
    time another ``every`` images are segmented."""

    def __init__(self, total: int, every: int, quiet: bool):
        self.total, self.every, self.shown = total, every, 0
        self.start = time.perf_counter()
        self.bar = tqdm(total=total, desc="segment", unit="image", disable=quiet or None)

    def advance(self, n_segmented: int, n_unreadable: int, n_before: int) -> None:
        self.bar.update(n_segmented + n_unreadable - self.shown)
        self.shown = n_segmented + n_unreadable
        if n_segmented // self.every > n_before // self.every:
            log.info("segment: %d of %d images, %d unreadable, %.2f images/s", n_segmented,
                     self.total, n_unreadable, n_segmented / (time.perf_counter() - self.start))

    def close(self) -> float:
        """Close the bar; the seconds since the start."""
        self.bar.close()
        return time.perf_counter() - self.start


def segment_folder(ensemble: predict.Ensemble, params, input_dir: Path, out_dir: Path,
                   listing: Listing, device: torch.device,
                   settings: InferenceConfig = InferenceConfig(), overlays: bool = False,
                   log_every: int = 100, about: dict | None = None) -> dict:
    """Segment ``listing.images`` of ``input_dir`` into ``out_dir`` (mirroring its folders):
    label PNGs, overlays, ``segments.csv``; returns the summary it writes to ``segments.json``
    (``about``: what to add to it, e.g. the run)."""
    if params.head != ensemble.head:
        raise ValueError(f"post-processing is for the {params.head} head but the checkpoints "
                         f"have the {ensemble.head} head: rerun `make cv` for these checkpoints")
    loader = DataLoader(Frames(input_dir, listing.images, ensemble.input_scale, settings.decode,
                               overlays), batch_size=None, num_workers=settings.n_workers)
    unreadable: list[dict] = []
    sizes, scaled, n_done = {}, {}, 0
    images_with = np.zeros(N_CLASSES, dtype=np.int64)
    progress = Progress(len(listing.images), log_every, settings.quiet)
    with fileio.atomic_path(out_dir / TABLE) as tmp, open(tmp, "w", newline="") as stream:
        table = csv.writer(stream)
        table.writerow(COLUMNS)
        for batch in same_size_batches(loader, settings.batch_size, unreadable):
            masks, scores = batch_masks(ensemble, params, batch, device, settings)
            for item, image_masks, score in zip(batch, masks, scores):
                images_with += write_outputs(out_dir, item, image_masks, score, table) > 0
            size = tuple(batch[0]["size"])
            key = "x".join(map(str, size))
            sizes[key] = sizes.get(key, 0) + len(batch)
            values = scaled_postprocess(params, size)
            scaled[key] = {"min_area": values.min_area, "min_component": values.min_component}
            n_done += len(batch)
            progress.advance(n_done, len(unreadable), n_done - len(batch))
    progress.advance(n_done, len(unreadable), n_done)
    summary = {**(about or {}), "input": str(input_dir), "out": str(out_dir),
               "n_images": len(listing.images) + len(listing.clashes), "n_segmented": n_done,
               "n_skipped": len(listing.clashes) + len(unreadable),
               "skipped": listing.clashes + unreadable, "n_ignored": listing.n_ignored,
               "sizes": sizes, "images_with_class": images_with.tolist(),
               "presence": "gate" if ensemble.gated else "largest pixel probability",
               "seconds": round(progress.close(), 2), "settings": settings.as_dict(),
               "postprocess": params.as_dict(), "size_rule": SIZE_RULE,
               "postprocess_by_size": scaled}
    fileio.write_json(out_dir / SUMMARY, summary)
    return summary
