"""Checkpoints: plain dicts written atomically, read back with ``weights_only=True``."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from pipeline import fileio


def save(path: Path, state: dict) -> None:
    """Write a checkpoint dict atomically (temp file + rename); an error names the file."""
    with fileio.atomic_path(path) as tmp:
        try:
            torch.save(state, tmp)
        except RuntimeError as error:   # torch's writer reports a short write as this
            raise OSError(f"cannot write {path}: {_reason(error)} (is the disk full? "
                          f"{fileio.free_space(path)} free)") from None


def _reason(error: Exception) -> str:
    """The gist of a torch error in one line (its messages run to paragraphs)."""
    text = str(error)
    if "WeightsUnpickler error:" in text:  # what weights_only refused, without the advice
        text = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation")[0]
    return " ".join(text.split()) or type(error).__name__


def load(path: Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint dict safely (tensors and plain containers only); ValueError naming
    the file for anything but this pipeline's checkpoint dict (``model``, ``model_info``)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist: train first (`make train`)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # unpickling errors come in many types
        raise ValueError(f"checkpoint {path} cannot be read ({_reason(error)}); it is "
                         "corrupt or not "
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


def digest(weights: dict) -> str:
    """A short digest (16 hex digits of SHA-256) of a state dict's tensors: names, dtypes,
    shapes and values. The same weights give the same digest in whatever file they are (a
    run's ``best.pt``, its weights-only copy staged for Kaggle); retrained weights another."""
    hashed = hashlib.sha256()
    for name in sorted(weights):
        tensor = weights[name]
        if not torch.is_tensor(tensor):
            continue
        tensor = tensor.detach().cpu().contiguous()
        hashed.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        hashed.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return hashed.hexdigest()[:16]


def trained_ids(state: dict) -> frozenset[str] | None:
    """The ids of the images a checkpoint was trained on (``trained_on``, recorded since
    checkpoints carry it), or None for an older checkpoint."""
    trained = state.get("trained_on")
    if not isinstance(trained, dict) or not isinstance(trained.get("image_ids"), list):
        return None
    return frozenset(map(str, trained["image_ids"]))
