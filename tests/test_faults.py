"""The pipeline under faults: damaged inputs, failing writes, file-system surprises."""

import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from helpers import TINY_TRAIN, run_cli

from pipeline.data import images, synthetic

TINY = ["--encoder-weights", "none", "--scale", "0.125", "--crop", "32x64", "--batch-size", "2",
        "--workers", "0", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """6 synthetic training images and 2 test images, with their test truth."""
    root = tmp_path_factory.mktemp("faults-data")
    synthetic.write_dataset(root, n_train=6, n_test=2, seed=5, quiet=True, workers=1)
    return root


def copy_of(tiny: Path, tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(tiny, data)
    return data


def one_line_error(err: str) -> str:
    """The single ``error: ...`` line of stderr (and that it is the only error, no traceback)."""
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


# --- a truncated JPEG ------------------------------------------------------------------------

def truncate(path: Path, keep: float = 0.6) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


def test_a_truncated_jpeg_is_refused_naming_the_file(real_sample, tmp_path):
    path = tmp_path / "cut.jpg"
    shutil.copy(next((real_sample / "train_images").iterdir()), path)
    truncate(path)
    assert cv2.imread(str(path)) is not None   # OpenCV alone half-decodes it, grey rows and all
    with pytest.raises(ValueError, match=f"image {path} cannot be decoded \\(truncated"):
        images.read_image(path)


def test_zero_padding_after_the_end_marker_is_accepted(real_sample, tmp_path):
    source = next((real_sample / "train_images").iterdir())
    padded = tmp_path / "padded.jpg"
    padded.write_bytes(source.read_bytes() + b"\0" * 100)
    assert np.array_equal(images.read_image(padded), images.read_image(source))


def test_training_stops_at_or_skips_a_truncated_jpeg(tiny, tmp_path, capsys):
    data = copy_of(tiny, tmp_path)
    victim = sorted((data / "train_images").iterdir())[0]
    truncate(victim)
    run = tmp_path / "run"
    assert run_cli("folds", "--data-dir", data, "--run-dir", run, "--n-folds", 2) == 0
    args = ["train", "--data-dir", data, "--run-dir", run, "--fold", "0,1", "--epochs", 1, *TINY]
    capsys.readouterr()
    assert run_cli(*args) == 1
    assert f"image {victim} cannot be decoded (truncated" in one_line_error(capsys.readouterr().err)
    assert run_cli(*args, "--skip-bad-images") == 0
    assert f"warning: skipped: image {victim} cannot be decoded" in capsys.readouterr().err


# --- line numbers of train.csv count blank lines -----------------------------------------------

@pytest.mark.parametrize("text, message", [
    ("ImageId,ClassId,EncodedPixels\na.jpg,1,1 2\n\n\nb.jpg,7,1 2\n",
     "train.csv:5: unknown ClassId"),
    ("ImageId,ClassId,EncodedPixels\n\na.jpg,1,1 2\n\nb.jpg,2,1 2 3\n", r"train.csv:5: .*odd"),
    ("ImageId,ClassId,EncodedPixels\na.jpg,1,1 2\n\nb.jpg,2,1 2\na.jpg,1,9 2\n",
     "lines 2 and 5 both label image a.jpg class 1"),
    ("ImageId_ClassId,EncodedPixels\na.jpg_1,1 2\n\n\nb.jpg2,\n", r"train.csv:5: .*not '<image>"),
])
def test_train_csv_errors_name_the_files_true_line(tmp_path, text, message):
    from pipeline.data import labels
    path = tmp_path / "train.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        labels.read_labels(path)


def test_an_empty_or_unparsable_train_csv_names_the_file(tmp_path):
    from pipeline.data import labels
    path = tmp_path / "train.csv"
    path.write_text("")
    with pytest.raises(ValueError, match=f"{path} is empty"):
        labels.read_labels(path)
    path.write_text('ImageId,ClassId,EncodedPixels\na.jpg,1,"1 2\n')
    with pytest.raises(ValueError, match=f"{path} is not a readable CSV file"):
        labels.read_labels(path)


# --- archives: bombs, duplicates, corrupt members ---------------------------------------------

BOMB_BYTES = 200 * 2**20


@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> Path:
    """A zip whose one member is 200 MiB of zeros, deflated to about 200 KiB."""
    import zipfile
    path = tmp_path_factory.mktemp("bomb") / "bomb.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("train_images/zeros.jpg", "w", force_zip64=True) as member:
            chunk = bytes(2**22)
            for _ in range(BOMB_BYTES // len(chunk)):
                member.write(chunk)
    return path


def test_a_zip_bomb_is_refused_from_the_directory_before_writing(bomb, tmp_path):
    from pipeline.kaggle import download
    assert bomb.stat().st_size < BOMB_BYTES / 500
    with pytest.raises(ValueError, match="'train_images/zeros.jpg' expands .* zip bomb"):
        download.extract_safely(bomb, tmp_path / "out", quiet=True)
    with pytest.raises(ValueError, match=f"{BOMB_BYTES} bytes uncompressed, over the limit"):
        download.extract_safely(bomb, tmp_path / "out", quiet=True, max_total=100 * 2**20,
                                max_ratio=10_000)
    assert not (tmp_path / "out").exists()


def stored_zip(path: Path, members: list[tuple[str, bytes]]) -> Path:
    import warnings
    import zipfile
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # zipfile warns about the duplicate names we want
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
            for name, data in members:
                zf.writestr(name, data)
    return path


@pytest.mark.parametrize("second", ["train.csv", "./train.csv", "sub/../train.csv"])
def test_duplicate_members_are_refused(tmp_path, second):
    from pipeline.kaggle import download
    archive = stored_zip(tmp_path / "dup.zip", [("train.csv", b"a"), (second, b"b")])
    with pytest.raises(ValueError, match="duplicate members"):
        download.extract_safely(archive, tmp_path / "out", quiet=True)
    assert not (tmp_path / "out").exists()


def test_a_corrupt_member_names_itself_and_the_archive_is_fetched_again(tmp_path, monkeypatch):
    from pipeline.config import DataPaths
    from pipeline.kaggle import api, download
    data = DataPaths(tmp_path / "data")
    archive = download.archive_path(data)
    archive.parent.mkdir()
    payload = b"ImageId,ClassId,EncodedPixels\n" + b"a.jpg,1,1 10\n" * 50
    stored_zip(archive, [("sample_submission.csv", b"x"), ("train.csv", payload)])
    raw = bytearray(archive.read_bytes())
    at = raw.index(payload) + 40
    raw[at:at + 4] = b"XXXX"              # flip bytes inside the stored member: a CRC error
    archive.write_bytes(bytes(raw))
    monkeypatch.setattr(api, "download_archive", lambda folder, quiet: archive)
    with pytest.raises(ValueError, match=f"{archive}: member 'train.csv' is corrupt .*CRC"):
        download.download(data, quiet=True)
    assert not archive.parent.exists()    # deleted: the next download fetches it again
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# --- every file read is checked in full, named in the error -----------------------------------

CURRENT = "ImageId,EncodedPixels,ClassId\n"
ORIGINAL = "ImageId_ClassId,EncodedPixels\n"


def original_rows(image_id: str, classes: str = "1234") -> str:
    return "".join(f"{image_id}_{c},\n" for c in classes)


@pytest.mark.parametrize("text, message", [
    (CURRENT + "a.jpg,1 409600,0\na.jpg,1 409600,0\n", ":3: the row 'a.jpg' repeats"),
    (CURRENT + "a.jpg,1 409600,0\nb.jpg,1 409600,3\n", ":3: the row 'b.jpg' has a class other"),
    (CURRENT + "a.jpg,1 409600,0\n,1 409600,0\n", ":3: the row '' has no image id"),
    (CURRENT, "has a header but no rows"),
    (ORIGINAL + original_rows("a.jpg") + original_rows("b.jpg", "123"),
     "image b.jpg has 3 rows, expected 4"),
    (ORIGINAL + original_rows("a.jpg") + "a.jpg_5,\n", ":6: the row 'a.jpg_5' has a class"),
    (ORIGINAL + original_rows("a.jpg", "1123"), ":3: the row 'a.jpg_1' repeats"),
    (ORIGINAL + original_rows("a.jpg") + "b.jpg,\n", ":6: the row 'b.jpg' is not '<image>_"),
])
def test_a_sample_submission_is_checked_in_full(tmp_path, text, message):
    from pipeline.inference import submission
    path = tmp_path / "sample_submission.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=f"{path}.*{message}"):
        submission.read_sample(path)


def test_well_formed_samples_of_both_formats_read(tmp_path):
    from pipeline.inference import submission
    path = tmp_path / "s.csv"
    path.write_text(ORIGINAL + original_rows("a.jpg") + "\n" + original_rows("b.jpg"))
    assert submission.read_sample(path).image_ids == ["a.jpg", "b.jpg"]
    path.write_text(CURRENT + "a.jpg,1 409600,0\nb.jpg,1 409600,0\n")
    assert submission.read_sample(path).format == "current"


GOOD_POSTPROCESS = {"head": "softmax", "threshold": [None, 0.5, 0.4, None],
                    "min_area": [0, 10, 20, 30], "min_component": [0, 0, 0, 0],
                    "presence": [None, None, None, None]}


@pytest.mark.parametrize("change, message", [
    ({"min_area": None}, "key 'min_area' is missing"),
    ({"presence": None}, "key 'presence' is missing"),
    ({"extra": 1}, "unknown key 'extra'"),
    ({"threshold": [0.5, 0.5, 0.5]}, "key 'threshold' must be a list of 4"),
    ({"threshold": ["0.5", 0.5, 0.5, 0.5]}, "key 'threshold' must be a list of 4"),
    ({"min_area": [0, 1.5, 0, 0]}, "key 'min_area' must be a list of 4 integers"),
    ({"min_area": [0, True, 0, 0]}, "key 'min_area' must be a list of 4 integers"),
    ({"min_area": [0, -1, 0, 0]}, "min_area values must be >= 0"),
    ({"threshold": [0.5, 1.5, 0.5, 0.5]}, r"threshold values must be in \[0, 1\)"),
    ({"head": 3}, "key 'head' must be a string"),
    ({"head": "tanh"}, "unknown head 'tanh'"),
])
def test_postprocess_json_is_checked_key_by_key(tmp_path, change, message):
    import json
    from pipeline.inference.postprocess import PostProcess
    values = {k: v for k, v in {**GOOD_POSTPROCESS, **change}.items() if v is not None
              or k not in change}
    path = tmp_path / "postprocess.json"
    path.write_text(json.dumps(values))
    with pytest.raises(ValueError, match=f"{path}: .*{message}"):
        PostProcess.load(path)


def test_a_good_postprocess_json_loads(tmp_path):
    import json
    from pipeline.inference.postprocess import PostProcess
    path = tmp_path / "postprocess.json"
    path.write_text(json.dumps(GOOD_POSTPROCESS))
    assert PostProcess.load(path).min_area == (0, 10, 20, 30)
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match=f"{path} is not a post-processing file"):
        PostProcess.load(path)


@pytest.mark.parametrize("content", [
    "tensor", "state_dict", "no_model_info", "list"])
def test_anything_but_a_pipeline_checkpoint_is_refused_naming_the_file(tmp_path, content):
    import torch
    from pipeline import checkpoint
    objects = {"tensor": torch.zeros(3), "state_dict": {"conv.weight": torch.zeros(2)},
               "no_model_info": {"model": {"w": torch.zeros(1)}, "epoch": 0},
               "list": [1, 2]}
    path = tmp_path / "best.pt"
    torch.save(objects[content], path)
    with pytest.raises(ValueError, match=f"{path} holds .*not a checkpoint of this pipeline"):
        checkpoint.load(path)


def write_folds_csv(path: Path, rows: str) -> Path:
    path.write_text("ImageId,fold,classes\n" + rows)
    return path


@pytest.mark.parametrize("rows, message", [
    ("a.jpg,0,0\nb.jpg,1,0\na.jpg,1,0\n", ":4: the row repeats an ImageId"),
    ("a.jpg,0,0\nb.jpg,x,0\n", ":3: the row has a fold that is not a number"),
    ("a.jpg,0,0\nb.jpg,-1,0\n", ":3: the row has a fold that is not a number"),
    ("a.jpg,0,0\n\nb.jpg,1.5,0\n", ":4: the row has a fold that is not a number"),
    ("a.jpg,0,0\nb.jpg,2,0\n", r": folds \[0, 2\], expected 0..k-1"),
    ("a.jpg,0,0\n,1,0\n", ":3: the row has no ImageId"),
])
def test_folds_csv_is_checked_in_full(tmp_path, rows, message):
    from pipeline.data import folds
    path = write_folds_csv(tmp_path / "folds.csv", rows)
    with pytest.raises(ValueError, match=f"{path}{message}"):
        folds.read_folds(path)


def test_folds_csv_without_a_fold_column_is_named(tmp_path):
    from pipeline.data import folds
    path = tmp_path / "folds.csv"
    path.write_text("ImageId,split\na.jpg,0\n")
    with pytest.raises(ValueError, match=f"{path}: no column fold"):
        folds.read_folds(path)


# --- file-system faults: one line, before the long work ----------------------------------------

needs_permissions = pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permissions")


def refused(capsys, *argv) -> str:
    """Run the CLI, expect exit 1, return its single error line."""
    capsys.readouterr()
    assert run_cli(*argv) == 1
    return one_line_error(capsys.readouterr().err)


def test_predict_refuses_an_unwritable_out_before_predicting(tmp_path, capsys, monkeypatch):
    from pipeline.inference import predict
    monkeypatch.setattr(predict, "load_models", lambda *a, **k: pytest.fail("predicted"))
    folder = tmp_path / "folder"
    folder.mkdir()
    line = refused(capsys, "predict", "--out", folder)
    assert line == f"error: --out {folder} is a directory: give a file name, e.g. " \
                   f"{folder / 'submission.csv'}"
    a_file = tmp_path / "file"
    a_file.write_text("x")
    line = refused(capsys, "predict", "--out", a_file / "sub" / "submission.csv")
    assert f"{a_file} is a file, not a directory" in line


@needs_permissions
def test_predict_refuses_a_read_only_out_directory(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    assert "is not writable" in refused(capsys, "predict", "--out", locked / "s.csv")


@pytest.mark.parametrize("command, flag", [
    ("train", "--run-dir"), ("train", "--data-dir"), ("cv", "--run-dir"),
    ("predict", "--run-dir"), ("predict", "--data-dir"), ("stats", "--data-dir"),
])
def test_a_file_where_a_folder_belongs_is_one_line(tmp_path, capsys, command, flag):
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("x")
    extra = ["--out", tmp_path / "s.csv"] if command == "predict" else []
    line = refused(capsys, command, flag, a_file, *extra)
    assert line.startswith(f"error: {flag} {a_file} is a file, not a directory")


def test_train_in_a_run_whose_checkpoints_is_a_file(tiny, tmp_path, capsys):
    run = tmp_path / "run"
    assert run_cli("folds", "--data-dir", tiny, "--run-dir", run, "--n-folds", 2) == 0
    (run / "checkpoints").write_text("x")
    line = refused(capsys, "train", "--data-dir", tiny, "--run-dir", run, "--fold", 0, *TINY)
    assert f"cannot create {run / 'checkpoints' / 'fold0'}" in line
    assert not (run / "config.json").exists()


@needs_permissions
def test_train_in_a_read_only_run_dir(tiny, tmp_path, capsys):
    run = tmp_path / "run"
    assert run_cli("folds", "--data-dir", tiny, "--run-dir", run, "--n-folds", 2) == 0
    run.chmod(0o555)
    line = refused(capsys, "train", "--data-dir", tiny, "--run-dir", run, "--fold", 0, *TINY)
    assert "Permission denied" in line and "make the run directory writable" in line


# --- outputs replace a good file only when valid -----------------------------------------------

def test_an_invalid_submission_never_replaces_the_previous_one(real_sample, tmp_path,
                                                               monkeypatch):
    from pipeline import distributed
    from pipeline.inference import postprocess, predict, submission
    sample = submission.read_sample(real_sample / "sample_submission_full.csv")
    out = tmp_path / "submission.csv"
    out.write_bytes(b"the previous, good submission\n")
    broken = {image_id: ["5 3 1 2", "", "", ""] for image_id in sample.image_ids}  # unsorted
    monkeypatch.setattr(predict, "predict_rles", lambda *a, **k: broken)
    context = distributed.setup("cpu")
    with pytest.raises(ValueError, match=f"{out} is not a valid submission .*previous file"):
        predict.write_submission(None, tmp_path, sample, postprocess.PostProcess(), context, out)
    assert out.read_bytes() == b"the previous, good submission\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["submission.csv"]
    fine = {image_id: ["1 3", "", "", ""] for image_id in sample.image_ids}
    monkeypatch.setattr(predict, "predict_rles", lambda *a, **k: fine)
    _, table = predict.write_submission(None, tmp_path, sample, postprocess.PostProcess(),
                                        context, out)
    assert len(table) == len(sample.image_ids) and out.read_text().count("1 3") == len(table)


def oof_of(seed: int):
    """A small OOF accumulator (6 images, 32x64) whose tuning depends on the seed."""
    import torch
    from pipeline.inference import oof, tuning
    generator = torch.Generator().manual_seed(seed)
    probs = torch.rand((6, 5, 32, 64), generator=generator).softmax(dim=1)[:, 1:]
    truth = probs > {0: 0.3, 7: 0.22}[seed]   # the tuned thresholds follow
    accumulator = oof.OOFAccumulator("softmax", tuning.default_thresholds("softmax"))
    accumulator.add([f"{i}.jpg" for i in range(6)], probs, truth)
    return accumulator, [], [{"name": "fake", "head": "softmax", "gate": False}]


@pytest.mark.parametrize("kill_at", [pytest.param(n, marks=pytest.mark.slow) for n in (1, 2, 3)]
                         + [4, 5, 6])
def test_cv_never_leaves_new_settings_beside_an_old_report(tmp_path, monkeypatch, kill_at):
    """cv writes 3 pictures, oof.npz, cv.json, postprocess.json; a kill at any of them leaves
    the new settings only beside the new report."""
    import contextlib
    import json
    from pipeline import fileio
    from pipeline.inference import oof
    from pipeline.inference.config import InferenceConfig
    from pipeline.inference.postprocess import PostProcess
    CPU = InferenceConfig(device="cpu", quiet=True)
    run = tmp_path / "run"
    run.mkdir()
    rows = "".join(f"{i}.jpg,{i % 2}\n" for i in range(6))
    (run / "folds.csv").write_text("ImageId,fold\n" + rows)
    monkeypatch.setattr(oof, "collect", lambda *a, **k: oof_of(0))
    oof.run_cv(str(run), str(tmp_path), CPU, [0])
    files = sorted(p for p in run.rglob("*") if p.is_file() and p.name != "folds.csv")
    old = {p: p.read_bytes() for p in files}
    assert {p.name for p in files} == {"confusion_default.png", "confusion_tuned.png",
                                       "min_area.png", "oof.npz", "cv.json", "postprocess.json"}
    monkeypatch.setattr(oof, "collect", lambda *a, **k: oof_of(7))
    real, calls = fileio.atomic_path, []

    @contextlib.contextmanager
    def dying(path):
        calls.append(Path(path).name)
        if len(calls) == kill_at:
            raise KeyboardInterrupt(path)
        with real(path) as tmp:
            yield tmp

    monkeypatch.setattr(fileio, "atomic_path", dying)
    with pytest.raises(KeyboardInterrupt):
        oof.run_cv(str(run), str(tmp_path), CPU, [0])
    assert calls[-1] == ["confusion_default.png", "confusion_tuned.png", "min_area.png",
                         "oof.npz", "cv.json", "postprocess.json"][kill_at - 1]
    settings = run / "postprocess.json"
    report = json.loads((run / "reports" / "cv.json").read_text())
    assert settings.read_bytes() == old[settings]         # the last write never happened
    if report != json.loads(old[run / "reports" / "cv.json"]):
        assert kill_at == 6    # a new report only once every picture is new
    assert not list(run.rglob("*.tmp"))
    monkeypatch.setattr(fileio, "atomic_path", real)
    report = oof.run_cv(str(run), str(tmp_path), CPU, [0])
    assert PostProcess.load(settings) == PostProcess(**report["postprocess"])
    assert settings.read_bytes() != old[settings]        # the seeds tune differently


def test_score_refuses_a_truth_file_of_other_images(tiny_run, tmp_path, capsys):
    """train.csv passed as the truth of a test submission: none of its images are the
    submission's, so every pair would score as defect-free; refused in one line."""
    from helpers import run_cli

    data, run = tiny_run
    out = tmp_path / "s.csv"
    assert run_cli("predict", "--data-dir", data, "--run-dir", run, "--out", out,
                   "--workers", 0, "--quiet") == 0
    capsys.readouterr()
    assert run_cli("score", out, "--sample", data / "sample_submission.csv", "--truth",
                   data / "train.csv") == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "labels none of the" in err
    assert run_cli("score", out, "--sample", data / "sample_submission.csv", "--truth",
                   data / "test_truth.csv") == 0


def test_a_diverged_run_saves_no_checkpoint_and_predict_refuses_nan_weights(tiny_run, tmp_path,
                                                                            capsys):
    """--lr 1e10: training stops at the first epoch whose weights or validation loss are not
    finite, before anything of it is saved; a checkpoint holding NaN weights is refused."""
    import shutil

    import torch

    from pipeline import checkpoint
    from pipeline.inference import predict

    data, run = tiny_run
    diverged = tmp_path / "diverged"
    diverged.mkdir()
    shutil.copy(run / "folds.csv", diverged / "folds.csv")
    assert run_cli("train", "--data-dir", data, "--run-dir", diverged, "--fold", 0, "--epochs",
                   2, *TINY_TRAIN, "--lr", "1e10") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert "training diverged" in err[-1] and "nothing was saved" in err[-1]
    assert not list((diverged / "checkpoints").rglob("*.pt"))
    state = checkpoint.load(run / "checkpoints" / "fold0" / "best.pt")
    name = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][name] = torch.full_like(state["model"][name], float("nan"))
    torch.save(state, tmp_path / "nan.pt")
    with pytest.raises(ValueError, match=f"nan.pt: weight {name} holds NaN"):
        predict.load_models([tmp_path / "nan.pt"], torch.device("cpu"))


# --- images are read as stored, under any JPEG name ---------------------------------------------

def with_orientation(jpeg: bytes, orientation: int) -> bytes:
    """The same JPEG (same pixel data) with an EXIF orientation tag put before its frame."""
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = orientation
    payload = exif.tobytes()
    return jpeg[:2] + b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload + jpeg[2:]


@pytest.mark.parametrize("orientation", [3, 6])
@pytest.mark.parametrize("reduce", [1, 2])
def test_an_exif_orientation_never_turns_the_image(real_sample, tmp_path, orientation, reduce):
    """Orientation 3 made OpenCV turn the image by 180 degrees (its masks no longer on it),
    orientation 6 made a 256x1600 file fail its size check as 1600x256."""
    source = sorted((real_sample / "train_images").iterdir())[0]
    tagged = tmp_path / source.name
    tagged.write_bytes(with_orientation(source.read_bytes(), orientation))
    assert np.array_equal(images.read_image(tagged, reduce=reduce),
                          images.read_image(source, reduce=reduce))


def test_jpg_jpeg_and_upper_case_names_are_images_everywhere(real_sample, tmp_path):
    """A defect-free training image named .JPG was dropped from training; a .jpeg test image
    was reported missing while it was there."""
    from pipeline.config import DataPaths
    from pipeline.data import labels

    sources = sorted((real_sample / "train_images").iterdir())[:3]
    names = ["a.JPG", "b.jpeg", "c.jpg"]
    folder = tmp_path / "train_images"
    folder.mkdir()
    for source, name in zip(sources, names):
        shutil.copy(source, folder / name)
    (folder / "notes.txt").write_text("not an image")
    (tmp_path / "train.csv").write_text("ImageId,ClassId,EncodedPixels\nb.jpeg,1,1 10\n")
    assert images.list_images(folder) == names
    _, ids = labels.load_train(DataPaths(tmp_path))
    assert ids == names      # a.JPG, defect-free, is a training image like the others


# --- a write that fails (a full disk) names its file --------------------------------------------

LIMITED = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # a too-large write fails with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
from pipeline.cli import main
sys.exit(main(sys.argv[1:]))
"""


def run_limited(limit: int, *args) -> tuple[int, str]:
    """The CLI in a process that cannot write files beyond ``limit`` bytes (as on a full
    disk, the write fails part way): exit status and the one error line."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", LIMITED.format(limit=limit),
                             *map(str, args)], capture_output=True, text=True, timeout=300)
    return result.returncode, one_line_error(result.stderr)


@pytest.mark.slow
def test_a_failed_write_names_the_file_and_keeps_the_previous_one(tiny_run_copy, tmp_path):
    """predict said `[Errno 28] No space left on device` and train `[enforce fail at
    inline_container.cc:672] . unexpected pos`, naming no file."""
    data, run = tiny_run_copy
    out = tmp_path / "submission.csv"
    out.write_text("the previous submission\n")
    rc, line = run_limited(60, "predict", "--data-dir", data, "--run-dir", run, "--out", out,
                           "--workers", 0, "--quiet")
    assert rc == 1 and f"cannot write {out}: File too large" in line
    assert out.read_text() == "the previous submission\n"
    assert not list(tmp_path.glob(".*.tmp"))
    best = run / "checkpoints" / "fold0" / "best.pt"
    kept = best.read_bytes()
    rc, line = run_limited(1_000_000, "train", "--data-dir", data, "--run-dir", run, "--fold", 0,
                           "--epochs", 1, "--max-steps", 1, *TINY_TRAIN)
    assert rc == 1 and "cannot write " in line and "checkpoints/fold0/" in line
    assert "is the disk full?" in line and best.read_bytes() == kept


def test_predict_refuses_overflowing_weights_and_names_a_bad_image_without_train_flags(
        tiny_run_copy, tmp_path, capsys):
    """Finite weights whose outputs overflow gave NaN probabilities, predicted as no defect;
    an unreadable test image's error advised --skip-bad-images, which only train has."""
    import torch

    from pipeline import checkpoint

    data, run = tiny_run_copy
    predict = ["predict", "--data-dir", data, "--run-dir", run, "--workers", 0, "--quiet",
               "--out", tmp_path / "s.csv"]
    victim = sorted((data / "test_images").iterdir())[0]
    truncate(victim)
    capsys.readouterr()
    assert run_cli(*predict) == 1
    line = one_line_error(capsys.readouterr().err)
    assert f"image {victim} cannot be decoded" in line and "--skip-bad-images" not in line
    shutil.copy(sorted((data / "train_images").iterdir())[0], victim)
    best = run / "checkpoints" / "fold0" / "best.pt"
    state = checkpoint.load(best)
    for name, tensor in state["model"].items():
        if tensor.is_floating_point() and name.endswith("weight"):
            state["model"][name] = tensor * 1e30   # finite, but the outputs are not
    torch.save(state, best)
    assert run_cli(*predict) == 1
    line = one_line_error(capsys.readouterr().err)
    assert "non-finite probabilities" in line and str(best) in line
    assert not (tmp_path / "s.csv").exists()
