"""The packed kernel: deterministic build, and a clean-environment run equal to `predict`."""

import getpass
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from helpers import TINY_TRAIN, run_cli

from pipeline.kaggle import pack
from pipeline.kaggle.weights import stage_weights
from pipeline.inference import ensembles
from pipeline.inference.config import InferenceConfig
from pipeline.inference.postprocess import PostProcess


def test_build_is_deterministic_and_offline(tmp_path):
    first = pack.build(tmp_path / "a", "me/severstal-kernel", None, "me/severstal-weights",
                       "1.0")
    second = pack.build(tmp_path / "b", "me/severstal-kernel", None, "me/severstal-weights",
                        "1.0")
    assert first.read_bytes() == second.read_bytes()
    metadata = json.loads((tmp_path / "a" / "kernel-metadata.json").read_text())
    assert metadata["enable_internet"] is False and metadata["enable_gpu"] is True
    assert metadata["language"] == "python" and metadata["kernel_type"] == "script"
    assert metadata["competition_sources"] == ["severstal-steel-defect-detection"]
    assert metadata["dataset_sources"] == ["me/severstal-weights"]
    assert metadata["code_file"] == first.name
    assert metadata["title"] == "Severstal Kernel"  # Kaggle's slug of it is the id's slug
    imports = [line.split("  #")[0] for line in first.read_text().splitlines()
               if line.startswith("import ")]
    assert imports == ["import time", "import atexit", "import base64", "import os",
                       "import sys", "import tempfile"]


@pytest.mark.parametrize("kernel,dataset,title,message", [
    ("severstal", "me/severstal-weights", "A title", "--kernel 'severstal' is not an owner/slug"),
    ("me/k", "weights", "A title", "--weights-dataset 'weights' is not an owner/slug"),
    ("me/k", "me/w", "A title", "slug of 6-50"),
    ("me/k", "me/severstal_weights", "A title", "letters, digits or dashes"),
    ("me/kernel", "me/severstal-weights", "abc", "5[+] characters"),
    ("me/severstal-unet", "me/severstal-weights", "Severstal U-Net", "slugify to the slug"),
    ("me/severstal-unet", "me/severstal-weights", "My Severstal kernel",
     "use 'Severstal Unet'"),
])
def test_bad_metadata_arguments(tmp_path, kernel, dataset, title, message):
    with pytest.raises(ValueError, match=message):
        pack.build(tmp_path, kernel, title, dataset, "1.0")


def test_kernel_out_dir_is_the_folder_written(tmp_path, capsys):
    out = tmp_path / "custom" / "place"
    assert run_cli("kernel", "--kernel", "me/severstal-kernel", "--weights-dataset",
                   "me/severstal-weights", "--out-dir", out) == 0
    assert sorted(p.name for p in out.iterdir()) == ["kernel-metadata.json",
                                                     "severstal_kernel.py"]


def test_make_builds_and_pushes_one_kernel_dir():
    """``make kernel`` writes KERNEL_DIR and ``make push-kernel`` pushes that same folder."""
    root = Path(__file__).resolve().parent.parent
    variables = ["KERNEL=me/severstal-kernel", "KAGGLE_DATASET=me/severstal-weights",
                 "KERNEL_DIR=elsewhere/my-kernel", "VENV=.venv"]
    planned = {}
    for target in ("kernel", "push-kernel"):
        result = subprocess.run(["make", "-n", "-o", ".venv/.installed", target, *variables],
                                cwd=root, capture_output=True, text=True, check=True)
        planned[target] = result.stdout
    assert "--out-dir elsewhere/my-kernel" in planned["kernel"]
    assert "--kernel-dir elsewhere/my-kernel" in planned["push-kernel"]


def test_make_submit_names_the_kernel_and_version_given_without_a_push_record():
    """``make submit KERNEL=me/slug KERNEL_VERSION=3`` passes both (no local push record
    needed); without a version it submits the kernel folder's recorded push."""
    root = Path(__file__).resolve().parent.parent

    def planned(*variables):
        return subprocess.run(["make", "-n", "-o", ".venv/.installed", "submit", "VENV=.venv",
                               *variables], cwd=root, capture_output=True, text=True,
                              check=True).stdout.split()

    given = planned("KERNEL=me/severstal-unet", "KERNEL_VERSION=3")
    assert given[given.index("--kernel") + 1] == "me/severstal-unet"
    assert given[given.index("--kernel-version") + 1] == "3" and "--kernel-dir" not in given
    recorded = planned("KERNEL=me/severstal-unet")
    assert recorded[recorded.index("--kernel-dir") + 1] == "kernels/severstal-unet"
    assert "--kernel" not in recorded


def test_make_upload_weights_passes_its_extra_flags():
    """The flag a refused staging names (``--accept-postprocess``) reaches the command."""
    planned = subprocess.run(["make", "-n", "--no-print-directory", "-o", ".venv/.installed",
                              "upload-weights",
                              "VENV=.venv", "KAGGLE_DATASET=me/w",
                              "UPLOAD_ARGS=--accept-postprocess"],
                             cwd=Path(__file__).resolve().parent.parent, capture_output=True,
                             text=True, check=True).stdout.replace("\\\n", " ").split()
    command = planned[planned.index("upload-weights") + 1:][:5]   # (a sub-make adds lines)
    assert command == ["--dataset", "me/w", "--run-dir", planned[planned.index("--run-dir") + 1],
                       "--accept-postprocess"]


BLOCKER = """
import importlib.abc, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)", name=name)
        return None

sys.meta_path.insert(0, Block())
"""


INDUCTOR_CACHE = Path(tempfile.gettempdir()) / f"torchinductor_{getpass.getuser()}"
# Where Kaggle has mounted the inputs over the years: (competition, weights dataset).
LAYOUTS = {"old": ("severstal-steel-defect-detection", "severstal-weights"),
           "new": ("competitions/severstal-steel-defect-detection",
                   "datasets/me/severstal-weights")}


def run_kernel(tmp_path: Path, data: Path, run: Path, blocked: tuple = (),
               layout: str = "new", compile_models: bool = False) -> tuple[str, Path, Path]:
    """Stage the weights, pack the kernel (``compile_models``: ``kernel --compile``) and run it
    in a clean Python on fake inputs mounted as in ``layout``, with the ``blocked`` packages
    made unimportable; returns its stdout, the weights folder and the working folder."""
    inputs = tmp_path / f"input-{layout}"
    competition, weights = (inputs / part for part in LAYOUTS[layout])
    competition.mkdir(parents=True)
    shutil.copy(data / "sample_submission.csv", competition)
    shutil.copytree(data / "test_images", competition / "test_images")
    # Decoys that sort first: an old copy of the data with 2 of its images (its sample
    # matching them), and an older weights dataset.
    decoy = inputs / "aaa-old-copy"
    (decoy / "test_images").mkdir(parents=True)
    kept = sorted(p.name for p in (data / "test_images").iterdir())[:2]
    for name in kept:
        shutil.copy(data / "test_images" / name, decoy / "test_images")
    (decoy / "sample_submission.csv").write_text(
        "ImageId,EncodedPixels,ClassId\n" + "".join(f"{name},1 1,0\n" for name in kept))
    (inputs / "aaa-old-weights").mkdir()
    (inputs / "aaa-old-weights" / "postprocess.json").write_text("{}")
    # What `make upload-weights` puts in the dataset.
    stage_weights(ensembles.resolve(run), None, "me/severstal-weights", "Severstal weights",
                  weights)
    script = pack.build(tmp_path / "kernels" / "k", "me/severstal-kernel", None,
                        "me/severstal-weights", "test", InferenceConfig(compile=compile_models))
    working, elsewhere, site, temp = (tmp_path / f"{name}-{layout}"
                                      for name in ("working", "elsewhere", "site", "temp"))
    for folder in (working, elsewhere, site, temp):
        folder.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER.format(blocked=set(blocked)))
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "KAGGLE_INPUT_ROOT": str(inputs),
           "KAGGLE_WORKING_ROOT": str(working), "OMP_NUM_THREADS": "2",
           "PYTHONPATH": str(site), "TMPDIR": str(temp),
           # the temp folder is the kernel's own, but the compile cache is the test process's
           "TORCHINDUCTOR_CACHE_DIR": str(INDUCTOR_CACHE)}
    for package in blocked:   # the kernel's Python really lacks them
        probe = subprocess.run([sys.executable, "-c", f"import {package}"], env=env,
                               capture_output=True, text=True)
        assert probe.returncode == 1 and "blocked" in probe.stderr
    result = subprocess.run([sys.executable, str(script)], cwd=elsewhere, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"data {competition}, weights {weights}" in result.stdout
    assert not list(temp.glob("pipeline-*.zip"))   # the package's temporary zip is gone
    return result.stdout, weights, working


@pytest.mark.slow
def test_kernel_in_clean_environment_matches_predict(tmp_path, tiny_run_copy):
    data, run = tiny_run_copy
    PostProcess(threshold=0.3, min_area=50).save(run / "postprocess.json")
    assert run_cli("predict", "--data-dir", data, "--run-dir", run, "--out", tmp_path / "p.csv",
                   "--workers", 2, "--quiet") == 0
    for layout in LAYOUTS:  # both mounts seen on Kaggle
        out, weights, working = run_kernel(tmp_path, data, run, layout=layout)
        assert sorted(p.name for p in weights.glob("*.pt")) == ["fold0.pt", "fold1.pt"]
        assert ".zip" in out.split("pipeline ")[1].splitlines()[0]
        assert str(Path(__file__).resolve().parent.parent) not in out
        assert (working / "submission.csv").read_bytes() == (tmp_path / "p.csv").read_bytes()
        assert "start-up" in out


@pytest.mark.slow
def test_compiled_kernel_writes_what_compiled_predict_writes(tmp_path, tiny_run_copy):
    data, run = tiny_run_copy
    PostProcess(threshold=0.3, min_area=50).save(run / "postprocess.json")
    assert run_cli("predict", "--data-dir", data, "--run-dir", run, "--out", tmp_path / "p.csv",
                   "--workers", 0, "--compile", "--quiet") == 0
    out, _, working = run_kernel(tmp_path, data, run, compile_models=True)
    assert "compiled at the first batch" in out
    assert (working / "submission.csv").read_bytes() == (tmp_path / "p.csv").read_bytes()


@pytest.mark.slow
def test_kernel_runs_a_gated_unet_without_smp_or_timm(tmp_path):
    """The weights dataset carries each smp model as a torch.export program: the kernel runs it
    with torch alone and writes the same bytes as `predict` with smp installed."""
    data = tmp_path / "data"
    assert run_cli("synth", "--out", data, "--n-train", 8, "--n-test", 4, "--seed", 6,
                   "--workers", 1, "--quiet") == 0
    run = tmp_path / "run"
    assert run_cli("folds", "--data-dir", data, "--run-dir", run, "--n-folds", 2) == 0
    assert run_cli("train", "--data-dir", data, "--run-dir", run, "--model", "unet", "--gate",
                   "--epochs", 1, "--max-steps", 1, *TINY_TRAIN) == 0
    PostProcess(threshold=0.3, min_area=50, presence=0.2).save(run / "postprocess.json")
    assert run_cli("predict", "--data-dir", data, "--run-dir", run, "--out", tmp_path / "p.csv",
                   "--workers", 0, "--quiet") == 0
    _, weights, working = run_kernel(tmp_path, data, run,
                                     blocked=("segmentation_models_pytorch", "timm"))
    assert sorted(p.name for p in weights.glob("fold*")) == ["fold0.pt", "fold0.pt2",
                                                             "fold1.pt", "fold1.pt2"]
    assert (working / "submission.csv").read_bytes() == (tmp_path / "p.csv").read_bytes()


@pytest.mark.slow
def test_the_kernel_predicts_with_the_tta_cv_tuned_with(tmp_path, tiny_run_copy, caplog):
    """cv --tta hflip records hflip with the tuned post-processing; predict and the packed
    kernel then use it by default and write the same bytes as predict --tta hflip."""
    data, run = tiny_run_copy
    assert run_cli("cv", "--data-dir", data, "--run-dir", run, "--tta", "hflip",
                   "--workers", 0, "--quiet") == 0
    assert PostProcess.load(run / "postprocess.json").inference == {"tta": "hflip",
                                                                    "decode": "scaled"}
    outputs = {}
    runs = (("hflip", ["--tta", "hflip"]), ("recorded", []),
            ("none", ["--tta", "none", "--accept-postprocess"]))
    for name, flags in runs:
        caplog.clear()
        assert run_cli("predict", "--data-dir", data, "--run-dir", run, "--out",
                       tmp_path / f"{name}.csv", "--workers", 0, "--quiet", *flags) == 0
        outputs[name] = (tmp_path / f"{name}.csv").read_bytes()
        warned = "--tta none differs from --tta hflip" in caplog.text
        assert warned == (name == "none"), caplog.text
    # Without --accept-postprocess, another TTA than the tuned one is refused, writing nothing.
    caplog.clear()
    assert run_cli("predict", "--data-dir", data, "--run-dir", run, "--out",
                   tmp_path / "refused.csv", "--workers", 0, "--quiet", "--tta", "none") == 1
    assert "--tta none differs from --tta hflip" in caplog.text
    assert "--accept-postprocess" in caplog.text and not (tmp_path / "refused.csv").exists()
    assert outputs["recorded"] == outputs["hflip"]
    out, _, working = run_kernel(tmp_path, data, run)
    assert "inference: tta hflip, decode scaled" in out
    assert (working / "submission.csv").read_bytes() == outputs["hflip"]


@pytest.mark.slow
def test_the_compiled_kernel_runs_an_exported_zoo_model(tmp_path):
    """make kernel KERNEL_ARGS=--compile with a zoo model: the exported program (which refuses
    .eval()) compiles, and the kernel writes what compiled predict writes."""
    data = tmp_path / "data"
    assert run_cli("synth", "--out", data, "--n-train", 8, "--n-test", 2, "--seed", 6,
                   "--workers", 1, "--quiet") == 0
    run = tmp_path / "run"
    assert run_cli("folds", "--data-dir", data, "--run-dir", run, "--n-folds", 2) == 0
    assert run_cli("train", "--data-dir", data, "--run-dir", run, "--model", "unet",
                   "--fold", 0, "--epochs", 1, "--max-steps", 1, *TINY_TRAIN) == 0
    PostProcess(threshold=0.3, min_area=50).save(run / "postprocess.json")
    assert run_cli("predict", "--data-dir", data, "--run-dir", run, "--out", tmp_path / "p.csv",
                   "--workers", 0, "--compile", "--quiet") == 0
    out, weights, working = run_kernel(tmp_path, data, run, compile_models=True,
                                       blocked=("segmentation_models_pytorch", "timm"))
    assert sorted(p.name for p in weights.glob("fold*")) == ["fold0.pt", "fold0.pt2"]
    assert "compiled at the first batch" in out and "compile on" in out
    assert (working / "submission.csv").read_bytes() == (tmp_path / "p.csv").read_bytes()


@pytest.mark.slow
def test_the_kernel_predicts_what_predict_predicts_for_a_mixed_ensemble(tmp_path, tiny_run_copy):
    """An ensemble of an FCN32 (softmax, no gate) and a gated sigmoid Unet, weighted 2:1: the
    kernel, in a Python without smp and timm, writes the bytes predict writes, reports each
    model's passes and checks its predictions for drift."""
    data, fcn = tiny_run_copy
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    shutil.copy(fcn / "folds.csv", zoo / "folds.csv")
    assert run_cli("train", "--data-dir", data, "--run-dir", zoo, "--model", "unet", "--gate",
                   "--head", "sigmoid", "--loss", "bce", "--epochs", 1, "--max-steps", 1,
                   *TINY_TRAIN) == 0
    ens = tmp_path / "ens"
    for run in (fcn, zoo):
        assert run_cli("cv", "--data-dir", data, "--run-dir", run, "--workers", 0,
                       "--quiet") == 0
    assert run_cli("ensemble", "--run-dir", fcn, "--run-dir", zoo, "--weights", "2,1",
                   "--out", ens) == 0
    assert run_cli("cv", "--data-dir", data, "--run-dir", ens, "--workers", 0, "--quiet") == 0
    # low thresholds: masks on every image, so the comparison is not of empty files
    PostProcess(head="sigmoid", threshold=0.1, min_area=0, presence=0.05).save(
        ens / "postprocess.json")
    assert run_cli("predict", "--data-dir", data, "--run-dir", ens, "--out", tmp_path / "p.csv",
                   "--workers", 0, "--quiet") == 0
    rows = [line.split(",") for line in (tmp_path / "p.csv").read_text().splitlines()[1:]]
    assert sum(bool(row[1]) for row in rows) >= len(rows) // 2   # ImageId,EncodedPixels,ClassId
    out, weights, working = run_kernel(tmp_path, data, ens,
                                       blocked=("segmentation_models_pytorch", "timm"))
    assert sorted(p.name for p in weights.glob("*-fold*")) == [
        "run-fold0.pt", "run-fold1.pt", "zoo-fold0.pt", "zoo-fold0.pt2", "zoo-fold1.pt",
        "zoo-fold1.pt2"]
    listed = json.loads((weights / "models.json").read_text())["models"]
    assert [(m["file"], m["weight"]) for m in listed] == [
        ("run-fold0.pt", 1.0), ("run-fold1.pt", 1.0), ("zoo-fold0.pt", 0.5),
        ("zoo-fold1.pt", 0.5)]
    assert (working / "submission.csv").read_bytes() == (tmp_path / "p.csv").read_bytes()
    assert out.count("image passes/s") == 4 and "drift check:" in out
    assert (weights / "ensemble.json").is_file() and not (weights / "config.json").exists()


@pytest.mark.slow
def test_kernel_failures_are_one_line_with_the_fix(tmp_path, tiny_run_copy):
    """Missing weights, a weights folder without checkpoints, a file that is no checkpoint,
    no test images: each a one-line error (no traceback, no flag the kernel lacks), exit 1;
    an unreadable test image is predicted defect-free, not a lost submission."""
    data, run = tiny_run_copy
    PostProcess(threshold=0.3, min_area=50).save(run / "postprocess.json")
    inputs, working, temp = tmp_path / "input", tmp_path / "working", tmp_path / "temp"
    competition = inputs / "competitions" / "severstal-steel-defect-detection"
    competition.mkdir(parents=True)
    shutil.copy(data / "sample_submission.csv", competition)
    shutil.copytree(data / "test_images", competition / "test_images")
    working.mkdir()
    temp.mkdir()
    script = pack.build(tmp_path / "k", "me/severstal-kernel", None, "me/severstal-weights",
                        "test")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "KAGGLE_INPUT_ROOT": str(inputs),
           "KAGGLE_WORKING_ROOT": str(working), "OMP_NUM_THREADS": "2", "TMPDIR": str(temp)}

    def kernel() -> tuple[int, str]:
        result = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                                text=True, timeout=300)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert not list(temp.glob("pipeline-*.zip"))   # the temporary zip goes, failure or not
        if result.returncode:
            assert len(lines) == 1 and "--checkpoints" not in lines[0], result.stderr[-2000:]
        return result.returncode, lines[-1] if lines else ""

    assert kernel() == (1, "error: the weights dataset me/severstal-weights is not "
                        f"attached: no postprocess.json in {inputs / 'severstal-weights'} or "
                        f"{inputs / 'datasets/me/severstal-weights'} (folders holding one: "
                        "none); add me/severstal-weights as a data source, or rebuild the "
                        "kernel for the attached one (`python -m pipeline kernel "
                        "--weights-dataset OWNER/SLUG`)")
    weights = inputs / "datasets" / "me" / "severstal-weights"
    stage_weights(ensembles.resolve(run), None, "me/severstal-weights", "Severstal weights",
                  weights)
    staged = sorted(weights.glob("*.pt"))
    for path in staged:
        path.rename(path.with_suffix(".bak"))
    (weights / "models.json").unlink()
    rc, line = kernel()
    assert rc == 1 and "holds no checkpoint (*.pt)" in line and "make upload-weights" in line
    staged[0].write_text("not a checkpoint")
    rc, line = kernel()
    assert rc == 1 and str(staged[0]) in line
    for path in staged:
        path.with_suffix(".bak").rename(path)
    victim = sorted((competition / "test_images").iterdir())[0]
    victim.write_bytes(b"not a jpeg")
    rc, line = kernel()
    assert rc == 0 and "1 unreadable image(s) predicted defect-free" in line
    # Defect-free: its rows are the sample's (the background row of the current format).
    rows = (working / "submission.csv").read_text().splitlines()
    sample_rows = (competition / "sample_submission.csv").read_text().splitlines()
    assert [r for r in rows if r.startswith(victim.name)] == \
        [r for r in sample_rows if r.startswith(victim.name)]
    shutil.rmtree(competition / "test_images")
    (competition / "test_images").mkdir()
    rc, line = kernel()
    assert rc == 1 and "are not in" in line and "test_images" in line
