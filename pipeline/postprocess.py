"""Model outputs -> class probabilities -> binary class masks."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def probabilities(logits: torch.Tensor, head: str) -> torch.Tensor:
    """``(N, 4, H, W)`` per-class probabilities from ``(N, 5|4, H, W)`` logits."""
    if head == "softmax":
        return logits.float().softmax(dim=1)[:, 1:]
    if head == "sigmoid":
        return logits.float().sigmoid()
    raise ValueError(f"unknown head {head!r}; valid heads are 'softmax' and 'sigmoid'")


def upsample(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``(N, C, h, w)`` logits to ``size``; identity at the same size."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False)


def default_masks(logits: torch.Tensor, head: str) -> torch.Tensor:
    """``(N, 4, H, W)`` bool masks at default thresholds: argmax (softmax) or p > 0.5 (sigmoid)."""
    if head == "softmax":
        labels = logits.argmax(dim=1, keepdim=True)
        classes = torch.arange(1, logits.shape[1], device=logits.device).view(1, -1, 1, 1)
        return labels == classes
    return probabilities(logits, head) > 0.5


def pair_counts(pred: torch.Tensor, truth: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``(intersection, pred_area, true_area)`` ``(N, 4)`` int64 of bool ``(N, 4, H, W)`` masks."""
    truth = truth.bool()
    return ((pred & truth).sum(dim=(2, 3)), pred.sum(dim=(2, 3)), truth.sum(dim=(2, 3)))


def forward_padded(model: torch.nn.Module, images: torch.Tensor, stride: int = 32) -> torch.Tensor:
    """Logits of images of any size: replicate-pad H, W up to a multiple of stride, then crop."""
    height, width = images.shape[-2:]
    pad_h, pad_w = -height % stride, -width % stride
    if pad_h or pad_w:
        images = F.pad(images, (0, pad_w, 0, pad_h), mode="replicate")
    return model(images)[..., :height, :width]
