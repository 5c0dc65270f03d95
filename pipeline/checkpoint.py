"""Checkpoints: plain dicts written atomically, read back with ``weights_only=True``."""

from __future__ import annotations

from pathlib import Path

import torch

from pipeline import fileio


def save(path: Path, state: dict) -> None:
    """Write a checkpoint dict atomically (temp file + rename)."""
    with fileio.atomic_path(path) as tmp:
        torch.save(state, tmp)


def load(path: Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint dict safely (tensors and plain containers only)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist: train first (`make train`)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # unpickling errors come in many types
        raise ValueError(f"checkpoint {path} cannot be read ({error}); it is corrupt or not "
                         "a checkpoint of this pipeline") from None
