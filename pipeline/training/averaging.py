"""Averaged weights: an exponential moving average kept during training (torch's
``AveragedModel``), and the mean of the top-k validated checkpoints of a fold."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from pipeline import checkpoint


def ema_model(model: torch.nn.Module, decay: float) -> AveragedModel:
    """An EMA of ``model``'s parameters and buffers: its first update copies the weights,
    each later one takes ``decay * average + (1 - decay) * weights``."""
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def average_states(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The element-wise mean of state dicts with the same keys and shapes; integer tensors
    (e.g. BatchNorm's batch counters) are taken from the first."""
    if not states:
        raise ValueError("nothing to average: no checkpoint was given")
    keys = list(states[0])
    for index, state in enumerate(states[1:], 1):
        if list(state) != keys or any(state[k].shape != states[0][k].shape for k in keys):
            raise ValueError(f"checkpoint {index} has other weights than checkpoint 0: only "
                             "checkpoints of one model can be averaged")
    averaged = {}
    for key in keys:
        first = states[0][key]
        if first.is_floating_point():
            # in float64: the mean of identical float32 weights is exactly those weights
            averaged[key] = torch.stack([s[key].double() for s in states]).mean(0).to(first.dtype)
        else:
            averaged[key] = first.clone()
    return averaged


def top_path(fold_dir: Path, epoch: int) -> Path:
    """Where the validated weights of one epoch are kept while it is among the top k."""
    return Path(fold_dir) / "top" / f"epoch{epoch}.pt"


def save_top(fold_dir: Path, epoch: int, weights: dict, top: list[int]) -> None:
    """Save ``epoch``'s weights if it is in ``top`` (before the epoch's commit point)."""
    if epoch in top:
        checkpoint.save(top_path(fold_dir, epoch), {"model": weights, "epoch": epoch})


def prune_top(fold_dir: Path, top: list[int]) -> None:
    """Remove the kept weights of epochs no longer in ``top``: only after the epoch that
    displaced them was committed, so that a kill before its commit loses nothing a resume
    needs. Files of other names are left alone."""
    folder = Path(fold_dir) / "top"
    for path in folder.glob("epoch*.pt") if folder.is_dir() else ():
        number = re.fullmatch(r"epoch(\d+)", path.stem)
        if number and int(number.group(1)) not in top:
            path.unlink()


def load_top(fold_dir: Path, top: list[int]) -> list[dict]:
    """The kept weights of the epochs in ``top``; an error names a missing or unreadable
    file."""
    missing = [top_path(fold_dir, e) for e in top if not top_path(fold_dir, e).is_file()]
    if missing:
        raise FileNotFoundError(f"{missing[0]} is missing: the top-k weights of this fold are "
                                "incomplete; train the fold again without --resume")
    states = []
    for epoch in top:
        path = top_path(fold_dir, epoch)
        try:
            states.append(torch.load(path, map_location="cpu", weights_only=True)["model"])
        except Exception as error:  # unpickling errors come in many types
            first_line = (str(error).strip().splitlines() or [""])[0]
            raise ValueError(f"{path} cannot be read ({type(error).__name__}: {first_line}): "
                             "the top-k weights of this fold are damaged; train the fold again "
                             "without --resume") from None
    return states
