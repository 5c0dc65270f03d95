"""Running a model: one precision policy, padding to the stride, resizing and probabilities.

Precision (``amp``) is decided here for training, CV, predict and the kernel alike:
``auto`` is bf16 on a CUDA device with native bf16 (compute capability 8.0 and newer: A100,
H100, L4) and fp16 on older ones (T4, P100: Kaggle's GPUs), and full precision on the CPU;
``none`` is always full precision; ``bf16``/``fp16`` force that type on CUDA.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import torch.nn.functional as F


AMP_MODES = ("auto", "none", "bf16", "fp16")


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``amp`` on ``device``, or None for full precision."""
    if amp not in AMP_MODES:
        raise ValueError(f"--amp {amp!r} is not valid; valid values: {', '.join(AMP_MODES)}")
    if device.type != "cuda" or amp == "none":
        return None
    if amp == "auto":
        fast_bf16 = torch.cuda.get_device_capability(device)[0] >= 8
        return torch.bfloat16 if fast_bf16 else torch.float16
    return torch.bfloat16 if amp == "bf16" else torch.float16


def autocast(amp: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast context of ``amp`` on ``device`` (nothing for full precision)."""
    dtype = amp_dtype(amp, device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def compile_for_inference(model: torch.nn.Module) -> Callable[..., object]:
    """``torch.compile`` of an eval-mode model for inference: static shapes, and "freezing"
    (weights become constants: BatchNorm folded into convolutions, weights prepacked for
    oneDNN on the CPU). The model compiles at its first call, in ``torch.inference_mode``.
    A ``torch.export`` program (a zoo model in the kernel) was traced in eval mode and refuses
    ``.eval()``: it is compiled as it is."""
    try:
        model = model.eval()
    except NotImplementedError:   # "Calling eval() is not supported yet" (exported program)
        pass
    return torch.compile(model, dynamic=False, options={"freezing": True})


def check_input(images: torch.Tensor, stride: int) -> None:
    """ValueError with the fix unless ``images`` is ``(N, 3, H, W)`` with H, W multiples of
    ``stride``."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images (N, 3, H, W), got {tuple(images.shape)}")
    height, width = images.shape[-2:]
    if height % stride or width % stride:
        raise ValueError(f"input {height}x{width} is not a multiple of {stride}: crop or pad "
                         f"to {-(-height // stride) * stride}x{-(-width // stride) * stride}")


def forward_padded(model: torch.nn.Module, images: torch.Tensor,
                   stride: int = 32) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(logits (N, C, H, W), presence logits (N, 4) or None)`` of images of any size:
    replicate-pad H, W up to a multiple of stride, run the model, crop the logits back."""
    height, width = images.shape[-2:]
    pad_h, pad_w = -height % stride, -width % stride
    if pad_h or pad_w:
        images = F.pad(images, (0, pad_w, 0, pad_h), mode="replicate")
    output = model(images)
    logits, presence = output if isinstance(output, tuple) else (output, None)
    return logits[..., :height, :width], presence


def upsample(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``(N, C, h, w)`` logits to ``size``; identity at the same size."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    # A channels-last model gives channels-last logits; the upsampled copy in the standard
    # layout makes the softmax over classes that follows 2x faster on the CPU.
    return F.interpolate(logits.float().contiguous(), size=size, mode="bilinear",
                         align_corners=False)


def probabilities(logits: torch.Tensor, head: str) -> torch.Tensor:
    """``(N, 4, H, W)`` per-class probabilities from ``(N, 5|4, H, W)`` logits."""
    if head == "softmax":
        return logits.float().contiguous().softmax(dim=1)[:, 1:]
    if head == "sigmoid":
        return logits.float().sigmoid()
    raise ValueError(f"unknown head {head!r}; valid heads are 'softmax' and 'sigmoid'")


def argmax_labels(probs: torch.Tensor) -> torch.Tensor:
    """``(N, H, W)`` int64 argmax over background + 4 classes (background = 1 - sum of classes)."""
    best, index = probs.max(dim=1)
    return torch.where(best > 1.0 - probs.sum(dim=1), index + 1, 0)


def default_masks(probs: torch.Tensor, head: str,
                  presence: torch.Tensor | None = None) -> torch.Tensor:
    """``(N, 4, H, W)`` bool masks of the model's own decision: the argmax over background and
    the classes (softmax) or ``p > 0.5`` per class (sigmoid), and with presence logits
    ``(N, 4)`` only the classes the gate calls present (logit > 0); no tuned post-processing."""
    if head == "sigmoid":
        masks = probs > 0.5
    else:
        class_ids = torch.arange(1, probs.shape[1] + 1, device=probs.device).view(1, -1, 1, 1)
        masks = argmax_labels(probs).unsqueeze(1) == class_ids
    return masks if presence is None else masks & (presence > 0)[:, :, None, None]
