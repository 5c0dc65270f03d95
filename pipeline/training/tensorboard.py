"""``train --tensorboard``: TensorBoard event files of one fold in ``RUN_DIR/tb/fold<k>/``.

Rank 0 writes, at step = the fold's optimizer step count: per step rank 0's batch loss and the
step's learning rate (``train/``); per epoch the mean training loss and speed (``epoch/``);
per validated epoch what ``validation.evaluate`` measured, overall (``val/``) and per class
(``val_per_class/``), and a few overlays (``overlays/<image id>``): the first validation
images with defects, at most ``OVERLAY_WIDTH`` wide, their truth contours above those of the
model's own decision.

A resumed fold continues the folder: the writer starts with ``purge_step`` one past the last
committed epoch's step, so TensorBoard drops what a killed attempt logged after it (a fresh
start purges from step 1: the folder then shows this run alone). An epoch's events are
flushed before its ``last.pt`` is written. ``tensorboard`` is imported only when the flag
is on.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from pipeline import distributed
from pipeline.config import RunPaths
from pipeline.data import sampling
from pipeline.data.dataset import SteelDataset, to_model_input
from pipeline.inference.reports import CLASS_COLOURS
from pipeline.models import forward
from pipeline.training.config import TrainConfig

log = logging.getLogger(__name__)

N_OVERLAYS = 4
OVERLAY_WIDTH = 800   # at most, in pixels: half the 1600 of a full-size image
# epoch log row key -> scalar tag (the keys a row lacks, e.g. unvalidated epochs', are skipped)
EPOCH_TAGS = {"train_loss": "epoch/train_loss", "images_per_s": "epoch/images_per_s",
              "val_loss": "val/loss", "val_score": "val/score", "val_nonempty": "val/nonempty",
              "val_baseline": "val/baseline", "val_tuned": "val/tuned",
              "val_tuned_nonempty": "val/tuned_nonempty"}
# epoch log row key of a per-class list -> tag prefix; ``_class<k>`` follows (k = 1..4)
CLASS_TAGS = {"val_per_class": "val_per_class/score", "val_tuned_per_class": "val_per_class/tuned",
              "val_tuned_nonempty_per_class": "val_per_class/tuned_nonempty"}


def board_dir(run: RunPaths, fold: int) -> Path:
    """The event folder of one fold."""
    return run.root / "tb" / f"fold{fold}"


class Board:
    """The event writer of one fold; without a writer (flag off, ranks > 0) every call is a
    no-op, so the training loop calls it unconditionally."""

    def __init__(self, writer=None, cfg: TrainConfig | None = None,
                 val_set: SteelDataset | None = None):
        self.writer, self.cfg, self.val_set = writer, cfg, val_set
        self._examples: tuple | None = None

    @classmethod
    def open(cls, run: RunPaths, fold: int, resume_step: int, cfg: TrainConfig | None = None,
             val_set: SteelDataset | None = None) -> "Board":
        """The writer of ``board_dir``, past the ``resume_step`` steps already committed;
        ``cfg`` (a ``TrainConfig``) and ``val_set`` are needed for the overlays only."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:
            raise ImportError(f"--tensorboard needs the tensorboard package ({error}): pip "
                              "install tensorboard, or train without the flag") from None
        path = board_dir(run, fold)
        log.info("fold %d: TensorBoard events in %s (from step %d)", fold, path, resume_step + 1)
        return cls(SummaryWriter(str(path), purge_step=resume_step + 1), cfg, val_set)

    def on_step(self, offset: int) -> Callable[[float, float, int], None] | None:
        """``train_one_epoch``'s ``on_step(loss, lr, k)`` for an epoch that starts after
        ``offset`` steps (None when off)."""
        if self.writer is None:
            return None
        return lambda loss, lr, k: self.step(loss, lr, offset + k)

    def step(self, loss: float, lr: float, step: int) -> None:
        """One optimizer step's batch loss and learning rate."""
        if self.writer is not None:
            self.writer.add_scalar("train/loss", loss, step)
            self.writer.add_scalar("train/lr", lr, step)

    def epoch(self, row: dict, step: int, model: torch.nn.Module | None = None) -> None:
        """An epoch's log row (``train.py``) at the step it ended on; with ``model``, a
        validated epoch's overlays too. Flushed: call it before the epoch's commit."""
        if self.writer is None:
            return
        for key, tag in EPOCH_TAGS.items():
            if row.get(key) is not None:
                self.writer.add_scalar(tag, row[key], step)
        for key, prefix in CLASS_TAGS.items():
            for class_index, value in enumerate(row.get(key) or []):
                if value is not None:   # no tuned non-empty Dice where no image has the class
                    self.writer.add_scalar(f"{prefix}_class{class_index + 1}", value, step)
        if model is not None and "val_score" in row:
            self.overlays(model, step)
        self.writer.flush()

    @torch.inference_mode()
    def overlays(self, model: torch.nn.Module, step: int) -> None:
        """Up to ``N_OVERLAYS`` validation images with defects (decoded once), each with the
        truth's contours above the prediction's at the model's own decision."""
        if self.writer is None or self.val_set is None:
            return
        if self._examples is None:
            self._examples = examples(self.val_set)
        ids, inputs, images, truth = self._examples
        if not ids:
            return
        model = getattr(model, "module", model)   # rank 0 alone: never through DDP
        model.eval()
        device = next(model.parameters()).device
        inputs = to_model_input(inputs, device, self.cfg.channels_last)
        with forward.autocast(self.cfg.amp, device):
            logits, presence = forward.forward_padded(model, inputs)
        size = tuple(images.shape[-2:])
        probs = forward.probabilities(forward.upsample(logits.float(), size), self.cfg.head)
        pred = forward.default_masks(probs, self.cfg.head,
                                     None if presence is None else presence.float()).cpu()
        for image_id, image, true, predicted in zip(ids, images, truth, pred):
            self.writer.add_image(f"overlays/{image_id}", panel(image, true, predicted), step)

    def close(self) -> None:
        """Flush and close the event file."""
        if self.writer is not None:
            self.writer.close()


def for_fold(cfg: TrainConfig, run: RunPaths, fold: int, resume_step: int,
             context: distributed.Context, val_set: SteelDataset) -> Board:
    """The fold's board: writing with ``cfg.tensorboard`` on rank 0, else a no-op one."""
    if not (cfg.tensorboard and context.is_main):
        return Board()
    return Board.open(run, fold, resume_step, cfg, val_set)


def examples(val_set: SteelDataset, n: int = N_OVERLAYS, width: int = OVERLAY_WIDTH) -> tuple:
    """``(image ids, inputs (N, 3, H, W) uint8, images (N, 3, h, w) uint8, truth (N, 4, h, w)
    bool)`` of the first ``n`` readable validation images with a defect: the model's inputs,
    and the pictures (``h, w``: the input size, shrunk to at most ``width`` wide)."""
    present = sampling.presence_table(val_set.rles, val_set.image_ids).any(axis=1)
    items = []
    for index in np.flatnonzero(present):
        item = val_set[int(index)]   # no randomness in a validation item
        if item is not None:
            items.append(item)
        if len(items) == n:
            break
    if not items:
        return [], None, None, None
    inputs = torch.stack([item["image"] for item in items])
    height, input_width = inputs.shape[-2:]
    size = (max(1, round(height * min(1.0, width / input_width))), min(width, input_width))
    images = inputs if size == (height, input_width) else F.interpolate(
        inputs.float(), size=size, mode="area").round().to(torch.uint8)
    masks = torch.stack([item["masks"] for item in items]).float()   # 256x1600
    truth = F.interpolate(masks, size=size, mode="nearest") > 0
    return [item["image_id"] for item in items], inputs, images, truth


def contours(masks: torch.Tensor) -> torch.Tensor:
    """``(C, H, W)`` bool: the pixels of ``masks`` ``(C, H, W)`` bool with a neighbour (of 8)
    outside their mask; outside the image counts as outside."""
    outside = F.pad((~masks).float().unsqueeze(0), (1, 1, 1, 1), value=1.0)
    return masks & (F.max_pool2d(outside, 3, stride=1)[0] > 0)


def panel(image: torch.Tensor, truth: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """``(3, 2H + 2, W)`` uint8: ``image`` ``(3, H, W)`` uint8 with the contours of ``truth``
    above it with those of ``pred`` (both ``(4, H, W)`` bool), in the class colours of the CV
    overlays (1 yellow, 2 cyan, 3 red, 4 green), a white line between."""
    colours = torch.from_numpy(CLASS_COLOURS).to(torch.uint8)
    halves = []
    for masks in (truth, pred):
        half = image.clone()
        for class_index, edge in enumerate(contours(masks)):
            half[:, edge] = colours[class_index].view(3, 1)
        halves.append(half)
    line = torch.full((3, 2, image.shape[-1]), 255, dtype=torch.uint8)
    return torch.cat([halves[0], line, halves[1]], dim=1)
