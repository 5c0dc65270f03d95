"""Encoder weights: torchvision's ImageNet VGG11 (hub cache or download) or a state-dict file,
and the checks shared by every encoder (reachability offline, keys and shapes).

Offline, ``imagenet`` fails fast with the fix (attach the file and pass its path) instead of
hanging on a download.
"""

from __future__ import annotations

import os
import socket
import threading
import urllib.parse
from pathlib import Path

import torch
import torchvision
from torch import nn

# torchvision's ImageNet input statistics (per RGB channel), which most encoders' weights expect.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WEIGHTS_HINT = ("download vgg11-8a719046.pth on a machine with internet (or attach it to the "
                "Kaggle kernel as a dataset) and pass its path as --encoder-weights PATH")


def hub_cache_file(url: str) -> Path:
    """Where ``torch.hub`` caches ``url``: ``$TORCH_HOME/hub/checkpoints/<file name>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urllib.parse.urlparse(url).path).name


def check_reachable(url: str, timeout: float, missing: str, hint: str) -> None:
    """Raise RuntimeError (``missing``, why, ``hint``) unless ``url``'s host accepts a
    connection within ``timeout`` s."""
    parts = urllib.parse.urlparse(url)
    errors: list[BaseException] = []

    def connect() -> None:
        try:
            socket.create_connection((parts.hostname, parts.port or 443), timeout=timeout).close()
        except OSError as error:
            errors.append(error)

    # A thread, because DNS look-ups ignore socket timeouts and can hang offline.
    probe = threading.Thread(target=connect, daemon=True)
    probe.start()
    probe.join(timeout + 1.0)
    if probe.is_alive() or errors:
        reason = errors[0] if errors else f"no answer in {timeout:.0f} s"
        raise RuntimeError(f"{missing} and {parts.hostname} is unreachable ({reason}): {hint}")


def imagenet_state_dict(timeout: float = 10.0) -> dict[str, torch.Tensor]:
    """torchvision's ``VGG11_Weights.IMAGENET1K_V1`` state dict: hub cache, else a download."""
    weights = torchvision.models.VGG11_Weights.IMAGENET1K_V1
    if not hub_cache_file(weights.url).is_file():
        check_reachable(weights.url, timeout, "ImageNet VGG11 weights are not cached at "
                        f"{hub_cache_file(weights.url)}", WEIGHTS_HINT)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        return weights.get_state_dict(progress=False, map_location="cpu", weights_only=True)
    except Exception as error:  # any download or unpickling failure gets the same remedy
        raise RuntimeError(f"could not load ImageNet VGG11 weights ({error}): "
                           f"{WEIGHTS_HINT}") from error
    finally:
        socket.setdefaulttimeout(previous)


def file_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict saved at ``path`` (``torch.save(module.state_dict(), path)`` format)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"encoder weights file {path} does not exist: pass 'none', "
                                f"'imagenet' or the path of the encoder's state dict")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many types for a non-checkpoint file
        raise ValueError(f"encoder weights file {path} is not a torch state dict: "
                         f"{error}") from error
    if not isinstance(state, dict):
        raise ValueError(f"encoder weights file {path} holds a {type(state).__name__}, "
                         f"not a state dict")
    return state


def check_fit(module: nn.Module, state: dict[str, torch.Tensor], source: object,
              target: str, expected: str) -> None:
    """Raise ValueError naming missing, unexpected and wrong-shape keys unless ``state`` fits
    ``module`` exactly; ``target`` names the module, ``expected`` the file it should be."""
    wanted = module.state_dict()
    problems = {
        "missing": set(wanted) - set(state),
        "unexpected": set(state) - set(wanted),
        "wrong shape": {k for k in set(wanted) & set(state) if state[k].shape != wanted[k].shape},
    }
    if any(problems.values()):
        detail = "; ".join(f"{len(keys)} {what} (e.g. {min(keys)})"
                           for what, keys in problems.items() if keys)
        raise ValueError(f"encoder weights {source} do not fit {target}: {detail}; "
                         f"expected {expected}")


def load_encoder_weights(encoder: nn.Module, source: str | os.PathLike) -> None:
    """Copy the ``features.*`` tensors of a torchvision VGG state dict into ``encoder``."""
    if str(source) == "none":
        return
    state = imagenet_state_dict() if str(source) == "imagenet" else file_state_dict(source)
    features = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    check_fit(encoder, features, source, "torchvision vgg11.features",
              "a vgg11 state dict (features.0.weight, ...)")
    encoder.load_state_dict(features)
