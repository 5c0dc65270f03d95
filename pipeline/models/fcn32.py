"""FCN32 on torchvision's VGG11 encoder (the seed's model).

Architecture of ``"fcn32_vgg11"`` (input ``(N, 3, H, W)`` in [0, 1], H and W multiples of 32):

- ImageNet normalisation inside the model: ``(x - mean) / std`` with ``mean``/``std`` registered
  as non-persistent buffers (constants, so they stay out of the state dict and checkpoints);
- encoder: ``torchvision.models.vgg11().features`` (8 conv3x3+ReLU, 5 max-pools), stride 32,
  512 channels;
- decoder: 5 stages of ``ConvTranspose2d(kernel 4, stride 2, padding 1, no bias)`` + BatchNorm2d
  + ReLU, channels 512 -> 256 -> 128 -> 64 -> 32 -> 32; each stage exactly doubles H and W
  (kernel 4 = 2 x stride, so every output pixel gets the same number of taps: no checkerboard);
- classifier: 1x1 Conv2d 32 -> ``n_outputs`` (5 for softmax, 4 for sigmoid), with bias.

Output: logits ``(N, n_outputs, H, W)``, 132.4 GFLOP per 256x1600 image. The model runs in
whatever memory format its weights are in: after ``model.to(memory_format=torch.channels_last)``
inputs are converted to channels-last inside ``forward``, which is 1.3-1.5x faster on CPU;
``torch.compile(model)`` is supported.
"""

from __future__ import annotations

import os

import torch
import torchvision
from torch import nn

from pipeline.models.encoders import IMAGENET_MEAN, IMAGENET_STD, load_encoder_weights
from pipeline.models.forward import check_input

STRIDE = 32
DECODER_CHANNELS = (512, 256, 128, 64, 32, 32)


def _up_stage(in_channels: int, out_channels: int) -> nn.Sequential:
    """``(N, in, h, w)`` -> ``(N, out, 2h, 2w)``: transposed conv, BatchNorm, ReLU."""
    return nn.Sequential(
        nn.ConvTranspose2d(in_channels, out_channels, kernel_size=4, stride=2, padding=1,
                           bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class FCN32(nn.Module):
    """Encoder (stride 32) + 5 doubling decoder stages + 1x1 classifier; see the module doc.

    With ``gate`` classes, a presence head (global average pool of the encoder's 512 channels,
    then a linear layer) also gives per-class "defect present" logits ``(N, gate)``.
    """

    def __init__(self, encoder: nn.Module, out_channels: int, gate: int = 0) -> None:
        super().__init__()
        self.input_mean, self.input_std = IMAGENET_MEAN, IMAGENET_STD
        for buffer, values in (("mean", IMAGENET_MEAN), ("std", IMAGENET_STD)):
            self.register_buffer(buffer, torch.tensor(values).view(1, 3, 1, 1), persistent=False)
        self.encoder = encoder
        pairs = zip(DECODER_CHANNELS[:-1], DECODER_CHANNELS[1:])
        self.decoder = nn.Sequential(*(_up_stage(a, b) for a, b in pairs))
        self.classifier = nn.Conv2d(DECODER_CHANNELS[-1], out_channels, kernel_size=1)
        self.presence = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                      nn.Linear(DECODER_CHANNELS[0], gate)) if gate else None

    def forward(self, images: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``(N, 3, H, W)`` float in [0, 1] -> logits ``(N, n_outputs, H, W)``, and with a gate
        also presence logits ``(N, gate)``."""
        check_input(images, STRIDE)
        if self.encoder[0].weight.is_contiguous(memory_format=torch.channels_last):
            images = images.contiguous(memory_format=torch.channels_last)
        features = self.encoder((images - self.mean) / self.std)
        logits = self.classifier(self.decoder(features))
        return logits if self.presence is None else (logits, self.presence(features))


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


def fcn32_vgg11(n_outputs: int, encoder_weights: str | os.PathLike = "none",
                gate: int = 0) -> FCN32:
    """FCN32-VGG11 with ``n_outputs`` output channels (and a ``gate``-class presence head)."""
    encoder = vgg11_features()
    load_encoder_weights(encoder, encoder_weights)
    return FCN32(encoder, n_outputs, gate)
