"""The registry and FCN32-VGG11: shapes, heads, model info, errors, the background prior and
encoder-weight loading."""

import socket
import time
import dataclasses

import pytest
import torch
import torchvision

from pipeline import settings
from pipeline.models import encoders
from pipeline.models.registry import HEADS, MODELS, ModelInfo, build_model, forward_flops, \
    model_info, n_outputs, rebuild
from pipeline.training.config import TrainConfig


@pytest.fixture(scope="module")
def models() -> dict:
    torch.manual_seed(0)
    return {head: build_model(head=head) for head in HEADS}


@pytest.mark.parametrize("head", sorted(HEADS))
@pytest.mark.parametrize("size", [(64, 96), (32, 32)])
def test_output_shape_and_finite(models, head, size):
    images = torch.rand(2, 3, *size)
    with torch.no_grad():
        logits = models[head](images)
    assert logits.shape == (2, n_outputs(head), *size)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


def test_heads_and_info(models):
    info = model_info(models["sigmoid"])
    assert (info.name, info.head, info.n_outputs, info.input_scale) == (
        "fcn32_vgg11", "sigmoid", 4, 1.0)
    assert info.mean == (0.485, 0.456, 0.406) and info.stride == 32
    torch.testing.assert_close(models["sigmoid"].mean.flatten(), torch.tensor(info.mean))
    assert model_info(torch.compile(models["softmax"])).head == "softmax"
    assert model_info(build_model(input_scale=0.25)).input_scale == 0.25


def test_registries_are_the_config_choices():
    """The flags' choices are the registries' names, in registry order."""
    choices = {f.name: settings.field_choices(f) for f in dataclasses.fields(TrainConfig)}
    assert choices["model"] == tuple(MODELS) and choices["head"] == tuple(HEADS)


def test_info_round_trips_through_a_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = build_model(head="sigmoid", input_scale=0.5).eval()
    path = tmp_path / "best.pt"
    torch.save({"model": model.state_dict(), "model_info": model_info(model).as_dict()}, path)
    state = torch.load(path, weights_only=True)
    again = rebuild(state, path)
    assert model_info(again) == model_info(model)
    images = torch.rand(1, 3, 32, 64)
    with torch.inference_mode():
        torch.testing.assert_close(again(images), model(images))


def test_an_old_checkpoint_takes_scale_from_its_config(tmp_path):
    model = build_model()
    old_info = {"name": "fcn32_vgg11", "head": "softmax", "n_outputs": 5, "n_classes": 4,
                "encoder_weights": "none"}
    state = {"model": model.state_dict(), "model_info": old_info, "config": {"scale": 0.25}}
    info = ModelInfo.from_checkpoint(state, tmp_path / "old.pt")
    assert info.input_scale == 0.25 and info.std == (0.229, 0.224, 0.225)
    with pytest.raises(ValueError, match="5 outputs does not match.*sigmoid"):
        ModelInfo.from_checkpoint({**state, "model_info": {**old_info, "head": "sigmoid"}},
                                  tmp_path / "old.pt")
    with pytest.raises(ValueError, match="not a checkpoint of this pipeline"):
        ModelInfo.from_checkpoint({"model": {}}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="model_info lacks head, n_outputs"):
        ModelInfo.from_checkpoint({"model": {}, "model_info": {"name": "unet"}}, tmp_path / "y.pt")


def test_wrong_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="fcn32_vgg11"):
        build_model("unet_resnet34")
    with pytest.raises(ValueError, match="sigmoid.*softmax"):
        build_model(head="logits")


@pytest.mark.parametrize("size, fix", [((250, 1600), "256x1600"), ((64, 100), "64x128")])
def test_size_not_multiple_of_32(models, size, fix):
    with pytest.raises(ValueError, match=f"{size[0]}x{size[1]} is not a multiple of 32.*{fix}"):
        models["softmax"](torch.rand(1, 3, *size))


def test_channels_last_keeps_the_math():
    torch.manual_seed(0)
    model = build_model().eval()
    images = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        expected = model(images)
        model.to(memory_format=torch.channels_last)
        logits = model(images)
    assert logits.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)


def test_normalisation_buffers_stay_out_of_state_dict(models):
    keys = models["softmax"].state_dict().keys()
    assert "mean" not in keys and "std" not in keys
    assert "encoder.0.weight" in keys and "classifier.bias" in keys


@pytest.mark.parametrize("head", sorted(HEADS))
def test_background_prior_sets_initial_probabilities(head):
    torch.manual_seed(0)
    model = build_model(head=head, background_prior=0.97)
    with torch.no_grad():
        logits = model(torch.rand(2, 3, 64, 96))
    if head == "softmax":
        mean = logits.softmax(dim=1).mean(dim=(0, 2, 3))
        expected = torch.tensor([0.97] + [0.03 / 4] * 4)
    else:
        mean = logits.sigmoid().mean(dim=(0, 2, 3))
        expected = torch.full((4,), 0.03)
    torch.testing.assert_close(mean, expected, rtol=0.1, atol=1e-3)


def test_background_prior_out_of_range():
    with pytest.raises(ValueError, match="background_prior"):
        build_model(background_prior=1.0)


def _vgg_state_dict(batch_norm: bool = False) -> dict:
    """A state dict in torchvision's VGG format; the classifier cut to one tensor (small file)."""
    features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["A"], batch_norm)
    state = {f"features.{key}": value for key, value in features.state_dict().items()}
    return {**state, "classifier.6.bias": torch.zeros(1000)}


def test_local_weights_round_trip(tmp_path):
    state = _vgg_state_dict()
    path = tmp_path / "vgg11.pth"
    torch.save(state, path)
    model = build_model(encoder_weights=path)
    encoder = model.encoder.state_dict()
    for key, tensor in state.items():
        if key.startswith("features."):
            assert torch.equal(encoder[key[len("features."):]], tensor), key
    assert model_info(model).encoder_weights == str(path)


def test_torchvision_vgg11_keys_fit():
    with torch.device("meta"):
        keys = torchvision.models.vgg11().state_dict().keys()
    assert {key for key in keys if key.startswith("features.")} == set(_vgg_state_dict()) - {
        "classifier.6.bias"}


def test_missing_weights_file(tmp_path):
    path = tmp_path / "absent.pth"
    with pytest.raises(FileNotFoundError, match="absent.pth"):
        build_model(encoder_weights=path)


def test_wrong_keys_name_the_file(tmp_path):
    path = tmp_path / "bn.pth"
    torch.save(_vgg_state_dict(batch_norm=True), path)
    with pytest.raises(ValueError, match="bn.pth do not fit torchvision vgg11.features.*missing"):
        build_model(encoder_weights=path)


def test_not_a_checkpoint_names_the_file(tmp_path):
    path = tmp_path / "junk.pth"
    path.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="junk.pth"):
        build_model(encoder_weights=str(path))


def test_imagenet_offline_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(socket, "create_connection", _no_network)
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match="--encoder-weights PATH"):
        build_model(encoder_weights="imagenet")
    assert time.perf_counter() - start < 20


def test_imagenet_probe_without_network_is_bounded(tmp_path, monkeypatch):
    """The real reachability probe, against an address nothing answers on, in bounded time."""
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match="--encoder-weights PATH"):
        encoders.check_reachable("https://127.0.0.1:9/vgg11-8a719046.pth", 2.0, "weights",
                                 "pass --encoder-weights PATH")
    assert time.perf_counter() - start < 5


def _no_network(*args, **kwargs):
    """Stand-in for ``socket.create_connection``, so machines with internet also test offline."""
    raise OSError("Name or service not known (test)")


def test_hub_cache_file_follows_torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    url = torchvision.models.VGG11_Weights.IMAGENET1K_V1.url
    assert encoders.hub_cache_file(url) == tmp_path / "hub/checkpoints/vgg11-8a719046.pth"


def test_forward_flops_match_a_hand_count_of_the_layers():
    """2 FLOPs per multiply-add: VGG11's 3x3 convolutions (output size), the 4x4 transposed
    convolutions (input size) and the 1x1 classifier; pooling, BN and ReLU count nothing."""
    height, width = 256, 1600
    convs = [(3, 64, 1), (64, 128, 2), (128, 256, 4), (256, 256, 4), (256, 512, 8),
             (512, 512, 8), (512, 512, 16), (512, 512, 16)]     # (in, out, stride of output)
    encoder = sum(2 * c_in * c_out * 9 * (height // s) * (width // s) for c_in, c_out, s in convs)
    ups = [(512, 256, 32), (256, 128, 16), (128, 64, 8), (64, 32, 4), (32, 32, 2)]
    decoder = sum(2 * c_in * c_out * 16 * (height // s) * (width // s) for c_in, c_out, s in ups)
    classifier = 2 * 32 * 5 * height * width
    assert forward_flops() == encoder + decoder + classifier
    assert forward_flops(head="sigmoid") == encoder + decoder + classifier * 4 // 5


def test_encoder_init_matches_torchvision():
    torch.manual_seed(0)
    last_conv = build_model().encoder[-3]
    assert last_conv.weight.std().item() == pytest.approx((2 / (512 * 9)) ** 0.5, rel=0.02)
    assert not last_conv.bias.any()
