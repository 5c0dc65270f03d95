"""Experiments as files: ``train --config`` (YAML or JSON) under the flags, a run's config.json
replays the run, ``--resume`` refuses changed settings, and registries are the one list of
names that configs and flags accept."""

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from helpers import TINY_TRAIN, run_cli

from pipeline import cli, options
from pipeline.data.augment import PRESETS
from pipeline.data.shifts import SHIFTS
from pipeline.data.world import WORLDS
from pipeline.inference.config import TTA_MODES, InferenceConfig
from pipeline.models.losses import LOSSES
from pipeline.models.registry import HEADS, MODELS, build_model
from pipeline.training.config import TrainConfig
from pipeline.training.optimizers import OPTIMIZERS

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def train_settings(*argv) -> TrainConfig:
    """The TrainConfig that ``train ARGV`` would run."""
    return options.settings_from_args(TrainConfig, cli.parse(["train", *map(str, argv)]))


def test_a_recipe_file_gives_the_settings_of_its_flags():
    flags = train_settings("--model", "fpn", "--gate", "--cls-weight", "1.0", "--loss",
                           "ce+dice", "--class-weights", "1,3,6,1,3", "--scale", "0.5",
                           "--crop", "128x384", "--lr", "1e-3", "--background-prior", "0.97",
                           "--warmup-epochs", "0.5", "--epochs", "8", "--val-every", "8",
                           "--sampler", "balanced", "--crop-focus", "0.5", "--augment", "strong")
    assert train_settings("--config", CONFIGS / "demo.yaml") == flags
    # flags override the file, in either order
    assert train_settings("--epochs", 2, "--config", CONFIGS / "demo.yaml").epochs == 2
    assert train_settings("--config", CONFIGS / "demo.yaml", "--no-gate").gate is False


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_recipe_in_configs_loads_validates_and_names_its_source(path):
    cfg = train_settings("--config", path)
    assert cfg.epochs >= 1
    header = "".join(line for line in path.read_text().splitlines(keepends=True)
                     if line.startswith("#"))
    assert "# Follows: " in header, f"{path.name}: say which write-up the recipe follows"
    # the model builds (without weights): the architecture, encoder and head exist
    model = build_model(cfg.model, head=cfg.head, encoder=cfg.encoder, encoder_weights="none",
                        input_scale=cfg.scale, gate=cfg.gate)
    assert sum(p.numel() for p in model.parameters()) > 1e5


def test_the_recipes_are_the_documented_ones():
    names = sorted(p.stem for p in CONFIGS.glob("*.yaml"))
    assert names == ["demo", "fpn-b5-khornlund", "seed", "starter", "unet-b3-first-place",
                     "unet-b3-focal"]
    readme = (CONFIGS.parent / "README.md").read_text()
    for name in names:
        assert f"configs/{name}.yaml" in readme, name


def test_yaml_and_json_recipes_agree(tmp_path):
    (tmp_path / "a.yaml").write_text("lr: 1e-3\ncrop: [64, 128]\nclass_weights: [1, 2, 2, 1, 2]\n")
    (tmp_path / "a.json").write_text(json.dumps({"lr": 0.001, "crop": [64, 128],
                                                 "class_weights": [1.0, 2, 2, 1, 2]}))
    yaml_cfg, json_cfg = (train_settings("--config", tmp_path / n) for n in ("a.yaml", "a.json"))
    assert yaml_cfg == json_cfg and yaml_cfg.lr == 0.001 and yaml_cfg.crop == (64, 128)
    assert yaml_cfg.class_weights == (1.0, 2.0, 2.0, 1.0, 2.0)


@pytest.mark.parametrize("text, words", [
    ("lr_max: 1\n", "unknown key 'lr_max' (valid keys: data_dir, run_dir, model"),
    ("lr: fast\n", "key 'lr' must be a number, got 'fast'"),
    ("epochs: 2.5\n", "key 'epochs' must be an integer, got 2.5"),
    ("gate: 1\n", "key 'gate' must be true or false, got 1"),
    ("crop: 128x384\n", "key 'crop' must be a list of integers or null"),
    ("loss: tversky\n", "--loss 'tversky' is not valid; valid values: ce, dice"),
    ("epochs: 0\n", "--epochs must be at least 1"),
    ("- lr\n", "expected a mapping of settings"),
    ("lr: [1\n", "is not valid YAML"),
])
def test_a_bad_recipe_is_one_line_naming_the_file_and_the_key(tmp_path, capsys, text, words):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert run_cli("train", "--config", path, "--run-dir", tmp_path / "run") == 1
    err = capsys.readouterr().err
    assert str(path) in err and words in err and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and not (tmp_path / "run").exists()


def test_a_missing_recipe_is_named(tmp_path, capsys):
    assert run_cli("train", "--config", tmp_path / "nope.yaml") == 1
    assert f"config file {tmp_path / 'nope.yaml'} does not exist" in capsys.readouterr().err


def trained_run(root: Path) -> tuple[Path, Path]:
    data, run = root / "data", root / "run"
    assert run_cli("synth", "--out", data, "--n-train", 8, "--n-test", 0, "--seed", 3,
                   "--workers", 1, "--quiet") == 0
    assert run_cli("folds", "--data-dir", data, "--run-dir", run, "--n-folds", 2) == 0
    assert run_cli("train", "--data-dir", data, "--run-dir", run, "--fold", 0, "--epochs", 2,
                   "--max-steps", 2, "--device", "cpu", *TINY_TRAIN) == 0
    return data, run


def epoch_log(run: Path) -> list[dict]:
    """fold 0's log rows without the wall-clock columns."""
    rows = json.loads((run / "logs" / "fold0.json").read_text())
    return [{k: v for k, v in row.items() if k not in ("seconds", "images_per_s")}
            for row in rows]


@pytest.mark.slow
def test_a_runs_config_json_replays_it_and_resume_refuses_other_settings(tmp_path, capsys):
    data, run = trained_run(tmp_path)
    replay = tmp_path / "replay"
    replay.mkdir()
    shutil.copy(run / "folds.csv", replay)
    assert run_cli("train", "--config", run / "config.json", "--run-dir", replay,
                   "--fold", 0) == 0
    assert epoch_log(replay) == epoch_log(run) and len(epoch_log(run)) == 2
    saved = json.loads((replay / "config.json").read_text())
    assert saved == {**json.loads((run / "config.json").read_text()), "run_dir": str(replay)}

    capsys.readouterr()
    before = (run / "config.json").read_bytes()
    assert run_cli("train", "--config", run / "config.json", "--fold", 0, "--resume",
                   "--model", "unet", "--lr", "0.01") == 1
    err = capsys.readouterr().err
    assert "--model 'fcn32_vgg11' (saved) vs 'unet' (now)" in err
    assert "--lr 0.001 (saved) vs 0.01 (now)" in err and len(err.strip().splitlines()) == 1
    assert (run / "config.json").read_bytes() == before    # nothing written before the check
    # what does not change the training may differ
    assert run_cli("train", "--config", run / "config.json", "--fold", 0, "--resume",
                   "--quiet", "--workers", 0) == 0


@pytest.mark.parametrize("registry, field", [
    (MODELS, "model"), (HEADS, "head"), (LOSSES, "loss"), (OPTIMIZERS, "optimizer"),
    (PRESETS, "augment")])
def test_a_registered_training_name_is_accepted_by_config_and_cli(monkeypatch, registry, field):
    name = next(iter(registry))
    monkeypatch.setitem(registry, "dummy", registry[name])
    if field == "head":   # the default loss must serve the new head too
        ce = LOSSES["ce"]
        monkeypatch.setitem(LOSSES, "ce", dataclasses.replace(ce, heads=(*ce.heads, "dummy")))
    assert getattr(TrainConfig(**{field: "dummy"}), field) == "dummy"
    assert getattr(train_settings(f"--{field}", "dummy"), field) == "dummy"
    monkeypatch.delitem(registry, "dummy")
    with pytest.raises(ValueError, match="'dummy' is not valid"):
        TrainConfig(**{field: "dummy"})


def test_registered_inference_world_and_shift_names_are_accepted(monkeypatch):
    monkeypatch.setitem(TTA_MODES, "vflip", ((), (2,)))
    monkeypatch.setitem(WORLDS, "dummy", WORLDS["narrow"])
    monkeypatch.setitem(SHIFTS, "dummy", SHIFTS["none"])
    assert InferenceConfig(tta="vflip").tta == "vflip"
    args = cli.parse(["cv", "--tta", "vflip"])
    assert options.settings_from_args(InferenceConfig, args).tta == "vflip"
    assert cli.parse(["synth", "--out", "x", "--world", "dummy"]).world == "dummy"
    assert "dummy" in cli.parse(["robustness", "--shifts", "dummy"]).shifts


def test_inference_flags_come_from_the_inference_config(capsys):
    with pytest.raises(SystemExit):
        cli.parse(["cv", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag in ("--tta {none,hflip,hvflip}", "--decode {scaled,full}", "--batch-size",
                 "--workers", "--amp {auto,none,bf16,fp16}", "--compile", "--channels-last"):
        assert flag in text, flag
    with pytest.raises(SystemExit):
        cli.parse(["predict", "--help"])
    assert "(default: the one cv tuned with, else none)" in " ".join(
        capsys.readouterr().out.split())
