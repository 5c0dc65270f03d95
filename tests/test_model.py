"""FCN32-VGG11: shapes, heads, errors, the background prior and encoder-weight loading."""

import socket
import time

import pytest
import torch
import torchvision

from pipeline import model as model_module
from pipeline.model import HEADS, MODELS, build_model, forward_flops, model_info, n_outputs


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
    assert HEADS == {"softmax": 5, "sigmoid": 4}
    assert model_info(models["sigmoid"]) == {
        "name": "fcn32_vgg11", "head": "sigmoid", "n_outputs": 4, "n_classes": 4,
        "encoder_weights": "none"}
    assert model_info(torch.compile(models["softmax"]))["head"] == "softmax"


def test_wrong_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="fcn32_vgg11"):
        build_model("unet_resnet34")
    with pytest.raises(ValueError, match="sigmoid.*softmax"):
        build_model(head="logits")
    assert sorted(MODELS) == ["fcn32_vgg11"]


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
    assert model_info(model)["encoder_weights"] == str(path)


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
    with pytest.raises(ValueError, match="bn.pth.*vgg11.features"):
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
        model_module._check_reachable("https://127.0.0.1:9/vgg11-8a719046.pth", timeout=2.0)
    assert time.perf_counter() - start < 5


def _no_network(*args, **kwargs):
    """Stand-in for ``socket.create_connection``, so machines with internet also test offline."""
    raise OSError("Name or service not known (test)")


def test_hub_cache_file_follows_torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    url = torchvision.models.VGG11_Weights.IMAGENET1K_V1.url
    assert model_module.hub_cache_file(url) == tmp_path / "hub/checkpoints/vgg11-8a719046.pth"


def test_forward_flops():
    assert forward_flops() == pytest.approx(132.4e9, rel=1e-3)
    assert forward_flops(32, 32) == pytest.approx(forward_flops() * 1024 / 409600, rel=1e-6)


def test_encoder_init_matches_torchvision():
    torch.manual_seed(0)
    last_conv = build_model().encoder[-3]
    assert last_conv.weight.std().item() == pytest.approx((2 / (512 * 9)) ** 0.5, rel=0.02)
    assert not last_conv.bias.any()
