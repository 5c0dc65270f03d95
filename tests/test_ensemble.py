"""An ensemble is rebuilt and fed from its checkpoints alone: each model at its own scale."""

import pytest
import torch

from pipeline import checkpoint
from pipeline.inference import predict
from pipeline.models.forward import forward_padded
from pipeline.models.registry import build_model, model_info


def save_model(path, scale: float, head: str = "softmax", seed: int = 0):
    torch.manual_seed(seed)
    model = build_model(head=head, background_prior=0.9, input_scale=scale).eval()
    checkpoint.save(path, {"model": model.state_dict(), "model_info": model_info(model).as_dict(),
                           "config": {"scale": 1.0}})   # a config that disagrees: not used
    return model


def record_inputs(ensemble) -> list:
    shapes = []
    for model in ensemble.models:
        model.register_forward_pre_hook(
            lambda module, args, seen=shapes: seen.append(tuple(args[0].shape[-2:])))
    return shapes


def test_each_model_is_fed_at_its_own_scale(tmp_path):
    save_model(tmp_path / "a.pt", 0.25)
    save_model(tmp_path / "b.pt", 0.5, seed=1)
    ensemble = predict.load_models([tmp_path / "a.pt", tmp_path / "b.pt"], torch.device("cpu"))
    assert [info.input_scale for info in ensemble.infos] == [0.25, 0.5]
    assert ensemble.input_scale == 0.5
    shapes = record_inputs(ensemble)
    probs, presence = predict.ensemble_probabilities(ensemble, torch.rand(2, 3, 128, 800),
                                                     tta="hflip")
    assert presence is None
    # 64x400 (scale 0.25) is padded to the stride, 64x416; 128x800 (scale 0.5) already fits.
    assert shapes == [(64, 416), (64, 416), (128, 800), (128, 800)]
    assert probs.shape == (2, 4, 256, 1600)


def test_mixed_scales_average_the_models_at_their_own_scales(tmp_path):
    small = save_model(tmp_path / "a.pt", 0.25)
    large = save_model(tmp_path / "b.pt", 0.5, seed=1)
    device = torch.device("cpu")
    images = torch.rand(1, 3, 128, 800)
    mixed, _ = predict.ensemble_probabilities(
        predict.load_models([tmp_path / "a.pt", tmp_path / "b.pt"], device), images)
    alone = []
    for model, inputs in ((small, torch.nn.functional.avg_pool2d(images, 2)), (large, images)):
        with torch.inference_mode():
            logits = torch.nn.functional.interpolate(forward_padded(model, inputs)[0],
                                                     size=(256, 1600),
                                                     mode="bilinear", align_corners=False)
        alone.append(logits.softmax(dim=1)[:, 1:])
    torch.testing.assert_close(mixed, (alone[0] + alone[1]) / 2, atol=1e-5, rtol=1e-4)


def test_models_of_different_heads_are_refused(tmp_path):
    save_model(tmp_path / "a.pt", 0.25)
    save_model(tmp_path / "b.pt", 0.25, head="sigmoid")
    with pytest.raises(ValueError, match="sigmoid with 4 outputs.*softmax with 5"):
        predict.load_models([tmp_path / "a.pt", tmp_path / "b.pt"], torch.device("cpu"))


def test_weights_of_another_architecture_name_the_file(tmp_path):
    save_model(tmp_path / "a.pt", 0.25)
    state = checkpoint.load(tmp_path / "a.pt")
    state["model"] = {k: v for k, v in state["model"].items() if not k.startswith("decoder")}
    checkpoint.save(tmp_path / "cut.pt", state)
    with pytest.raises(ValueError, match="cut.pt: the weights do not fit fcn32_vgg11"):
        predict.load_models([tmp_path / "cut.pt"], torch.device("cpu"))
