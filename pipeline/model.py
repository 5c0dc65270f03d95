"""FCN32 on torchvision's VGG11 encoder, and a name -> builder registry.

Architecture of ``"fcn32_vgg11"`` (input ``(N, 3, H, W)`` in [0, 1], H and W multiples of 32):

- ImageNet normalisation inside the model: ``(x - mean) / std`` with ``mean``/``std`` registered
  as non-persistent buffers (constants, so they stay out of the state dict and checkpoints);
- encoder: ``torchvision.models.vgg11().features`` (8 conv3x3+ReLU, 5 max-pools), stride 32,
  512 channels;
- decoder: 5 stages of ``ConvTranspose2d(kernel 4, stride 2, padding 1, no bias)`` + BatchNorm2d
  + ReLU, channels 512 -> 256 -> 128 -> 64 -> 32 -> 32; each stage exactly doubles H and W
  (kernel 4 = 2 x stride, so every output pixel gets the same number of taps: no checkerboard);
- classifier: 1x1 Conv2d 32 -> ``n_outputs(head)`` (5 for softmax, 4 for sigmoid), with bias.

Output: logits ``(N, n_outputs, H, W)``. 132.4 GFLOP per 256x1600 image (``forward_flops()``).
The model runs in whatever memory format its weights are in: after
``model.to(memory_format=torch.channels_last)`` inputs are converted to channels-last inside
``forward``, which is 1.3-1.5x faster on CPU; ``torch.compile(model)`` is supported.
"""

from __future__ import annotations

import math
import os
import socket
import threading
import urllib.parse
from pathlib import Path
from typing import Callable

import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from pipeline.config import N_CLASSES

HEADS: dict[str, int] = {"softmax": N_CLASSES + 1, "sigmoid": N_CLASSES}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
STRIDE = 32
DECODER_CHANNELS = (512, 256, 128, 64, 32, 32)
WEIGHTS_HINT = ("download vgg11-8a719046.pth on a machine with internet (or attach it to the "
                "Kaggle kernel as a dataset) and pass its path as --encoder-weights PATH")


def n_outputs(head: str) -> int:
    """Output channels of a head: 5 for ``softmax`` (background + 4), 4 for ``sigmoid``."""
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; valid heads: {sorted(HEADS)}")
    return HEADS[head]


def hub_cache_file(url: str) -> Path:
    """Where ``torch.hub`` caches ``url``: ``$TORCH_HOME/hub/checkpoints/<file name>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urllib.parse.urlparse(url).path).name


def _check_reachable(url: str, timeout: float) -> None:
    """Raise RuntimeError unless ``url``'s host accepts a connection within ``timeout`` s."""
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
        raise RuntimeError(f"ImageNet VGG11 weights are not cached at {hub_cache_file(url)} and "
                           f"{parts.hostname} is unreachable ({reason}): {WEIGHTS_HINT}")


def imagenet_state_dict(timeout: float = 10.0) -> dict[str, torch.Tensor]:
    """torchvision's ``VGG11_Weights.IMAGENET1K_V1`` state dict: hub cache, else a download."""
    weights = torchvision.models.VGG11_Weights.IMAGENET1K_V1
    if not hub_cache_file(weights.url).is_file():
        _check_reachable(weights.url, timeout)
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
    """The state dict saved at ``path`` (``torch.save(vgg11().state_dict(), path)`` format)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"encoder weights file {path} does not exist: pass 'none', "
                                f"'imagenet' or the path of a torchvision vgg11 state dict")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many types for a non-checkpoint file
        raise ValueError(f"encoder weights file {path} is not a torch state dict: "
                         f"{error}") from error
    if not isinstance(state, dict):
        raise ValueError(f"encoder weights file {path} holds a {type(state).__name__}, "
                         f"not a state dict")
    return state


def load_encoder_weights(encoder: nn.Module, source: str | os.PathLike) -> None:
    """Copy the ``features.*`` tensors of a torchvision VGG state dict into ``encoder``."""
    if str(source) == "none":
        return
    state = imagenet_state_dict() if str(source) == "imagenet" else file_state_dict(source)
    features = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    expected = encoder.state_dict()
    problems = {
        "missing": set(expected) - set(features),
        "unexpected": set(features) - set(expected),
        "wrong shape": {k for k in set(expected) & set(features)
                        if features[k].shape != expected[k].shape},
    }
    if any(problems.values()):
        detail = "; ".join(f"{len(keys)} {what} (e.g. features.{min(keys)})"
                           for what, keys in problems.items() if keys)
        raise ValueError(f"encoder weights {source} do not fit torchvision vgg11.features: "
                         f"{detail}; expected a vgg11 state dict (features.0.weight, ...)")
    encoder.load_state_dict(features)


def _up_stage(in_channels: int, out_channels: int) -> nn.Sequential:
    """``(N, in, h, w)`` -> ``(N, out, 2h, 2w)``: transposed conv, BatchNorm, ReLU."""
    return nn.Sequential(
        nn.ConvTranspose2d(in_channels, out_channels, kernel_size=4, stride=2, padding=1,
                           bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class FCN32(nn.Module):
    """Encoder (stride 32) + 5 doubling decoder stages + 1x1 classifier; see the module doc."""

    def __init__(self, encoder: nn.Module, out_channels: int) -> None:
        super().__init__()
        for buffer, values in (("mean", IMAGENET_MEAN), ("std", IMAGENET_STD)):
            self.register_buffer(buffer, torch.tensor(values).view(1, 3, 1, 1), persistent=False)
        self.encoder = encoder
        pairs = zip(DECODER_CHANNELS[:-1], DECODER_CHANNELS[1:])
        self.decoder = nn.Sequential(*(_up_stage(a, b) for a, b in pairs))
        self.classifier = nn.Conv2d(DECODER_CHANNELS[-1], out_channels, kernel_size=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` float in [0, 1] -> logits ``(N, n_outputs, H, W)``."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images (N, 3, H, W), got {tuple(images.shape)}")
        height, width = images.shape[-2:]
        if height % STRIDE or width % STRIDE:
            raise ValueError(f"input {height}x{width} is not a multiple of {STRIDE}: "
                             f"crop or pad to {math.ceil(height / STRIDE) * STRIDE}x"
                             f"{math.ceil(width / STRIDE) * STRIDE}")
        if self.encoder[0].weight.is_contiguous(memory_format=torch.channels_last):
            images = images.contiguous(memory_format=torch.channels_last)
        x = (images - self.mean) / self.std
        return self.classifier(self.decoder(self.encoder(x)))


def set_background_prior(model: FCN32, head: str, prior: float) -> None:
    """Set the classifier bias so the initial per-pixel probability of background is ``prior``.

    softmax: bias = [log p, log((1-p)/4) x 4]; sigmoid: every class channel gets logit(1-p),
    i.e. each channel's probability of "not this class" is p. The classifier weights are
    redrawn from N(0, 0.01^2) so the random features barely move the probabilities off the prior.
    """
    if not 0.0 < prior < 1.0:
        raise ValueError(f"background_prior must be in (0, 1), got {prior}")
    classifier = model.classifier
    with torch.no_grad():
        nn.init.normal_(classifier.weight, std=0.01)
        if head == "softmax":
            classifier.bias[0] = math.log(prior)
            classifier.bias[1:] = math.log((1.0 - prior) / N_CLASSES)
        else:
            classifier.bias.fill_(math.log((1.0 - prior) / prior))


def vgg11_features() -> nn.Sequential:
    """``torchvision.models.vgg11().features`` with torchvision's init, on the default device.

    Built on meta and re-initialised as torchvision does (Kaiming-normal fan-out, zero bias),
    to skip allocating and initialising the unused 120M-parameter classifier (~1 s per build).
    """
    with torch.device("meta"):
        features = torchvision.models.vgg11(weights=None).features
    features = features.to_empty(device=torch.get_default_device())
    for module in features.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(module.bias)
    return features


def fcn32_vgg11(head: str = "softmax", encoder_weights: str | os.PathLike = "none") -> FCN32:
    """FCN32-VGG11 with ``n_outputs(head)`` output channels; see the module docstring."""
    encoder = vgg11_features()
    load_encoder_weights(encoder, encoder_weights)
    return FCN32(encoder, n_outputs(head))


MODELS: dict[str, Callable[..., FCN32]] = {"fcn32_vgg11": fcn32_vgg11}


def build_model(name: str = "fcn32_vgg11", head: str = "softmax",
                encoder_weights: str | os.PathLike = "none",
                background_prior: float | None = None) -> nn.Module:
    """A registered model mapping ``(N, 3, H, W)`` [0, 1] to logits ``(N, n_outputs(head), H, W)``.

    ``encoder_weights``: "none" (random), "imagenet" (torchvision's IMAGENET1K_V1, from the
    torch hub cache or a download) or the path of a torchvision ``vgg11`` state dict.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid models: {sorted(MODELS)}")
    n_outputs(head)
    model = MODELS[name](head=head, encoder_weights=encoder_weights)
    if background_prior is not None:
        set_background_prior(model, head, background_prior)
    model.model_name, model.head, model.n_outputs = name, head, n_outputs(head)
    model.encoder_weights = str(encoder_weights)
    return model


def model_info(model: nn.Module) -> dict:
    """``{name, head, n_outputs, n_classes, encoder_weights}`` of a built (or compiled) model."""
    model = getattr(model, "_orig_mod", model)
    return {"name": model.model_name, "head": model.head, "n_outputs": model.n_outputs,
            "n_classes": N_CLASSES, "encoder_weights": model.encoder_weights}


def forward_flops(height: int = 256, width: int = 1600, name: str = "fcn32_vgg11",
                  head: str = "softmax") -> int:
    """FLOPs (2 per multiply-add) of one ``(1, 3, height, width)`` forward, counted on meta."""
    with torch.device("meta"):
        model = MODELS[name](head=head)
        images = torch.empty(1, 3, height, width)
    with FlopCounterMode(display=False) as counter:
        model(images)
    return int(counter.get_total_flops())
