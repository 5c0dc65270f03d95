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


def alone(model, images):
    """A model's own per-class probabilities and presence, converted by hand."""
    with torch.inference_mode():
        logits, presence = forward_padded(model, images)
        logits = torch.nn.functional.interpolate(logits, size=(256, 1600), mode="bilinear",
                                                 align_corners=False)
    probs = logits.softmax(dim=1)[:, 1:] if logits.shape[1] == 5 else logits.sigmoid()
    return probs, None if presence is None else presence.sigmoid()


def test_mixed_heads_and_gates_combine_as_weighted_per_class_probabilities(tmp_path):
    """softmax + sigmoid models average their per-class probabilities with the weights; the
    presence is the weighted mean over the gated models only."""
    models = []
    for i, (head, gate) in enumerate((("softmax", True), ("sigmoid", False), ("sigmoid", True))):
        torch.manual_seed(i)
        model = build_model(head=head, background_prior=0.9, input_scale=0.25, gate=gate).eval()
        checkpoint.save(tmp_path / f"{i}.pt", {"model": model.state_dict(),
                                               "model_info": model_info(model).as_dict()})
        models.append(model)
    weights = [2.0, 1.0, 0.5]
    ensemble = predict.load_models([tmp_path / f"{i}.pt" for i in range(3)],
                                   torch.device("cpu"), weights=weights)
    assert ensemble.head == "sigmoid" and ensemble.gated
    images = torch.rand(2, 3, 64, 400)
    probs, presence = predict.ensemble_probabilities(ensemble, images)
    by_hand = [alone(model, images) for model in models]
    expected = sum(w * p for w, (p, _) in zip(weights, by_hand)) / sum(weights)
    torch.testing.assert_close(probs, expected, atol=1e-5, rtol=1e-4)
    gated = (2.0 * by_hand[0][1] + 0.5 * by_hand[2][1]) / 2.5
    torch.testing.assert_close(presence, gated, atol=1e-6, rtol=1e-5)
    # the conversion differs per head: the softmax model's are not sigmoid(logits)
    assert not torch.allclose(by_hand[0][0], by_hand[1][0], atol=1e-3)


def test_bad_ensemble_weights_are_refused(tmp_path):
    save_model(tmp_path / "a.pt", 0.25)
    for weights in ([0.0], [-1.0], [1.0, 1.0]):
        with pytest.raises(ValueError, match="one weight >= 0 per checkpoint"):
            predict.load_models([tmp_path / "a.pt"], torch.device("cpu"), weights=weights)


def test_weights_of_another_architecture_name_the_file(tmp_path):
    save_model(tmp_path / "a.pt", 0.25)
    state = checkpoint.load(tmp_path / "a.pt")
    state["model"] = {k: v for k, v in state["model"].items() if not k.startswith("decoder")}
    checkpoint.save(tmp_path / "cut.pt", state)
    with pytest.raises(ValueError, match="cut.pt: the weights do not fit fcn32_vgg11"):
        predict.load_models([tmp_path / "cut.pt"], torch.device("cpu"))
