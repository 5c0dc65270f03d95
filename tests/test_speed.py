"""The speed work: stage ranges seen by the profiler in the real code paths, the demo profile's
command list, compiled inference (same probabilities, padded last batch, one compilation)
and the kernel's compile setting."""

import logging
from pathlib import Path

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from pipeline import stages
from pipeline.config import DataPaths, RunPaths
from pipeline.inference.config import InferenceConfig
from pipeline.inference import predict
from pipeline.kaggle import pack

from helpers import bench_script, run_cli, train_tiny


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("speed"), n_train=8, n_test=3, seed=4,
                      max_steps=1)


def stage_seconds(*argv) -> dict:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        assert run_cli(*argv) == 0
    return {e.key: e.cpu_time_total for e in prof.key_averages() if e.key in stages.STAGES}


def test_cv_and_predict_mark_their_stages(tiny, tmp_path):
    data, run = tiny
    cv = stage_seconds("cv", "--data-dir", data, "--run-dir", run, "--workers", 0, "--quiet")
    assert {"load", "decode", "masks", "resize", "forward", "upsample", "probabilities",
            "postprocess", "metric", "search", "plots"} <= set(cv)
    assert all(cv[name] > 0 for name in cv)
    out = stage_seconds("predict", "--data-dir", data, "--run-dir", run, "--workers", 0,
                        "--out", tmp_path / "s.csv", "--quiet")
    assert {"load", "decode", "forward", "postprocess", "rle"} <= set(out)
    assert "metric" not in out and "search" not in out   # test images have no labels


def test_a_stage_name_must_be_known():
    with pytest.raises(ValueError, match="unknown stage 'decoding'"):
        stages.stage("decoding")
    assert set(stages.MODEL) == {"forward", "backward", "optimizer"}
    assert not set(stages.MODEL) & set(stages.OTHER)


def test_the_profile_runs_the_demos_own_commands_loading_in_process():
    module = bench_script("demo_profile")
    commands = module.demo_commands(Path("/tmp/x"), ["DEMO_N_TRAIN=12"])
    assert [c[0] for c in commands] == ["synth", "folds", "train", "cv", "predict", "compare",
                                        "score", "robustness", "synth", "predict", "score"]
    assert commands[-3][commands[-3].index("--world") + 1] == "held-out"
    assert commands[0][commands[0].index("--n-train") + 1] == "12"
    for argv in commands:
        if "--workers" in argv:
            assert argv[argv.index("--workers") + 1] == "0"
    as_demo = module.demo_commands(Path("/tmp/x"), ["DEMO_WORKERS=2"], serial=False)
    assert [a[a.index("--workers") + 1] for a in as_demo if "--workers" in a] == ["2"] * 5
    seconds = dict.fromkeys(stages.STAGES, 0.0) | {"forward": 6.0, "decode": 1.0}
    summary = module.summarize([{"wall_s": 10.0, "stages": seconds}])
    assert summary["not_model_fraction"] == pytest.approx(0.4)
    assert summary["unmarked_s"] == pytest.approx(3.0)


@pytest.mark.slow
def test_compiled_ensemble_matches_eager_and_compiles_once(tiny, caplog):
    data, run = tiny
    paths, checkpoints = DataPaths(data), RunPaths(run).find_checkpoints([0])
    device = torch.device("cpu")
    eager = predict.load_models(checkpoints, device)
    compiled = predict.load_models(checkpoints, device, InferenceConfig(compile=True))
    assert compiled.compiled and not eager.compiled
    ids = sorted(p.name for p in paths.test_images.iterdir())
    assert len(ids) == 3   # batches of 2: the last one is padded to keep one input shape
    small = InferenceConfig(batch_size=2, workers=0, quiet=True)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()   # other tests' compilations count there too
    with caplog.at_level(logging.INFO):
        got = [b for b in predict.iterate_probabilities(
            compiled, predict.make_loader(paths.test_images, ids, compiled.input_scale, small),
            device, small, desc="compiled")]
    want = [b for b in predict.iterate_probabilities(
        eager, predict.make_loader(paths.test_images, ids, eager.input_scale, small), device,
        small)]
    assert [len(b.image_ids) for b in got] == [2, 1]
    for a, b in zip(got, want):
        assert a.probs.shape == b.probs.shape
        assert torch.allclose(a.probs, b.probs, atol=1e-4)
    assert "compiled: 3 images in" in caplog.text and "compiling included" in caplog.text
    # One graph for both batches: the padded batch did not recompile.
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1


def test_the_kernel_carries_its_compile_setting(tmp_path):
    refs = ("me/severstal-kernel", None, "me/severstal-weights", "1.0")
    plain = pack.build(tmp_path / "a", *refs)
    compiled = pack.build(tmp_path / "b", *refs, InferenceConfig(compile=True, batch_size=4))
    assert "'compile': False" in plain.read_text() and "'batch_size': 8" in plain.read_text()
    assert "'compile': True" in compiled.read_text()
    assert "'batch_size': 4" in compiled.read_text()
    assert "'tta'" not in compiled.read_text()   # TTA comes with the weights
    assert "kernel.main(STARTED, **SETTINGS)" in compiled.read_text()


def test_masks_come_row_major_and_shrink_by_whole_factors_as_opencv_does():
    import cv2
    import numpy as np

    from pipeline.data import images, labels, rle

    rng = np.random.default_rng(0)
    truth = (rng.random((4, 256, 1600)) < 0.3).astype(np.uint8)
    truth[1] = 0
    masks = labels.masks_from_rles([rle.encode(m) if m.any() else "" for m in truth])
    assert masks.flags["C_CONTIGUOUS"] and np.array_equal(masks, truth)
    hwc = masks.transpose(1, 2, 0)
    for size in [(128, 800), (64, 400), (32, 200), (100, 640)]:
        want = cv2.resize(np.ascontiguousarray(hwc), size[::-1], interpolation=cv2.INTER_NEAREST)
        assert np.array_equal(images.resize(hwc, size, masks=True), want), size


def test_the_upsampled_probabilities_match_those_of_channels_last_logits():
    from pipeline.models import forward

    logits = torch.randn(2, 5, 16, 100).contiguous(memory_format=torch.channels_last)
    up = forward.upsample(logits, (32, 200))
    assert up.is_contiguous()
    want = torch.nn.functional.interpolate(logits, size=(32, 200), mode="bilinear")
    assert torch.allclose(forward.probabilities(up, "softmax"), want.softmax(1)[:, 1:],
                          atol=1e-6)


def test_cv_and_predict_take_the_decode_flag(tiny, tmp_path):
    from pipeline.data import dataset, images

    data, run = tiny
    assert dataset.Transform(scale=0.25, decode="full").reduction() == 1
    assert dataset.Transform(scale=0.25).reduction() == 4 and images.DECODES[0] == "scaled"
    for decode in images.DECODES:
        assert run_cli("predict", "--data-dir", data, "--run-dir", run, "--workers", 0,
                       "--out", tmp_path / f"{decode}.csv", "--decode", decode, "--quiet",
                       "--accept-postprocess") == 0   # cv tuned with one of them
    assert run_cli("cv", "--data-dir", data, "--run-dir", run, "--workers", 0,
                   "--decode", "full", "--quiet") == 0
    with pytest.raises(SystemExit) as stop:
        run_cli("predict", "--data-dir", data, "--run-dir", run, "--decode", "half")
    assert stop.value.code == 2
