"""The post-processing steps, in the order they run, each defined once and used on both paths:
on pixel masks (``postprocess.class_masks``: predict, the kernel) and on the out-of-fold counts
(``oof.OOFAccumulator`` and ``tuning``: cv, robustness).

Per class c, one value per step:

1. ``threshold`` (pixels): a pixel is on where ``probs[c] > threshold[c]``; None: the head's own
   decision (argmax for softmax, ``p > 0.5`` for sigmoid).
2. ``min_component`` (pixels): 8-connected components smaller than this are removed.
3. ``min_area`` (counts): the **empty-mask threshold**: a class with fewer predicted pixels
   is empty for that image (areas on the 256x1600 grid).
4. ``presence`` (counts): for a model with a gate, a class is empty where its presence
   probability is below this; None: the gate is not used.

Pixel steps change which pixels are on, so their values are counted (a candidate threshold
is one slice of the counts); count steps only decide whether a class is kept for an image,
from its predicted area and presence: ``keep`` is the same function of ``(N, 4)`` areas on
both paths (numpy or torch, broadcasting). A new step is one class here (``apply`` for a pixel
step, ``keep`` for a count step) added to ``PIXEL_STEPS`` or ``COUNT_STEPS`` (``PostProcess``
gets its field and postprocess.json its key from it), plus its grid in ``tuning`` if cv tunes
it; a pixel step's value that cv does not tune also rides into the accumulator (``oof``).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from pipeline.config import N_CLASSES
from pipeline.models.forward import default_masks


@dataclass(frozen=True)
class Step:
    """One post-processing parameter per class: its key in postprocess.json, its type, its
    default, the format version that added it and the range of its values."""

    key: str
    kind: type
    default: object
    nullable: bool = False
    since: int = 1
    low: float = 0.0
    high: float | None = None   # exclusive; None: unbounded

    def values(self, value: object) -> tuple:
        """One value per class (a single value applies to all); ValueError when out of range."""
        values = tuple(value) if isinstance(value, (list, tuple)) else (value,) * N_CLASSES
        if len(values) != N_CLASSES:
            raise ValueError(f"{self.key} needs {N_CLASSES} values (classes 1..4), got "
                             f"{len(values)}")
        if any(v is None for v in values) and not self.nullable:
            raise ValueError(f"{self.key} values must be numbers, got {values}")
        values = tuple(None if v is None else self.kind(v) for v in values)
        bad = [v for v in values if v is not None and
               not (v >= self.low and (self.high is None or v < self.high))]
        if bad:
            span = f"in [{self.low:g}, {self.high:g})" if self.high is not None else \
                f">= {self.low:g}"
            raise ValueError(f"{self.key} values must be {span}, got {values}")
        return values

    def active(self, values: tuple) -> bool:
        """Whether the values do anything (differ from the step's default somewhere)."""
        return any(v != self.default for v in values)

    def json_ok(self, value: object) -> bool:
        """Whether a postprocess.json value has this step's shape: a list of one value per
        class (numbers, or null where the step allows it)."""
        def one(v: object) -> bool:
            if v is None:
                return self.nullable
            number = isinstance(v, (int, float)) if self.kind is float else isinstance(v, int)
            return number and not isinstance(v, bool)
        return isinstance(value, list) and len(value) == N_CLASSES and all(map(one, value))


class PixelThreshold(Step):
    """Probabilities -> pixel masks."""

    def apply(self, probs: torch.Tensor, masks: None, head: str, values: tuple) -> torch.Tensor:
        """``(N, 4, H, W)`` bool masks of ``(N, 4, H, W)`` probabilities (it is the first
        pixel step: there are no masks yet)."""
        masks = torch.empty(probs.shape, dtype=torch.bool, device=probs.device)
        default = None
        for c, threshold in enumerate(values):
            if threshold is None:
                default = default_masks(probs, head) if default is None else default
                masks[:, c] = default[:, c]
            else:
                torch.gt(probs[:, c], threshold, out=masks[:, c])
        return masks


class SmallComponents(Step):
    """Pixel masks -> pixel masks without their small connected components."""

    def active(self, values: tuple) -> bool:
        """Whether any class removes components (a size of 0 or 1 removes nothing)."""
        return any(v > 1 for v in values)

    def apply(self, probs: torch.Tensor, masks: torch.Tensor, head: str,
              values: tuple) -> torch.Tensor:
        """``(N, 4, H, W)`` bool masks with each class's components below its size removed."""
        for c, min_size in enumerate(values):
            masks[:, c] = remove_small_components(masks[:, c], min_size)
        return masks


class MinArea(Step):
    """Keep a class whose predicted area reaches ``min_area`` (0 counts as 1: an empty mask
    is empty whatever the threshold)."""

    def keep(self, pred_area, presence, values):
        """Where a class is kept: ``pred_area >= max(min_area, 1)`` (broadcasts)."""
        least = np.maximum(np.asarray(values, dtype=np.int64), 1)
        if isinstance(pred_area, torch.Tensor):
            least = torch.as_tensor(least, device=pred_area.device)
        return pred_area >= least


class PresenceGate(Step):
    """Keep a class whose presence probability reaches its threshold (None: always)."""

    def keep(self, pred_area, presence, values):
        """``presence (N, 4) >= threshold`` per class; True where there is no threshold or
        no gate at all."""
        if presence is None or all(t is None for t in values):
            return True
        bounds = [-1.0 if t is None else t for t in values]
        if isinstance(presence, np.ndarray):
            return presence >= np.asarray(bounds)
        return presence >= torch.as_tensor(bounds, device=presence.device,
                                           dtype=presence.dtype)


THRESHOLD = PixelThreshold("threshold", float, None, nullable=True, high=1.0)
MIN_COMPONENT = SmallComponents("min_component", int, 0)
MIN_AREA = MinArea("min_area", int, 0)
PRESENCE = PresenceGate("presence", float, None, nullable=True, high=1.0)
PIXEL_STEPS = (THRESHOLD, MIN_COMPONENT)
COUNT_STEPS = (MIN_AREA, PRESENCE)
STEPS = PIXEL_STEPS + COUNT_STEPS


def remove_small_components(masks: torch.Tensor, min_size: int) -> torch.Tensor:
    """Drop the 8-connected components of ``(N, H, W)`` bool masks smaller than min_size."""
    if min_size <= 1:
        return masks
    out = masks.cpu().numpy().astype(np.uint8)
    for image in out:
        if not image.any():
            continue
        n, labels, stats, _ = cv2.connectedComponentsWithStats(image, connectivity=8)
        small = np.flatnonzero(stats[:, cv2.CC_STAT_AREA] < min_size)
        small = small[small > 0]  # label 0 is the background
        if small.size:
            image[np.isin(labels, small)] = 0
    return torch.from_numpy(out.astype(bool)).to(masks.device)


def pixel_masks(probs: torch.Tensor, head: str, values: dict) -> torch.Tensor:
    """``(N, 4, H, W)`` masks after every pixel step in order; ``values``: step key ->
    per-class values."""
    masks = None
    for step in PIXEL_STEPS:
        masks = step.apply(probs, masks, head, values[step.key])
    return masks


def keep(pred_area, presence, values: dict):
    """Where every count step keeps a class: ``(N, 4)`` (or broadcast) bools."""
    kept = True
    for step in COUNT_STEPS:
        kept = kept & step.keep(pred_area, presence, values[step.key])
    return kept
