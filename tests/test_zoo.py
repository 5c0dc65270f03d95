"""The smp architectures: each builds, trains a step and predicts through the FCN32 path;
encoders and their weights (offline ImageNet, files) and the errors around them."""

import socket

import pytest
import torch

from pipeline import checkpoint
from pipeline.inference import predict
from pipeline.models import imagenet_lite, zoo
from pipeline.models.forward import forward_padded
from pipeline.models.losses import build_loss
from pipeline.models.registry import MODELS, ModelInfo, build_model, forward_flops, \
    model_info, rebuild

LITE = "tu-tf_efficientnet_lite0"


@pytest.mark.parametrize("name", sorted(zoo.ARCHITECTURES))
def test_every_architecture_trains_and_predicts_like_fcn32(name, tmp_path):
    torch.manual_seed(0)
    model = build_model(name, head="softmax", background_prior=0.95, input_scale=0.25)
    images, masks = torch.rand(2, 3, 64, 416), torch.rand(2, 4, 64, 416) > 0.9
    logits = model(images)
    assert logits.shape == (2, 5, 64, 416) and torch.isfinite(logits).all()
    build_loss("ce", "softmax")(logits, masks).backward()
    assert all(p.grad is not None for p in model.net.segmentation_head.parameters())
    path = tmp_path / "best.pt"
    checkpoint.save(path, {"model": model.state_dict(),
                           "model_info": model_info(model).as_dict()})
    ensemble = predict.load_models([path], torch.device("cpu"))
    assert ensemble.infos[0] == model_info(model)
    probs, _ = predict.ensemble_probabilities(ensemble, images, tta="hflip")
    assert probs.shape == (2, 4, 256, 1600)
    model.eval()
    with torch.inference_mode():
        expected = model(images).softmax(dim=1)[:, 1:]
    small = torch.nn.functional.interpolate(probs, size=(64, 416), mode="area")
    assert (small - expected).abs().mean() < 0.05   # flips and upsampling move it a little


def test_the_default_encoder_and_its_normalisation():
    info = model_info(build_model("unet"))
    assert info.encoder == LITE and info.mean == info.std == (0.5, 0.5, 0.5)
    info = model_info(build_model("fpn", encoder="resnet18"))
    assert info.encoder == "resnet18" and info.mean == (0.485, 0.456, 0.406)


def test_offline_imagenet_weights_reach_the_encoder():
    model = build_model("unet", encoder_weights="imagenet")
    reference = imagenet_lite.state_dict("tf_efficientnet_lite0")
    encoder = model.net.encoder.state_dict()
    assert len(encoder) > 250
    for key, tensor in encoder.items():
        assert torch.equal(tensor, reference[key[len("model."):]]), key
    assert model_info(model).encoder_weights == "imagenet"


def test_encoder_weights_from_a_file(tmp_path):
    source = build_model("unet", encoder_weights="imagenet")
    whole = tmp_path / "whole.pt"   # a whole smp model's state dict
    torch.save(source.net.state_dict(), whole)
    model = build_model("fpn", encoder_weights=whole)
    assert torch.equal(model.net.encoder.state_dict()["model.conv_stem.weight"],
                       source.net.encoder.state_dict()["model.conv_stem.weight"])
    other = tmp_path / "resnet18.pt"
    torch.save(build_model("unet", encoder="resnet18").net.encoder.state_dict(), other)
    with pytest.raises(ValueError, match="resnet18.pt do not fit the encoder: .*missing"):
        build_model("unet", encoder_weights=other)


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="unknown encoder 'resnet35'.*resnet34"):
        build_model("unet", encoder="resnet35")
    with pytest.raises(ValueError, match="unknown model 'segnet'.*fpn.*unet"):
        build_model("segnet")
    with pytest.raises(ValueError, match="vgg11 encoder only.*unet"):
        build_model("fcn32_vgg11", encoder="resnet34")


def test_imagenet_for_other_encoders_fails_fast_offline(monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("Name or service not known (test)")
    monkeypatch.setattr(socket, "create_connection", no_network)
    with pytest.raises(RuntimeError, match="ImageNet weights of resnet18 are not installed.*"
                                           "--encoder-weights PATH"):
        build_model("unet", encoder="resnet18", encoder_weights="imagenet")


def test_a_checkpoint_of_an_unknown_architecture(tmp_path):
    state = {"model": {}, "model_info": {"name": "segformer_b5", "head": "softmax",
                                         "n_outputs": 5}}
    with pytest.raises(ValueError, match="'segformer_b5' model, an architecture this version "
                                         "does not know"):
        ModelInfo.from_checkpoint(state, tmp_path / "x.pt")


def test_every_registered_model_has_a_flop_count():
    flops = {name: forward_flops(name=name) for name in MODELS}
    assert flops["unet"] < flops["fcn32_vgg11"] / 2   # EfficientNet-Lite0 is light
    assert all(value > 1e9 for value in flops.values())


def test_rebuild_restores_an_smp_model(tmp_path):
    model = build_model("fpn", head="sigmoid", input_scale=0.5).eval()
    state = {"model": model.state_dict(), "model_info": model_info(model).as_dict()}
    again = rebuild(state, tmp_path / "x.pt")
    images = torch.rand(1, 3, 64, 96)
    with torch.inference_mode():
        torch.testing.assert_close(again(images), model(images))


@pytest.mark.parametrize("name", ["fcn32_vgg11", "unet"])
def test_a_gated_model_returns_presence_logits_and_predicts_with_them(name, tmp_path):
    torch.manual_seed(0)
    model = build_model(name, gate=True, input_scale=0.25)
    logits, presence = model(torch.rand(2, 3, 64, 416))
    assert logits.shape == (2, 5, 64, 416) and presence.shape == (2, 4)
    assert model_info(model).gate
    path = tmp_path / "gated.pt"
    checkpoint.save(path, {"model": model.state_dict(),
                           "model_info": model_info(model).as_dict()})
    ensemble = predict.load_models([path, path], torch.device("cpu"))
    images = torch.rand(1, 3, 64, 400)
    probs, present = predict.ensemble_probabilities(ensemble, images, tta="hflip")
    model.eval()
    with torch.inference_mode():   # the mean over 2 models x 2 flips of the same sigmoid
        expected = (forward_padded(model, images)[1].sigmoid()
                    + forward_padded(model, images.flip(3))[1].sigmoid()) / 2
    torch.testing.assert_close(present, expected, atol=1e-6, rtol=1e-5)
    plain = tmp_path / "plain.pt"
    checkpoint.save(plain, {"model": build_model(name).state_dict(),
                            "model_info": model_info(build_model(name)).as_dict()})
    mixed = predict.load_models([path, plain], torch.device("cpu"))   # the gated one's only
    assert mixed.gated
    torch.testing.assert_close(predict.ensemble_probabilities(mixed, images, tta="hflip")[1],
                               expected, atol=1e-6, rtol=1e-5)
