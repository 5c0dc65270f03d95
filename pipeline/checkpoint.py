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
    """Read a checkpoint dict safely (tensors and plain containers only); ValueError naming
    the file for anything but this pipeline's checkpoint dict (``model``, ``model_info``)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist: train first (`make train`)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # unpickling errors come in many types
        raise ValueError(f"checkpoint {path} cannot be read ({error}); it is corrupt or not "
                         "a checkpoint of this pipeline") from None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict) \
            or not isinstance(state.get("model_info"), dict):
        found = (f"a dict with keys {sorted(map(str, state))[:8]}" if isinstance(state, dict)
                 else f"a {type(state).__name__}")
        raise ValueError(f"{path} holds {found}, not a checkpoint of this pipeline (a dict with "
                         "'model' weights and 'model_info'): pass a best.pt or last.pt of a run")
    bad = non_finite(state["model"])
    if bad:
        raise ValueError(f"checkpoint {path}: weight {bad} holds NaN or infinite values (the "
                         "training diverged): retrain with a lower --lr")
    return state


def non_finite(weights: dict) -> str | None:
    """The name of the first floating-point tensor of ``weights`` with a NaN or infinite
    value, or None when every one is finite."""
    for name, tensor in weights.items():
        if torch.is_tensor(tensor) and tensor.is_floating_point() \
                and not bool(torch.isfinite(tensor).all()):
            return str(name)
    return None
