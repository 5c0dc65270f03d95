"""Averaged weights: the EMA against a hand-computed average, in the trainer too, and the
top-k average of checkpoints."""

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from helpers import run_cli

from pipeline import checkpoint
from pipeline.data import synthetic
from pipeline.training import averaging


def tiny_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2))


def fill(net: nn.Module, value: float) -> None:
    with torch.no_grad():
        for tensor in [*net.parameters(), net[1].running_mean, net[1].running_var]:
            tensor.fill_(value)


def test_the_ema_of_two_steps_is_the_hand_computed_average():
    net = tiny_net()
    ema = averaging.ema_model(net, decay=0.9)
    fill(net, 1.0)
    ema.update_parameters(net)          # the first update copies the weights
    first = {k: v.clone() for k, v in net.state_dict().items()}
    fill(net, 3.0)
    ema.update_parameters(net)
    second = net.state_dict()
    for key, value in ema.module.state_dict().items():
        if value.is_floating_point():
            expected = 0.9 * first[key] + 0.1 * second[key]
            torch.testing.assert_close(value, expected, rtol=0, atol=1e-6)
            assert torch.allclose(value, torch.full_like(value, 1.2))


def test_top_k_averaging_of_identical_checkpoints_is_the_identity():
    state = tiny_net().state_dict()
    averaged = averaging.average_states([state, state, state])
    assert averaged.keys() == state.keys()
    for key in state:
        assert torch.equal(averaged[key], state[key]), key


def test_averaging_is_the_mean_and_refuses_other_models():
    a, b = tiny_net().state_dict(), tiny_net().state_dict()
    mean = averaging.average_states([a, b])
    key = "0.weight"
    torch.testing.assert_close(mean[key], (a[key] + b[key]) / 2)
    with pytest.raises(ValueError, match="checkpoint 1 has other weights"):
        averaging.average_states([a, nn.Conv2d(1, 3, 1).state_dict()])
    with pytest.raises(ValueError, match="nothing to average"):
        averaging.average_states([])


def test_the_top_epochs_are_kept_and_pruned_only_after_the_commit(tmp_path):
    weights = tiny_net().state_dict()
    for epoch, top in ((0, [0]), (1, [1, 0]), (2, [1, 2])):
        averaging.save_top(tmp_path, epoch, weights, top)
        averaging.prune_top(tmp_path, top)        # each epoch's commit came between
    assert sorted(p.name for p in (tmp_path / "top").iterdir()) == ["epoch1.pt", "epoch2.pt"]
    with pytest.raises(FileNotFoundError, match="epoch0.pt is missing"):
        averaging.load_top(tmp_path, [0, 1])


def test_a_kill_before_the_commit_loses_no_weights_a_resume_needs(tmp_path):
    weights = tiny_net().state_dict()
    for epoch, top in ((0, [0]), (1, [1, 0])):
        averaging.save_top(tmp_path, epoch, weights, top)
        averaging.prune_top(tmp_path, top)
    averaging.save_top(tmp_path, 2, weights, [1, 2])   # killed here, before epoch 2's commit
    # the resumed epoch 2 scores lower this time (a GPU is not bit-exact): the top is 1, 0
    averaging.save_top(tmp_path, 2, weights, [1, 0])
    averaging.prune_top(tmp_path, [1, 0])
    assert sorted(p.name for p in (tmp_path / "top").iterdir()) == ["epoch0.pt", "epoch1.pt"]
    assert len(averaging.load_top(tmp_path, [1, 0])) == 2


def test_odd_files_in_top_are_left_alone_and_a_damaged_one_is_named(tmp_path):
    weights = tiny_net().state_dict()
    averaging.save_top(tmp_path, 3, weights, [3])
    (tmp_path / "top" / "epoch3-copy.pt").write_bytes(b"x")
    averaging.prune_top(tmp_path, [])
    assert [p.name for p in (tmp_path / "top").iterdir()] == ["epoch3-copy.pt"]
    averaging.save_top(tmp_path, 4, weights, [4])
    (tmp_path / "top" / "epoch4.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"epoch4\.pt cannot be read .*without --resume"):
        averaging.load_top(tmp_path, [4])


TINY = ["--encoder-weights", "none", "--scale", "0.25", "--crop", "64x128", "--batch-size",
        "4", "--workers", "0", "--lr", "3e-3", "--background-prior", "0.9", "--quiet"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("averaging-data")
    synthetic.write_dataset(root, n_train=16, n_test=0, seed=6, quiet=True, workers=1)
    return root


def train(data: Path, run: Path, *args) -> Path:
    assert run_cli("folds", "--data-dir", data, "--run-dir", run, "--n-folds", 2) == 0
    assert run_cli("train", "--data-dir", data, "--run-dir", run, "--fold", "0", *TINY,
                   *args) == 0
    return run / "checkpoints" / "fold0"


@pytest.mark.slow
def test_the_trainer_validates_and_saves_the_ema_of_its_steps(data, tmp_path):
    """Weights after step 1 and step 2 of the same run (deterministic), then by hand."""
    one = checkpoint.load(train(data, tmp_path / "one", "--epochs", "2", "--max-steps", "1",
                                "--ema-decay", "0.75") / "last.pt")
    two = checkpoint.load(train(data, tmp_path / "two", "--epochs", "2", "--max-steps", "2",
                                "--ema-decay", "0.75") / "last.pt")
    assert one["config"]["ema_decay"] == 0.75 and set(two) >= {"train_model", "ema"}
    for key, value in two["model"].items():
        if value.is_floating_point():
            expected = 0.75 * one["train_model"][key] + 0.25 * two["train_model"][key]
            torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(one["model"][key], one["train_model"][key])  # 1st copies
    assert not all(torch.equal(two["model"][k], two["train_model"][k]) for k in two["model"])
    best = checkpoint.load(tmp_path / "two" / "checkpoints" / "fold0" / "best.pt")
    assert "train_model" not in best and "ema" not in best
    for key in best["model"]:
        assert torch.equal(best["model"][key], two["model"][key])   # the validated weights


@pytest.mark.slow
def test_average_top_k_saves_the_mean_of_the_kept_epochs(data, tmp_path):
    fold = train(data, tmp_path / "run", "--epochs", "3", "--average-top-k", "2")
    log = json.loads((tmp_path / "run" / "logs" / "fold0.json").read_text())
    ranked = sorted(log, key=lambda row: (-row["val_tuned"], row["epoch"]))
    top = [row["epoch"] for row in ranked[:2]]
    best = checkpoint.load(fold / "best.pt")
    assert best["metrics"]["averaged_epochs"] == top
    kept = averaging.load_top(fold, top)
    for key, value in best["model"].items():
        if value.is_floating_point():
            torch.testing.assert_close(value, (kept[0][key].double() + kept[1][key].double())
                                       .div(2).to(value.dtype))
    kept_names = sorted(p.name for p in (fold / "top").iterdir())
    assert kept_names == [f"epoch{e}.pt" for e in sorted(top)]
