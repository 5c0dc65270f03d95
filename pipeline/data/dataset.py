"""Torch datasets: images and masks of the competition layout, scaled, cropped and flipped."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, default_collate

from pipeline.config import HEIGHT, WIDTH
from pipeline.data import augment, images, labels
from pipeline.stages import stage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Transform:
    """Resize by ``scale``, then (training) a random ``crop``, horizontal/vertical flips and the
    rest of an ``augment`` preset (``data.augment``).

    ``decode``: "scaled" decodes the JPEG at 1/2, 1/4 or 1/8 size when ``scale`` allows it
    (``images.reduction_for``) and resizes from there; "full" decodes at 256x1600 first.
    ``crop_focus``: the probability that a crop is placed on a defect (``focused_crop``).
    """

    scale: float = 1.0
    crop: tuple[int, int] | None = None   # (height, width) after scaling
    flips: bool = False
    augment: str = "none"
    decode: str = "scaled"
    crop_focus: float = 0.0

    def __post_init__(self) -> None:
        augment.build(self.augment)  # ValueError for an unknown preset
        if self.decode not in images.DECODES:
            raise ValueError(f"decode {self.decode!r} is not valid; "
                             f"valid: {', '.join(images.DECODES)}")
        if not 0.0 <= self.crop_focus <= 1.0:
            raise ValueError(f"--crop-focus is a probability in [0, 1], got {self.crop_focus}")
        if not 0.0 < self.scale <= 4.0:
            raise ValueError(f"--scale {self.scale} must be in (0, 4]")
        size = self.input_size()
        if self.crop is not None and (self.crop[0] > size[0] or self.crop[1] > size[1]):
            raise ValueError(f"--crop {self.crop[0]}x{self.crop[1]} is larger than the "
                             f"{size[0]}x{size[1]} images at --scale {self.scale}: use a "
                             "smaller crop or --crop none")

    def input_size(self) -> tuple[int, int]:
        """The (height, width) the model sees for a full image."""
        return round(HEIGHT * self.scale), round(WIDTH * self.scale)

    def reduction(self) -> int:
        """The JPEG decode reduction (1: full size)."""
        return images.reduction_for(self.scale) if self.decode == "scaled" else 1


class SteelDataset(Dataset):
    """Items ``{"image": (3, h, w) uint8, "masks": (4, H', W') uint8, "image_id"}``.

    Training items have image and masks scaled and cropped alike; evaluation items
    (``full_masks=True``) keep the masks at 256x1600 so scores are on the original grid;
    without labels (``rles=None``) items have no masks. Images stay uint8 (4x less to move
    between processes and to the GPU); ``to_model_input`` makes the float [0, 1] batch.
    With ``skip_bad_images`` an unreadable image gives ``None``, dropped by ``collate``; with
    False its error says the flag exists (``train --skip-bad-images``); with None (a command
    without the flag) the error is the reader's own.
    A ``shift(image, image_id)`` (``data.shifts``) changes the full-size image as read.
    """

    def __init__(self, image_dir: Path, image_ids: list[str], rles: pd.DataFrame | None,
                 transform: Transform, full_masks: bool = False, skip_bad_images: bool | None = None,
                 shift: Callable[[np.ndarray, str], np.ndarray] | None = None):
        self.image_dir = Path(image_dir)
        self.image_ids = list(image_ids)
        self.rles = rles
        self.transform = transform
        self.full_masks = full_masks
        self.skip_bad_images = skip_bad_images
        self.augment = augment.build(transform.augment)
        self.shift = shift

    def __len__(self) -> int:
        return len(self.image_ids)

    def _masks(self, image_id: str) -> np.ndarray:
        if self.rles is None:
            return np.zeros((4, 0, 0), dtype=np.uint8)
        return labels.masks_from_rles(list(self.rles.loc[image_id]))

    def __getitem__(self, index: int) -> dict | None:
        image_id = self.image_ids[index]
        try:
            # A shift changes the full-size image as read, so it gets one.
            reduce = 1 if self.shift is not None else self.transform.reduction()
            with stage("decode"):
                image = images.read_image(self.image_dir / image_id, reduce=reduce)
        except (FileNotFoundError, ValueError) as error:
            if self.skip_bad_images is False:
                raise type(error)(f"{error}, or pass --skip-bad-images") from None
            if not self.skip_bad_images:
                raise
            log.warning("skipped: %s", error)
            return None
        if self.shift is not None:
            with stage("augment"):
                image = self.shift(image, image_id)
        with stage("masks"):
            masks = self._masks(image_id)
        with stage("resize"):
            item = self._geometry(image, masks, image_id)
        if self.augment is not None:  # training only, where there are masks
            with stage("augment"):
                item["image"], item["masks"] = augment.apply(self.augment, item["image"],
                                                             item["masks"])
        return item

    def _geometry(self, image: np.ndarray, masks: np.ndarray, image_id: str) -> dict:
        """Scale, then (training) the random crop and flips: the item's tensors."""
        t = self.transform
        image = images.resize(image, t.input_size())
        if not self.full_masks and self.rles is not None:
            masks = images.resize(masks.transpose(1, 2, 0), t.input_size(), masks=True).transpose(2, 0, 1)
        if t.crop is not None:  # training only, where there are masks
            focus = t.crop_focus > 0 and float(torch.rand(())) < t.crop_focus
            placed = focused_crop(masks, t.crop) if focus else None
            top, left = placed[1:] if placed else (
                int(torch.randint(0, image.shape[0] - t.crop[0] + 1, ())),
                int(torch.randint(0, image.shape[1] - t.crop[1] + 1, ())))
            image = image[top:top + t.crop[0], left:left + t.crop[1]]
            masks = masks[:, top:top + t.crop[0], left:left + t.crop[1]]
        if t.flips:
            flip_h, flip_v = (torch.rand(2) < 0.5).tolist()
            if flip_h:
                image, masks = image[:, ::-1], masks[:, :, ::-1]
            if flip_v:
                image, masks = image[::-1], masks[:, ::-1]
        item = {"image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
                "image_id": image_id}
        if self.rles is not None:
            item["masks"] = torch.from_numpy(np.ascontiguousarray(masks))
        return item


def focused_crop(masks: np.ndarray, crop: tuple[int, int]) -> tuple[int, int, int] | None:
    """``(class index, top, left)``: a crop holding a pixel of a class drawn uniformly from
    the classes of ``masks`` ``(4, H, W)`` (the pixel drawn uniformly from that class, its
    place in the crop too), or None for a defect-free image (the caller then crops at random)."""
    present = np.flatnonzero(masks.reshape(len(masks), -1).any(axis=1))
    if not len(present):
        return None
    drawn = int(present[int(torch.randint(0, len(present), ()))])
    plane = masks[drawn]
    pixels = np.flatnonzero(plane)
    y, x = divmod(int(pixels[int(torch.randint(0, len(pixels), ()))]), plane.shape[1])
    (height, width), (crop_h, crop_w) = plane.shape, crop
    top = int(torch.randint(max(0, y - crop_h + 1), min(y, height - crop_h) + 1, ()))
    left = int(torch.randint(max(0, x - crop_w + 1), min(x, width - crop_w) + 1, ()))
    return drawn, top, left


def to_model_input(images: torch.Tensor, device: torch.device,
                   channels_last: bool = True) -> torch.Tensor:
    """``(N, 3, H, W)`` uint8 batch -> float [0, 1] on ``device`` (channels-last if asked)."""
    images = images.to(device, non_blocking=True).float().div_(255)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images


def collate(items: list[dict | None]) -> dict:
    """Batch the readable items; ``n_skipped`` counts the unreadable ones."""
    kept = [item for item in items if item is not None]
    batch = default_collate(kept) if kept else {}
    batch["n_skipped"] = len(items) - len(kept)
    return batch
