"""bench/gpu_bench.py on the CPU: one row per model with its figures, failures reported in
their row, unknown model names refused with the valid ones."""

import json

import pytest
import torch

from pipeline.models.registry import MODELS, forward_flops

from helpers import bench_script

SMOKE = ["--device", "cpu", "--height", "64", "--width", "320", "--batch", "2",
         "--predict-batch", "2", "--steps", "1", "--warmup", "1", "--no-compile"]


@pytest.fixture(scope="module")
def gpu_bench():
    return bench_script("gpu_bench")


def test_one_row_per_model_with_rates_flops_and_kernel_minutes(gpu_bench, tmp_path, capsys):
    out = tmp_path / "tmp.json"
    assert gpu_bench.main(["--models", "fcn32_vgg11,unet", *SMOKE, "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    rows = results["models"]
    assert [row["model"] for row in rows] == ["fcn32_vgg11", "unet"]
    assert results["device"] == "cpu" and results["compile"] is False
    for row in rows:
        assert row["error"] is None
        assert row["train_images_per_s"] > 0 and row["predict_images_per_s"] > 0
        assert row["kernel_minutes"] == pytest.approx(
            5506 * 10 / row["predict_images_per_s"] / 60)
        assert row["forward_flops"] == forward_flops(64, 320, row["model"])
        assert row["train_mfu"] is None and row["peak_gib"] is None   # no peak known on a CPU
    assert rows[1]["encoder"] == MODELS["unet"].default_encoder
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"cpu, torch {torch.__version__}, float32, compile off")
    assert [line.split()[0] for line in lines[2:4]] == ["fcn32_vgg11", "unet"]
    assert lines[4].startswith("2 models in ") and len(lines) == 5   # no targets on a CPU


def test_a_failing_model_is_reported_in_its_row_and_the_next_one_runs(gpu_bench, tmp_path,
                                                                      monkeypatch, capsys):
    def out_of_memory(name, *args):
        raise torch.cuda.OutOfMemoryError(f"CUDA out of memory for {name}.\nTried to allocate")

    monkeypatch.setattr(gpu_bench, "bench_model", out_of_memory)
    out = tmp_path / "tmp.json"
    assert gpu_bench.main(["--models", "fpn,pspnet", *SMOKE, "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["models"]
    assert [row["error"] for row in rows] == [
        f"OutOfMemoryError: CUDA out of memory for {name}." for name in ("fpn", "pspnet")]
    printed = capsys.readouterr().out
    assert printed.count("FAILED OutOfMemoryError") == 2


def test_an_unknown_model_name_is_refused_with_the_valid_names(gpu_bench, capsys):
    with pytest.raises(SystemExit):
        gpu_bench.main(["--models", "fcn32_vgg11,unett", *SMOKE])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "unknown model(s) 'unett'" in error
    assert all(name in error for name in MODELS)


def test_targets_and_the_kaggle_flag_read_the_rows(gpu_bench):
    row = {"model": "fcn32_vgg11", "encoder": "vgg11", "forward_flops": 132e9, "error": None,
           "train_images_per_s": 900.0, "train_mfu": 0.36, "predict_images_per_s": 1600.0,
           "predict_mfu": 0.21, "peak_gib": 30.0, "kernel_minutes": 0.6,
           "kernel_over_limit": False, "warmup_s": 40.0}
    slow = {**row, "model": "unet", "train_mfu": 0.45, "kernel_minutes": 75.0,
            "kernel_over_limit": True}
    assert gpu_bench.target_lines([row, slow]) == [
        "target FCN32-VGG11 training MFU >= 40.0%: 36.0%: missed",
        "target FCN32-VGG11 predict images/s per pass >= 1,500: 1,600: met",
        "target zoo training MFU >= 40%: met by 1 of 1 (unet)"]
    assert gpu_bench.format_row(slow).split()[-3:] == ["75.0", "!", "40"]
    assert gpu_bench.format_row(row).split()[-2:] == ["0.6", "40"]
    assert gpu_bench.target_lines([]) == [
        f"target FCN32-VGG11 {what}: not measured"
        for what in ("training MFU >= 40.0%", "predict images/s per pass >= 1,500")]
