"""Settings: TrainConfig refuses bad values before any data is read; every flag explains itself;
a run's checkpoints are found one way."""

import dataclasses
import re

import pytest

from helpers import run_cli

from pipeline import settings
from pipeline.config import RunPaths
from pipeline.training.config import DEFAULT_PSEUDO_SHARE, TrainConfig, resume_conflicts


@pytest.mark.parametrize("field, value, words", [
    ("amp", "fp8", "--amp 'fp8' is not valid; valid values: auto, none, bf16, fp16"),
    ("loss", "tversky", "valid values: ce, dice, ce+dice, bce, bce+dice, focal"),
    ("head", "tanh", "valid values: softmax, sigmoid"),
    ("optimizer", "lamb", "valid values: adamw, adam, sgd"),
    ("model", "segnet", "valid values: fcn32_vgg11, unet, unetplusplus, fpn"),
    ("gate", True, "--gate needs --cls-weight > 0"),
    ("device", "tpu", "--device 'tpu' is not valid; valid values: auto, cpu, cuda, cuda:N"),
    ("epochs", 0, "--epochs must be at least 1"),
    ("max_steps", -1, "--max-steps must be at least 1 (or left out for no limit), got -1"),
    ("max_steps", 0, "--max-steps must be at least 1"),
    ("limit_images", -1, "--limit-images must be at least 1 (or left out for no limit), got -1"),
    ("lr", -1.0, "--lr must be > 0"),
    ("background_prior", 1.0, "--background-prior must be in (0, 1)"),
    ("select", "iou", "--select 'iou' is not valid; valid values: tuned, default, loss"),
    ("ema_decay", -0.1, "--ema-decay must be in [0, 1), got -0.1"),
    ("ema_decay", 1.0, "--ema-decay must be in [0, 1), got 1.0"),
    ("average_top_k", 0, "--average-top-k must be at least 1"),
    ("sampler", "weighted", "valid values: uniform, balanced"),
    ("sample_shares", (0.5, 0.5, 0.5, -0.5, 0.0), "--sample-shares needs 5 shares in [0, 1]"),
    ("sample_shares", (1.5, 0.0, 0.0, 0.0, -0.5), "--sample-shares needs 5 shares in [0, 1]"),
    ("sample_shares", (0.5, 0.5), "--sample-shares needs 5 shares"),
    ("crop_focus", 1.5, "--crop-focus is a probability in [0, 1], got 1.5"),
    ("dice_weight", -1.0, "--dice-weight must be >= 0"),
    ("pos_weight", (2.0, 2.0, 1.0, 1.5), "pos_weight weights the BCE of the sigmoid head"),
    ("pseudo_share", 0.3, "--pseudo-share 0.3 needs --pseudo FILE (the pseudo-label CSV)"),
])
def test_bad_values_are_refused_when_the_config_is_built(field, value, words):
    extra = {"cls_weight": 0.0} if field == "gate" else {}
    with pytest.raises(ValueError, match=re.escape(words)):
        TrainConfig(**{field: value}, **extra)
    with pytest.raises(ValueError, match=re.escape(words)):   # e.g. an edited config.json
        TrainConfig.from_dict({**TrainConfig().as_dict(), field: value, **extra})


@pytest.mark.parametrize("values, words", [
    ({"head": "sigmoid", "loss": "bce", "pos_weight": (2.0, 2.0, 1.0)},
     "pos_weight (one per class) needs 4 values, got 3"),
    ({"head": "sigmoid", "loss": "bce", "pos_weight": (2.0, 2.0, 1.0, -1.0)},
     "pos_weight (one per class) must be finite and >= 0"),
    ({"head": "sigmoid", "loss": "lovasz", "dice_weight": 0.5},
     "loss 'lovasz' has no Dice term to weight: use a +dice loss (bce+dice, focal+dice)"),
    ({"loss": "ce", "head": "sigmoid"}, "loss 'ce' needs the softmax head"),
])
def test_a_loss_that_cannot_be_built_is_refused_with_the_config(values, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        TrainConfig(**values)


def test_the_first_place_loss_and_the_learning_settings_pass():
    cfg = TrainConfig(head="sigmoid", loss="bce+dice", pos_weight=(2.0, 2.0, 1.0, 1.5),
                      pixel_weight=0.75, dice_weight=0.25, ema_decay=0.99, average_top_k=3,
                      sampler="balanced", sample_shares=(0.4, 0.15, 0.15, 0.15, 0.15),
                      crop_focus=0.5, select="loss")
    assert TrainConfig.from_dict(cfg.as_dict()) == cfg


@pytest.mark.parametrize("share, words", [
    (1.0, "--pseudo-share 1.0 leaves no real image in the batches: use a share below 1"),
    (1.5, "--pseudo-share 1.5 leaves no real image in the batches"),
    (0.0, "--pseudo-share must be in (0, 1), got 0.0"),
    (-0.2, "--pseudo-share must be in (0, 1), got -0.2"),
])
def test_a_pseudo_share_outside_0_1_is_refused(share, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        TrainConfig(pseudo="pseudo.csv", pseudo_share=share)


def test_pseudo_alone_gets_the_default_share_and_old_configs_resume():
    cfg = TrainConfig(pseudo="pseudo.csv")
    assert cfg.pseudo_share == DEFAULT_PSEUDO_SHARE == 0.2
    assert TrainConfig.from_dict(cfg.as_dict()) == cfg
    assert cfg.as_dict()["pseudo_share"] == 0.2     # config.json records the share used
    old = {k: v for k, v in TrainConfig().as_dict().items() if not k.startswith("pseudo")}
    assert resume_conflicts(old, TrainConfig()) == []   # a run from before the flags
    assert resume_conflicts(old, cfg) == ["--pseudo None (saved) vs 'pseudo.csv' (now)",
                                          "--pseudo-share None (saved) vs 0.2 (now)"]


def test_a_run_resumes_with_or_without_tensorboard_logging():
    on, off = TrainConfig(tensorboard=True), TrainConfig()
    old = {k: v for k, v in off.as_dict().items() if k != "tensorboard"}
    assert resume_conflicts(off.as_dict(), on) == resume_conflicts(on.as_dict(), off) == []
    assert resume_conflicts(old, on) == []   # a run from before the flag


def test_cli_refuses_a_pseudo_share_without_a_file(tmp_path, capsys):
    run = tmp_path / "run"
    assert run_cli("train", "--data-dir", tmp_path / "none", "--run-dir", run,
                   "--pseudo-share", "0.3") == 1
    err = capsys.readouterr().err
    assert "--pseudo-share 0.3 needs --pseudo FILE" in err and len(err.splitlines()) == 1
    assert run_cli("train", "--data-dir", tmp_path / "none", "--run-dir", run,
                   "--pseudo", tmp_path / "p.csv", "--pseudo-share", "1") == 1
    assert "--pseudo-share 1.0 leaves no real image" in capsys.readouterr().err
    assert not run.exists()


def test_good_values_pass():
    cfg = TrainConfig(amp="fp16", device="cuda:1", head="sigmoid", loss="bce+dice")
    assert TrainConfig.from_dict(cfg.as_dict()) == cfg


def test_cli_refuses_fp8_before_reading_any_data(tmp_path, capsys):
    missing = tmp_path / "no-such-data"
    with pytest.raises(SystemExit) as stop:
        run_cli("train", "--data-dir", missing, "--run-dir", tmp_path / "run", "--amp", "fp8")
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "argument --amp: invalid choice: 'fp8' (choose from 'auto', 'none', 'bf16'" in err
    assert "Traceback" not in err and not (tmp_path / "run").exists()
    assert run_cli("train", "--data-dir", missing, "--run-dir", tmp_path / "run",
                   "--device", "tpu") == 1
    assert "--device 'tpu' is not valid" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_train_help_gives_every_flag_a_meaning_default_and_choices(capsys):
    with pytest.raises(SystemExit):
        run_cli("train", "--help")
    entries = {}   # the first flag of each option -> its help, wrapped lines joined
    for line in capsys.readouterr().out.splitlines():
        if line.startswith("  -"):
            first = line.split()[0].rstrip(",")
            entries[first] = line
        elif line.startswith("    ") and entries:
            entries[first] += " " + line.strip()
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        entry = " ".join(entries[flag].split())
        assert field.metadata["help"].split()[0] in entry, flag
        if field.name not in ("data_dir", "run_dir"):
            assert "(default: " in entry and "default: None" not in entry, flag
        allowed = settings.field_choices(field)
        if allowed:
            assert "{" + ",".join(allowed) + "}" in entry, flag
    assert "(default: 256x384)" in entries["--crop"]


def test_checkpoints_are_found_in_fold_order(tmp_path):
    run = RunPaths(tmp_path)
    for name in ("fold10", "fold2", "fold0", "foldx", "fold3"):
        (run.checkpoints / name).mkdir(parents=True)
        (run.checkpoints / name / "best.pt").write_bytes(b"")
    (run.checkpoints / "fold3" / "best.pt").unlink()
    assert run.find_checkpoints() == [run.fold_dir(f) / "best.pt" for f in (0, 2, 10)]
    assert run.find_checkpoints([2, 0], which="last") == [
        tmp_path / "checkpoints" / "fold2" / "last.pt",
        tmp_path / "checkpoints" / "fold0" / "last.pt"]
