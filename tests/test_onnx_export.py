"""`export --format onnx`: onnxruntime gives PyTorch's probabilities on real images, any batch
size, with the metadata a user needs; refusals are one line and leave no file."""

import argparse
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from helpers import run_cli

from pipeline import checkpoint
from pipeline.commands import export
from pipeline.data import images
from pipeline.models import onnx_export, registry

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.fixture(scope="module")
def real_images(real_sample) -> list[Path]:
    return sorted((real_sample / "train_images").glob("*.jpg"))[:2]


@pytest.fixture(scope="module")
def fcn_export(tiny_run, real_images, tmp_path_factory) -> tuple[Path, Path]:
    """``(checkpoint, onnx file)``: fold 1 of the tiny FCN32 run, exported by the CLI."""
    out = tmp_path_factory.mktemp("fcn") / "fcn.onnx"
    assert run_cli("export", "--format", "onnx", "--run-dir", tiny_run[1], "--fold", 1,
                   "--out", out, "--image", real_images[0]) == 0
    return tiny_run[1] / "checkpoints" / "fold1" / "best.pt", out


@pytest.fixture(scope="module")
def unet_export(real_images, tmp_path_factory) -> tuple[Path, Path]:
    """``(checkpoint, onnx file)``: a gated sigmoid smp Unet at scale 0.25, exported."""
    root = tmp_path_factory.mktemp("unet")
    torch.manual_seed(0)
    model = registry.build_model("unet", head="sigmoid", gate=True, input_scale=0.25,
                                 encoder_weights="none", background_prior=0.9).eval()
    checkpoint.save(root / "unet.pt", {"model": model.state_dict(),
                                       "model_info": registry.model_info(model).as_dict()})
    assert run_cli("export", "--format", "onnx", "--checkpoint", root / "unet.pt",
                   "--out", root / "unet.onnx", "--image", real_images[1]) == 0
    return root / "unet.pt", root / "unet.onnx"


def batch_of(paths: list[Path], size: tuple[int, int]) -> np.ndarray:
    return np.concatenate([onnx_export.as_input(images.read_image(p), size) for p in paths])


def max_differences(exported: tuple[Path, Path], batches: list[np.ndarray]) -> dict[str, float]:
    """Output -> max |onnxruntime - PyTorch| of the exported file and its checkpoint."""
    model = registry.rebuild(checkpoint.load(exported[0]), exported[0])
    session = onnxruntime.InferenceSession(str(exported[1]),
                                           providers=["CPUExecutionProvider"])
    found = {}
    for batch in batches:
        got = dict(zip([o.name for o in session.get_outputs()],
                       session.run(None, {"image": batch})))
        expected = onnx_export.run_torch(model, batch)
        assert {k: v.shape for k, v in got.items()} == {k: v.shape for k, v in expected.items()}
        for name in expected:
            found[name] = max(found.get(name, 0.0), float(np.abs(got[name] - expected[name]).max()))
    return found


def test_a_trained_fcn32_matches_pytorch_on_real_images(fcn_export, real_images):
    batches = [batch_of(paths, (64, 400)) for paths in (real_images[:1], real_images * 2)]
    diffs = max_differences(fcn_export, batches)    # batches of 1 and 4: the axis is dynamic
    assert list(diffs) == ["probs"] and diffs["probs"] <= onnx_export.DEFAULT_TOLERANCE


def test_the_metadata_says_how_to_feed_the_model(fcn_export):
    meta = onnx_export.read_metadata(fcn_export[1])
    info = registry.rebuild(checkpoint.load(fcn_export[0]), fcn_export[0]).info
    check = meta.pop("check")
    assert meta == onnx_export.metadata(info, onnx_export.DEFAULT_OPSET)
    assert re.fullmatch(r"max \|onnxruntime - torch\| \d\.\d\de-\d\d on \w+\.jpg", check)
    assert (meta["model"], meta["encoder"], meta["head"], meta["gate"], meta["outputs"]) == (
        "fcn32_vgg11", "vgg11", "softmax", "false", "probs")
    assert (meta["input_height"], meta["input_width"], meta["stride"]) == ("64", "400", "32")
    assert meta["input_scale"] == "0.25" and "64x416" in meta["padding"]
    assert meta["classes"] == '["1", "2", "3", "4"]' and meta["presence"] == "none"
    assert meta["pipeline_version"].startswith("0.") and meta["opset"] == "18"


def test_a_gated_unet_gives_probabilities_and_presence_for_a_batch(unet_export, real_images):
    batch = batch_of(real_images, (64, 400))
    diffs = max_differences(unet_export, [batch])
    assert list(diffs) == ["probs", "presence"]
    assert max(diffs.values()) <= onnx_export.DEFAULT_TOLERANCE
    session = onnxruntime.InferenceSession(str(unet_export[1]),
                                           providers=["CPUExecutionProvider"])
    probs, presence = session.run(None, {"image": batch})
    assert probs.shape == (2, 4, 64, 400) and presence.shape == (2, 4)
    assert probs.min() >= 0 and probs.max() <= 1 and not np.array_equal(probs[0], probs[1])
    meta = session.get_modelmeta().custom_metadata_map
    assert (meta["model"], meta["encoder"], meta["head"], meta["gate"], meta["outputs"]) == (
        "unet", "tu-tf_efficientnet_lite0", "sigmoid", "true", "probs,presence")
    assert meta["input_mean"] == "[0.5, 0.5, 0.5]" and meta["input_std"] == "[0.5, 0.5, 0.5]"


def test_the_readme_example_runs_with_onnxruntime_alone(fcn_export, real_images):
    text = README.read_text()
    section = text[text.index("### Export to ONNX"):]
    example = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    example = example.replace("model.onnx", str(fcn_export[1])).replace(
        "image.jpg", str(real_images[0]))
    example += "import sys\nassert 'torch' not in sys.modules\n"
    result = subprocess.run([sys.executable, "-c", example], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("fcn32_vgg11 [[")


def test_an_unknown_format_is_refused_listing_the_valid_ones(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        run_cli("export", "--format", "tflite", "--checkpoint", "x.pt", "--out", tmp_path / "m")
    assert exit_.value.code == 2
    assert "invalid choice: 'tflite' (choose from 'onnx')" in capsys.readouterr().err
    assert list(onnx_export.FORMATS) == ["onnx"]


def save_fcn(path: Path) -> Path:
    torch.manual_seed(0)
    model = registry.build_model(input_scale=0.25, background_prior=0.9)
    checkpoint.save(path, {"model": model.state_dict(),
                           "model_info": registry.model_info(model).as_dict()})
    return path


def test_a_mismatch_fails_in_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch):
    run_onnx = onnx_export.run_onnx
    monkeypatch.setattr(onnx_export, "run_onnx",   # an exporter bug: probabilities off by 0.01
                        lambda data, batch: {k: v + 0.01 for k, v in run_onnx(data, batch).items()})
    out = tmp_path / "out" / "fcn.onnx"
    assert run_cli("export", "--format", "onnx", "--checkpoint", save_fcn(tmp_path / "a.pt"),
                   "--out", out) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.fullmatch(r"error: the ONNX export of fcn32_vgg11 differs from PyTorch by "
                        r"1\.00e-02 on a synthetic image .* not written: .*", error)
    assert not out.exists() and list(tmp_path.glob("out/*")) == []


class DataDependent(torch.nn.Module):
    """A model torch.export refuses: its control flow depends on the pixels."""

    info = registry.ModelInfo(name="toy", encoder="none", head="sigmoid", n_outputs=4,
                              input_scale=0.25, mean=(0.5,) * 3, std=(0.5,) * 3, stride=32)

    def forward(self, images):
        logits = images[:, :1].repeat(1, 4, 1, 1)
        return logits if images.mean() > 0.5 else -logits


def test_a_model_that_cannot_export_names_itself_and_the_reason(monkeypatch, capsys):
    with pytest.raises(ValueError) as error:
        onnx_export.to_onnx(DataDependent())
    assert re.fullmatch(r"model toy \(none\) cannot be exported to ONNX: \w+: Could not guard "
                        r"on data-dependent expression .*", str(error.value))
    assert capsys.readouterr().err == ""    # torch.export's partial graph is not printed

    def fail(*args, **kwargs):
        raise RuntimeError("Unsupported: ONNX export of operator foo\n  a long trace")

    monkeypatch.setattr(torch.onnx, "export", fail)
    model = registry.build_model(input_scale=0.25)
    with pytest.raises(ValueError, match=r"^model fcn32_vgg11 \(vgg11\) cannot be exported to "
                                         r"ONNX: RuntimeError: Unsupported: ONNX export of "
                                         r"operator foo$"):
        onnx_export.to_onnx(model)
    with pytest.raises(ValueError, match="--opset 17 is not supported: choose 18 to 23"):
        onnx_export.to_onnx(model, opset=17)


def test_which_checkpoint_is_refused_before_any_work(tiny_run, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    for argv, message in (
            (["--checkpoint", "a.pt", "--fold", "0"], "--fold goes with --run-dir"),
            (["--run-dir", tmp_path / "empty"], "has no checkpoints/fold<k>/best.pt"),
            (["--run-dir", tiny_run[1], "--fold", "7"], "--fold 7: "),
            (["--checkpoint", tmp_path / "missing.pt"], "missing.pt does not exist")):
        assert run_cli("export", "--format", "onnx", "--out", out, *argv) == 1
        errors = capsys.readouterr().err.strip().splitlines()
        assert len(errors) == 1 and message in errors[0]
    assert not out.exists()
    chosen = export.checkpoint_path(argparse.Namespace(checkpoint=None, run_dir=tiny_run[1],
                                                       fold=None))
    assert chosen == tiny_run[1] / "checkpoints" / "fold0" / "best.pt"   # the first fold


def test_the_check_image_defaults_to_the_test_images_then_a_synthetic_one(real_sample):
    image, source = onnx_export.check_image(None, real_sample / "test_images")
    assert source.endswith("00a0b7730.jpg") and image.shape == (256, 1600, 3)
    first, source = onnx_export.check_image(None, real_sample / "no-such-folder")
    again, _ = onnx_export.check_image()
    assert source.startswith("a synthetic image") and np.array_equal(first, again)
    assert first.dtype == np.uint8 and first.shape == (256, 1600, 3) and first.std() > 1
