"""Segmentation losses: cross-entropy, BCE, smp's focal and Lovasz losses, smooth soft Dice,
and their sums.

Every loss is called as ``loss(logits, masks)`` with logits ``(N, C_out, H, W)`` (5 channels for
the softmax head, 4 for the sigmoid head) and masks ``(N, 4, H, W)`` (bool/uint8/float 0/1, one
channel per defect class, the same target for both heads), and returns a scalar float32 tensor.
Logits are cast to float32 first, so the losses are safe under bf16/fp16 autocast.

For the softmax head the target is one label per pixel, ``data.labels.label_map``: 0 = background,
else the highest class id whose mask covers the pixel (overlaps are rare in Severstal).

Soft Dice (both heads), with ``p`` the probabilities of the 4 defect classes (softmax channels
1..4, or the sigmoid channels) and ``t`` the 0/1 targets (the one-hot of the labels for softmax,
the masks for sigmoid), for each image n and class c:

    dice[n, c] = (2 * sum_hw(p * t) + 1) / (sum_hw(p) + sum_hw(t) + 1)
    loss = 1 - mean over n and c of dice[n, c]

(smooth = 1 in numerator and denominator; background excluded; an empty class scores
``1 / (sum p + 1)``, pulling its probabilities to 0). Combined losses are
``pixel_weight * (CE, BCE or focal) + dice_weight * Dice``, both weights 1 by default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from segmentation_models_pytorch import losses as smp_losses
from torch import nn

from pipeline.config import N_CLASSES
from pipeline.data.labels import label_map

SMOOTH = 1.0
BOTH = ("softmax", "sigmoid")


@dataclass(frozen=True)
class LossSpec:
    """A registered loss: the heads it serves, its pixel-wise term (None: Dice alone) and the
    default weight of its soft Dice term."""

    heads: tuple[str, ...]
    pixel: str | None
    dice: float = 0.0


# The pixel-wise terms: "ce" (softmax), "bce" (sigmoid), and smp's focal and Lovasz losses
# (multiclass over the 5 softmax channels, or per class for the sigmoid head).
LOSSES: dict[str, LossSpec] = {
    "ce": LossSpec(("softmax",), "ce"),
    "dice": LossSpec(("softmax",), None, 1.0),
    "ce+dice": LossSpec(("softmax",), "ce", 1.0),
    "bce": LossSpec(("sigmoid",), "bce"),
    "bce+dice": LossSpec(("sigmoid",), "bce", 1.0),
    "focal": LossSpec(BOTH, "focal"),
    "focal+dice": LossSpec(BOTH, "focal", 1.0),
    "lovasz": LossSpec(BOTH, "lovasz"),
}


def soft_dice_loss(probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``1 - mean_{n,c} (2 sum p t + 1) / (sum p + sum t + 1)`` of ``(N, C, H, W)`` tensors."""
    intersection = (probs * targets).sum(dim=(2, 3))
    total = probs.sum(dim=(2, 3)) + targets.sum(dim=(2, 3))
    return 1.0 - ((2.0 * intersection + SMOOTH) / (total + SMOOTH)).mean()


def _check_shapes(logits: torch.Tensor, masks: torch.Tensor, channels: int) -> None:
    """Raise ValueError unless logits are ``(N, channels, H, W)`` and masks ``(N, 4, H, W)``."""
    n, _, h, w = masks.shape if masks.ndim == 4 else (None,) * 4
    if logits.shape != (n, channels, h, w) or masks.shape[1] != N_CLASSES:
        raise ValueError(f"expected logits (N, {channels}, H, W) and masks (N, {N_CLASSES}, H, W), "
                         f"got logits {tuple(logits.shape)} and masks {tuple(masks.shape)}")


def _as_buffer(values: Sequence[float] | torch.Tensor | None, length: int,
               what: str) -> torch.Tensor | None:
    """``values`` as a float32 ``(length,)`` tensor, or None; ValueError on a wrong length."""
    if values is None:
        return None
    tensor = torch.as_tensor(values, dtype=torch.float32).flatten()
    if tensor.numel() != length:
        raise ValueError(f"{what} needs {length} values, got {tensor.numel()}")
    if not bool(torch.all(torch.isfinite(tensor) & (tensor >= 0))):
        raise ValueError(f"{what} must be finite and >= 0, got {tensor.tolist()}")
    return tensor


def _no_presence(presence: torch.Tensor | None) -> None:
    if presence is not None:
        raise ValueError("the model gives presence logits (a gate) but the loss has no term "
                         "for them: build the loss with cls_weight")


def _on(weight: torch.Tensor | None, logits: torch.Tensor) -> torch.Tensor | None:
    """``weight`` on the device of ``logits``, so a loss works without its own ``.to(device)``."""
    return None if weight is None else weight.to(logits.device)


class SegmentationLoss(nn.Module):
    """``pixel_weight * pixel term + dice_weight * soft Dice`` for one head.

    The pixel term is CE (softmax, ``class_weights`` of background + 4), BCE (sigmoid,
    ``pos_weight`` per class), smp's focal loss (``gamma``; for the softmax head smp's
    "multiclass" focal is one-vs-rest: a sigmoid focal term on each of the 5 logit channels
    against its label, averaged, so it does not see the softmax that inference applies; for the
    sigmoid head the 4 channels as multilabel) or smp's Lovasz loss (Lovasz-softmax over the 5
    channels; the Lovasz hinge per image and class for the sigmoid head), or None.
    """

    def __init__(self, head: str, pixel: str | None, pixel_weight: float = 1.0,
                 dice_weight: float = 0.0,
                 class_weights: Sequence[float] | torch.Tensor | None = None,
                 pos_weight: Sequence[float] | torch.Tensor | None = None,
                 focal_gamma: float = 2.0) -> None:
        super().__init__()
        self.head, self.pixel = head, pixel
        self.pixel_weight, self.dice_weight = pixel_weight, dice_weight
        self.register_buffer("class_weights", _as_buffer(class_weights, N_CLASSES + 1,
                                                         "class_weights (background + 4)"))
        weight = _as_buffer(pos_weight, N_CLASSES, "pos_weight (one per class)")
        self.register_buffer("pos_weight", None if weight is None else weight.view(-1, 1, 1))
        mode = "multiclass" if head == "softmax" else "multilabel"
        self.focal = smp_losses.FocalLoss(mode, gamma=focal_gamma) if pixel == "focal" else None
        self.lovasz = None
        if pixel == "lovasz":
            self.lovasz = smp_losses.LovaszLoss("multiclass" if head == "softmax" else "binary",
                                                per_image=head == "sigmoid")

    def forward(self, logits: torch.Tensor, masks: torch.Tensor,
                presence: None = None) -> torch.Tensor:
        """Logits ``(N, 5 or 4, H, W)``, masks ``(N, 4, H, W)`` -> scalar loss."""
        _no_presence(presence)
        softmax = self.head == "softmax"
        _check_shapes(logits, masks, N_CLASSES + 1 if softmax else N_CLASSES)
        logits = logits.float()
        targets = label_map(masks) if softmax else masks.float()
        loss = logits.new_zeros(())
        if self.pixel is not None and self.pixel_weight:
            loss = loss + self.pixel_weight * self._pixel_term(logits, targets)
        if self.dice_weight:
            if softmax:
                probs = logits.softmax(dim=1)[:, 1:]
                class_ids = torch.arange(1, N_CLASSES + 1, device=targets.device)
                one_hot = (targets.unsqueeze(1) == class_ids.view(1, -1, 1, 1)).to(probs.dtype)
                loss = loss + self.dice_weight * soft_dice_loss(probs, one_hot)
            else:
                loss = loss + self.dice_weight * soft_dice_loss(logits.sigmoid(), targets)
        return loss

    def _pixel_term(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The pixel-wise term; ``targets``: labels ``(N, H, W)`` (softmax) or 0/1 masks."""
        if self.pixel == "ce":
            return F.cross_entropy(logits, targets, weight=_on(self.class_weights, logits))
        if self.pixel == "bce":
            return F.binary_cross_entropy_with_logits(logits, targets,
                                                      pos_weight=_on(self.pos_weight, logits))
        if self.pixel == "focal":
            return self.focal(logits, targets)
        if self.head == "softmax":
            return self.lovasz(logits, targets)
        return self.lovasz(logits.flatten(0, 1), targets.flatten(0, 1))   # per image and class


class GatedLoss(nn.Module):
    """``pixel loss + cls_weight * BCE(presence logits, image-level labels)``; the label of
    (image, class) is 1 when its mask has any pixel."""

    def __init__(self, pixel: nn.Module, cls_weight: float) -> None:
        super().__init__()
        self.pixel, self.cls_weight = pixel, cls_weight

    def forward(self, logits: torch.Tensor, masks: torch.Tensor,
                presence: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``(N, C_out, H, W)``, masks ``(N, 4, H, W)``, presence ``(N, 4)`` -> loss."""
        if presence is None:
            raise ValueError("the gated loss needs the model's presence logits: build the "
                             "model with a gate")
        present = masks.flatten(2).amax(dim=2).float()
        return self.pixel(logits, masks) + self.cls_weight * F.binary_cross_entropy_with_logits(
            presence.float(), present)


def build_loss(name: str, head: str = "softmax",
               class_weights: Sequence[float] | torch.Tensor | None = None,
               pos_weight: Sequence[float] | torch.Tensor | None = None,
               dice_weight: float | None = None, cls_weight: float | None = None,
               pixel_weight: float | None = None, focal_gamma: float = 2.0) -> nn.Module:
    """A registered loss for ``head``: ``loss(logits (N, C_out, H, W), masks (N, 4, H, W))``,
    and with ``cls_weight`` also ``presence`` logits ``(N, 4)`` of a gated model.

    ``class_weights`` (5 values, background first) weight the softmax CE; ``pos_weight``
    (4 values) weights the positives of the BCE; ``pixel_weight`` and ``dice_weight`` override
    the weights of the pixel-wise and the Dice term (e.g. 0.75 BCE + 0.25 Dice).
    """
    pixel = _pixel_loss(name, head, class_weights, pos_weight, dice_weight, pixel_weight,
                        focal_gamma)
    return pixel if cls_weight is None else GatedLoss(pixel, cls_weight)


def _pixel_loss(name: str, head: str, class_weights, pos_weight, dice_weight: float | None,
                pixel_weight: float | None, focal_gamma: float) -> nn.Module:
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid losses: {sorted(LOSSES)}")
    spec = LOSSES[name]
    if head not in spec.heads:
        pairs = ", ".join(f"{n} -> {'/'.join(s.heads)}" for n, s in LOSSES.items())
        raise ValueError(f"loss {name!r} needs the {' or '.join(spec.heads)} head, not "
                         f"{head!r}; valid (loss -> head) pairs: {pairs}")
    if dice_weight is not None and not spec.dice:
        raise ValueError(f"loss {name!r} has no Dice term to weight: use a +dice loss "
                         f"({_dice_losses(head)})")
    if pixel_weight is not None and spec.pixel is None:
        raise ValueError(f"loss {name!r} has no pixel-wise term to weight: use ce+dice")
    for weight, what in ((dice_weight, "dice_weight"), (pixel_weight, "pixel_weight")):
        if weight is not None and weight < 0:
            raise ValueError(f"{what} must be >= 0, got {weight}")
    if pos_weight is not None and spec.pixel != "bce":
        raise ValueError(f"pos_weight weights the BCE of the sigmoid head, not {name!r}: "
                         "use bce or bce+dice (for softmax CE: class_weights, 5 values)")
    if class_weights is not None and spec.pixel != "ce":
        raise ValueError(f"class_weights weight the softmax CE, not {name!r}: use ce or "
                         "ce+dice (for the sigmoid BCE: pos_weight, 4 values)")
    return SegmentationLoss(head, spec.pixel,
                            1.0 if pixel_weight is None else pixel_weight,
                            spec.dice if dice_weight is None else dice_weight,
                            class_weights, pos_weight, focal_gamma)


def _dice_losses(head: str) -> str:
    """The losses with a Dice term for ``head``, for an error message."""
    return ", ".join(n for n, s in LOSSES.items() if s.dice and head in s.heads)
