"""Segmentation losses: cross-entropy, BCE, smooth soft Dice, and their sums.

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
``pixel_weight * (CE or BCE) + dice_weight * Dice``, both weights 1 by default.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.config import N_CLASSES
from pipeline.data.labels import label_map

SMOOTH = 1.0

# name -> (head it needs, weight of the pixel-wise term (CE or BCE), weight of soft Dice)
LOSSES: dict[str, tuple[str, float, float]] = {
    "ce": ("softmax", 1.0, 0.0),
    "dice": ("softmax", 0.0, 1.0),
    "ce+dice": ("softmax", 1.0, 1.0),
    "bce": ("sigmoid", 1.0, 0.0),
    "bce+dice": ("sigmoid", 1.0, 1.0),
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
    return tensor


def _no_presence(presence: torch.Tensor | None) -> None:
    if presence is not None:
        raise ValueError("the model gives presence logits (a gate) but the loss has no term "
                         "for them: build the loss with cls_weight")


def _on(weight: torch.Tensor | None, logits: torch.Tensor) -> torch.Tensor | None:
    """``weight`` on the device of ``logits``, so a loss works without its own ``.to(device)``."""
    return None if weight is None else weight.to(logits.device)


class SoftmaxLoss(nn.Module):
    """``ce_weight * CE + dice_weight * soft Dice`` for 5-channel (background + 4) logits."""

    def __init__(self, ce_weight: float = 1.0, dice_weight: float = 0.0,
                 class_weights: Sequence[float] | torch.Tensor | None = None) -> None:
        super().__init__()
        self.ce_weight, self.dice_weight = ce_weight, dice_weight
        self.register_buffer("class_weights", _as_buffer(class_weights, N_CLASSES + 1,
                                                         "class_weights (background + 4)"))

    def forward(self, logits: torch.Tensor, masks: torch.Tensor,
                presence: None = None) -> torch.Tensor:
        """Logits ``(N, 5, H, W)``, masks ``(N, 4, H, W)`` -> scalar loss."""
        _no_presence(presence)
        _check_shapes(logits, masks, N_CLASSES + 1)
        logits, labels = logits.float(), label_map(masks)
        loss = logits.new_zeros(())
        if self.ce_weight:
            weight = _on(self.class_weights, logits)
            loss = loss + self.ce_weight * F.cross_entropy(logits, labels, weight=weight)
        if self.dice_weight:
            probs = logits.softmax(dim=1)[:, 1:]
            class_ids = torch.arange(1, N_CLASSES + 1, device=labels.device).view(1, -1, 1, 1)
            one_hot = (labels.unsqueeze(1) == class_ids).to(probs.dtype)  # (N, 4, H, W)
            loss = loss + self.dice_weight * soft_dice_loss(probs, one_hot)
        return loss


class SigmoidLoss(nn.Module):
    """``bce_weight * BCE + dice_weight * soft Dice`` for 4 independent class logits."""

    def __init__(self, bce_weight: float = 1.0, dice_weight: float = 0.0,
                 pos_weight: Sequence[float] | torch.Tensor | None = None) -> None:
        super().__init__()
        self.bce_weight, self.dice_weight = bce_weight, dice_weight
        weight = _as_buffer(pos_weight, N_CLASSES, "pos_weight (one per class)")
        self.register_buffer("pos_weight", None if weight is None else weight.view(-1, 1, 1))

    def forward(self, logits: torch.Tensor, masks: torch.Tensor,
                presence: None = None) -> torch.Tensor:
        """Logits ``(N, 4, H, W)``, masks ``(N, 4, H, W)`` -> scalar loss."""
        _no_presence(presence)
        _check_shapes(logits, masks, N_CLASSES)
        logits, targets = logits.float(), masks.float()
        loss = logits.new_zeros(())
        if self.bce_weight:
            loss = loss + self.bce_weight * F.binary_cross_entropy_with_logits(
                logits, targets, pos_weight=_on(self.pos_weight, logits))
        if self.dice_weight:
            loss = loss + self.dice_weight * soft_dice_loss(logits.sigmoid(), targets)
        return loss


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
               dice_weight: float | None = None, cls_weight: float | None = None) -> nn.Module:
    """A registered loss for ``head``: ``loss(logits (N, C_out, H, W), masks (N, 4, H, W))``,
    and with ``cls_weight`` also ``presence`` logits ``(N, 4)`` of a gated model.

    ``class_weights`` (5 values, background first) weight the softmax CE; ``pos_weight``
    (4 values) weights the positives of the BCE; ``dice_weight`` overrides the Dice term's weight.
    """
    pixel = _pixel_loss(name, head, class_weights, pos_weight, dice_weight)
    return pixel if cls_weight is None else GatedLoss(pixel, cls_weight)


def _pixel_loss(name: str, head: str, class_weights, pos_weight,
                dice_weight: float | None) -> nn.Module:
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid losses: {sorted(LOSSES)}")
    needed, pixel_weight, default_dice = LOSSES[name]
    if head != needed:
        pairs = ", ".join(f"{n} -> {h}" for n, (h, _, _) in LOSSES.items())
        raise ValueError(f"loss {name!r} needs the {needed} head, not {head!r}; "
                         f"valid (loss -> head) pairs: {pairs}")
    if dice_weight is not None and not default_dice:
        raise ValueError(f"loss {name!r} has no Dice term to weight: use {name}+dice")
    dice = default_dice if dice_weight is None else dice_weight
    if needed == "softmax":
        if pos_weight is not None:
            raise ValueError(f"pos_weight is for the sigmoid losses, not {name!r}: "
                             f"use class_weights (5 values)")
        return SoftmaxLoss(pixel_weight, dice, class_weights)
    if class_weights is not None:
        raise ValueError(f"class_weights are for the softmax losses, not {name!r}: "
                         f"use pos_weight (4 values)")
    return SigmoidLoss(pixel_weight, dice, pos_weight)
