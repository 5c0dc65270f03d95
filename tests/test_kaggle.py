"""Kaggle commands end to end: our code and the real ``kaggle`` client against a local server."""

import base64
import io
import json
import logging
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from fake_kaggle import COMPETITION, ETAG, KEY, TOKEN, USERNAME, fake_kaggle_fixture  # noqa: F401

from pipeline import checkpoint, cli, config, console
from pipeline.inference.postprocess import PostProcess
from pipeline.kaggle import api, download, kernels, submissions, weights

SAMPLE = "ImageId,EncodedPixels,ClassId\nc.jpg,1 409600,0\nd.jpg,1 409600,0\n"
SECRETS = (KEY, TOKEN, base64.b64encode(f"{USERNAME}:{KEY}".encode()).decode())


def make_zip(entries: dict, extra: tuple = ()) -> bytes:
    """A zip of ``{name: bytes}`` plus raw ``(ZipInfo, bytes)`` members."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        for info, data in extra:
            zf.writestr(info, data)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def entries() -> dict:
    """The competition layout in miniature: noisy 256x1600 JPEGs (about 2.8 MB in all)."""
    rng = np.random.default_rng(0)
    jpeg = [cv2.imencode(".jpg", rng.integers(0, 256, (256, 1600, 3), dtype=np.uint8))[1]
            .tobytes() for _ in range(6)]
    return {"train.csv": b"ImageId,ClassId,EncodedPixels\na.jpg,1,1 10\n",
            "sample_submission.csv": SAMPLE.encode(),
            **{f"train_images/{n}.jpg": j for n, j in zip("abe", jpeg[:3])},
            **{f"test_images/{n}.jpg": j for n, j in zip("cdf", jpeg[3:])}}


def run(*argv: str) -> int:
    """One subcommand through the CLI's parser and handler, its errors raised, not printed."""
    args = cli.parse(list(argv))
    console.setup()
    return args.handler(args)


def entry_point() -> list[str]:
    """The user's command line: ``python -m pipeline``."""
    return [sys.executable, "-m", "pipeline"]


def assert_no_secret(*texts: str, root: Path | None = None) -> None:
    """Neither the key nor its Basic-auth form is in the texts or any file under root."""
    blobs = [t.encode() for t in texts]
    blobs += [p.read_bytes() for p in (root.rglob("*") if root else []) if p.is_file()]
    for secret in SECRETS:
        assert not any(secret.encode() in blob for blob in blobs)


def test_download_follows_the_redirect_checks_and_runs_once(fake_kaggle, entries, tmp_path,
                                                            capsys):
    fake_kaggle.archive = make_zip(entries)
    data = tmp_path / "data"
    assert run("download", "--data-dir", str(data), "--quiet") == 0
    assert [r.name for r in fake_kaggle.requests] == ["DownloadDataFiles", "GET"]
    assert fake_kaggle.requests[0].body == {"competitionName": COMPETITION}
    assert (data / "test_images" / "c.jpg").read_bytes() == entries["test_images/c.jpg"]
    assert json.loads((data / download.MARKER).read_text())["bytes"] == len(
        fake_kaggle.archive)
    assert not download.archive_path(config.DataPaths(data)).parent.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "home"]
    fake_kaggle.requests.clear()
    assert run("download", "--data-dir", str(data)) == 0
    assert fake_kaggle.requests == []
    out, err = capsys.readouterr()
    assert "already holds the competition data" in out
    assert_no_secret(out, err, root=tmp_path)


def _ctrl_c_works() -> None:
    """A user at a terminal: Ctrl-C interrupts, even when the tests run as a background job
    (whose children inherit an ignored SIGINT, and Python then keeps it ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_interrupted_download_resumes_with_a_range_request(fake_kaggle, entries, tmp_path):
    fake_kaggle.archive = archive = make_zip(entries)
    fake_kaggle.cut_first_download = len(archive) // 2
    data = config.DataPaths(tmp_path / "data")
    partial = download.archive_path(data)
    # VERBOSE would make the client print request headers, the key among them.
    user = subprocess.Popen([*entry_point(), "download", "--data-dir", str(data.root)],
                            env={**os.environ, "VERBOSE": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, preexec_fn=_ctrl_c_works)
    deadline = time.monotonic() + 120  # a loaded machine starts Python + torch slowly
    while not (partial.is_file() and partial.stat().st_size) and time.monotonic() < deadline:
        if user.poll() is not None:
            break
        time.sleep(0.05)
    assert user.poll() is None, user.communicate()[1].decode()[-2000:]
    assert partial.is_file(), "no partial download after 120 s"
    user.send_signal(signal.SIGINT)  # the user gives up on a stalled network
    out, err = user.communicate(timeout=90)  # generous: CI machines can be loaded
    fake_kaggle.release.set()
    assert user.returncode == 1 and partial.is_file(), (user.returncode, err.decode()[-2000:])
    size = partial.stat().st_size
    assert 0 < size < len(archive)
    assert f"error: interrupted; the partial download {partial} is kept" in err.decode()
    assert not data.root.exists()
    api.download_archive(partial.parent, quiet=True)
    resumed = [r for r in fake_kaggle.named("GET") if "Range" in r.headers]
    assert len(resumed) == 1 and resumed[0].headers["If-Range"] == ETAG
    assert resumed[0].headers["Range"] == f"bytes={size}-"
    assert partial.read_bytes() == archive
    assert run("download", "--data-dir", str(data.root), "--quiet") == 0
    assert (data.train_images / "a.jpg").read_bytes() == entries["train_images/a.jpg"]
    assert_no_secret(out.decode(), err.decode(), root=tmp_path)


def _symlink() -> tuple:
    info = zipfile.ZipInfo("train_images/link.jpg")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, b"../../outside.jpg"


@pytest.mark.parametrize("member, words", [
    ((zipfile.ZipInfo("../escaped.txt"), b"x"), "zip-slip"),
    ((zipfile.ZipInfo("/tmp/severstal-absolute.txt"), b"x"), "absolute path"),
    (_symlink(), "symbolic link"),
])
def test_unsafe_archives_are_refused_before_writing_anything(fake_kaggle, entries, tmp_path,
                                                             member, words):
    fake_kaggle.archive = make_zip(entries, extra=(member,))
    with pytest.raises(ValueError, match=words):
        run("download", "--data-dir", str(tmp_path / "data"), "--quiet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]
    assert not Path("/tmp/severstal-absolute.txt").exists()


def test_an_archive_without_the_layout_leaves_nothing(fake_kaggle, entries, tmp_path):
    fake_kaggle.archive = make_zip({k: v for k, v in entries.items() if "test_" not in k})
    with pytest.raises(ValueError, match="lacks test_images/"):
        run("download", "--data-dir", str(tmp_path / "data"), "--quiet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]


def test_download_refuses_a_data_dir_that_is_not_a_finished_download(fake_kaggle, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.csv").write_text("synthetic")
    with pytest.raises(FileExistsError, match="not a finished download"):
        run("download", "--data-dir", str(tmp_path / "data"))
    assert fake_kaggle.requests == []


def test_rules_not_accepted_points_to_the_rules_page(fake_kaggle, tmp_path):
    fake_kaggle.rules_accepted = False
    with pytest.raises(RuntimeError, match="HTTP 403") as error:
        run("download", "--data-dir", str(tmp_path / "data"))
    assert api.RULES_URL in str(error.value)
    assert api.RULES_URL == f"https://www.kaggle.com/c/{COMPETITION}/rules"
    fake_kaggle.rules_accepted, fake_kaggle.blob_status = True, 403  # an expired signed URL
    with pytest.raises(RuntimeError, match="HTTP 403") as error:
        run("download", "--data-dir", str(tmp_path / "data"))
    assert api.RULES_URL not in str(error.value)


@pytest.fixture(name="submission_dirs")
def submission_dirs_fixture(tmp_path) -> tuple:
    """DATA_DIR with the sample, a valid submission.csv, RUN_DIR with a CV report."""
    data, run_dir = tmp_path / "data", tmp_path / "run"
    data.mkdir()
    (data / "sample_submission.csv").write_text(SAMPLE)
    (tmp_path / "submission.csv").write_text(SAMPLE)
    (run_dir / "reports").mkdir(parents=True)
    (run_dir / "reports" / "cv.json").write_text(json.dumps({"tuned": {"score": 0.91234}}))
    return str(data), str(run_dir), str(tmp_path / "submission.csv")


def test_submit_uploads_the_bytes_with_version_and_cv_score(fake_kaggle, submission_dirs,
                                                            capsys):
    """For a competition that accepts files (Severstal does not)."""
    data, run_dir, path = submission_dirs
    fake_kaggle.kernels_only = False
    assert run("submit", "--file", path, "--data-dir", data, "--run-dir", run_dir,
               "--message", "fold ensemble", "--quiet") == 0
    assert [r.name for r in fake_kaggle.requests] == [
        "ListCompetitions", "StartSubmissionUpload", "PUT", "CreateSubmission"]
    start, put, create = fake_kaggle.requests[1:]
    assert start.body["fileName"] == "submission.csv"
    assert start.body["contentLength"] == len(SAMPLE)
    assert put.data == Path(path).read_bytes()
    assert create.body["blobFileTokens"] == "submission-token"
    description = create.body["submissionDescription"]
    assert "fold ensemble" in description and "CV 0.9123" in description
    assert config.code_version() in description
    assert "submission 4242" in capsys.readouterr().out


def test_an_invalid_submission_never_uploads(fake_kaggle, submission_dirs):
    data, run_dir, path = submission_dirs
    Path(path).write_text(SAMPLE.splitlines()[0] + "\nc.jpg,1 409600,0\n")
    with pytest.raises(ValueError, match="missing"):
        run("submit", "--file", path, "--data-dir", data, "--run-dir", run_dir)
    assert fake_kaggle.requests == []


def test_submit_wait_polls_until_the_public_score(fake_kaggle, submission_dirs, capsys):
    data, run_dir, path = submission_dirs
    fake_kaggle.kernels_only = False
    fake_kaggle.submission_statuses = ["PENDING", "COMPLETE"]
    run("submit", "--file", path, "--data-dir", data, "--run-dir", run_dir, "--wait",
        "--poll-seconds", "0.01")
    polls = fake_kaggle.named("GetSubmission")
    assert len(polls) == 2 and polls[0].body == {"ref": 4242}
    out, err = capsys.readouterr()
    assert "public score 0.8556" in out and "PENDING" in err


def test_a_kernel_version_is_submitted_as_a_code_submission(fake_kaggle, submission_dirs):
    _, run_dir, _ = submission_dirs
    fake_kaggle.add_kernel("tester/severstal-offline", "COMPLETE", "ERROR", "COMPLETE")
    run("submit", "--kernel", "tester/severstal-offline", "--kernel-version", "3",
        "--run-dir", run_dir)
    (status,) = fake_kaggle.named("GetKernelSessionStatus")
    assert status.body["versionLabel"] == "v3"
    (request,) = fake_kaggle.named("CreateCodeSubmission")
    expected = {"competitionName": COMPETITION, "kernelOwner": "tester",
                "kernelSlug": "severstal-offline", "kernelVersion": 3,
                "fileName": "submission.csv"}
    assert {k: request.body[k] for k in expected} == expected
    assert "CV 0.9123" in request.body["submissionDescription"]


def test_upload_weights_creates_then_versions_without_optimizer_state(fake_kaggle, tmp_path):
    run_dir = tmp_path / "run"
    for fold in (0, 1):
        checkpoint.save(run_dir / "checkpoints" / f"fold{fold}" / "best.pt", {
            "model": {"weight": torch.full((2, 3), float(fold))}, "fold": fold, "epoch": 4,
            "optimizer": {"state": {0: {"exp_avg": torch.ones(2, 3)}}}, "scheduler": {},
            "model_info": {"name": "fcn32_vgg11"}, "config": {"lr": 0.001}})
    (run_dir / "config.json").write_text("{}")
    PostProcess().save(run_dir / "postprocess.json")
    for _ in range(2):
        run("upload-weights", "--dataset", "tester/severstal-weights", "--run-dir",
            str(run_dir), "--quiet")
    (create,), (version,) = fake_kaggle.named("CreateDataset"), fake_kaggle.named(
        "CreateDatasetVersion")
    assert create.body["slug"] == "severstal-weights" and create.body["licenseName"] == "CC0-1.0"
    assert len(create.body["files"]) == len(version.body["body"]["files"]) == 5
    tokens = {t["token"] for t in create.body["files"]}
    uploaded = {fake_kaggle.blob_names[t]: fake_kaggle.uploads[t] for t in tokens}
    assert sorted(uploaded) == ["config.json", "fold0.pt", "fold1.pt", "models.json",
                                "postprocess.json"]
    digests = [checkpoint.digest({"weight": torch.full((2, 3), float(fold))}) for fold in (0, 1)]
    assert json.loads(uploaded["models.json"]) == {"accept_postprocess": False, "models": [
        {"file": "fold0.pt", "weight": 1.0, "digest": digests[0]},
        {"file": "fold1.pt", "weight": 1.0, "digest": digests[1]}]}
    weights = torch.load(io.BytesIO(uploaded["fold1.pt"]), weights_only=True)
    assert set(weights) == {"model", "model_info", "config", "fold", "epoch"}
    assert torch.equal(weights["model"]["weight"], torch.ones(2, 3))


def kernel_dir(tmp_path: Path, **overrides) -> Path:
    """A tiny kernel directory as `make kernel` builds one."""
    folder = tmp_path / "kernels" / "severstal-offline"
    folder.mkdir(parents=True)
    (folder / "script.py").write_text("print('predicting offline')\n")
    meta = {"id": "tester/severstal-offline", "title": "Severstal Offline",
            "code_file": "script.py", "language": "python", "kernel_type": "script",
            "is_private": True, "enable_gpu": True, "enable_internet": False,
            "dataset_sources": ["tester/severstal-weights"],
            "competition_sources": [COMPETITION], "kernel_sources": []}
    meta.update(overrides)
    (folder / "kernel-metadata.json").write_text(json.dumps(
        {k: v for k, v in meta.items() if v is not None}))
    return folder


@pytest.mark.parametrize("ref, words", [
    ("tester/w", "slug of 6-50"),
    ("tester/severstal_weights", "letters, digits or dashes"),
    ("severstal-weights", "is not an owner/slug"),
    ("tester/" + "x" * 51, "slug of 6-50"),
])
def test_one_owner_slug_rule_for_every_command(fake_kaggle, tmp_path, ref, words, capsys):
    """upload-weights and kernel refuse the same dataset reference the same way, before any call."""
    assert cli.main(["upload-weights", "--dataset", ref, "--run-dir", str(tmp_path)]) == 1
    upload_error = capsys.readouterr().err
    assert cli.main(["kernel", "--kernel", "tester/severstal-offline", "--weights-dataset", ref,
                     "--out-dir", str(tmp_path / "k")]) == 1
    kernel_error = capsys.readouterr().err
    assert words in upload_error and words in kernel_error
    assert upload_error.split(f"{ref!r}")[1] == kernel_error.split(f"{ref!r}")[1]
    assert fake_kaggle.requests == [] and not (tmp_path / "k").exists()
    assert cli.main(["kernel-status", "--kernel", "tester/severstal offline"]) == 1
    assert "--kernel 'tester/severstal offline' is not an owner/slug" in capsys.readouterr().err


def test_push_kernel_sends_the_script_with_internet_off(fake_kaggle, tmp_path, capsys):
    fake_kaggle.add_dataset("tester/severstal-weights")
    run("push-kernel", "--kernel-dir", str(kernel_dir(tmp_path)))
    (save,) = fake_kaggle.named("SaveKernel")
    assert save.body["text"] == "print('predicting offline')\n"
    assert save.body["enableInternet"] is False and save.body["enableGpu"] is True
    assert save.body["competitionDataSources"] == [COMPETITION]
    assert "version 1" in capsys.readouterr().out


@pytest.mark.parametrize("internet, words", [(True, "set it to false"), (None, "no enable")])
def test_push_kernel_refuses_internet_on_or_unset(fake_kaggle, tmp_path, internet, words):
    with pytest.raises(ValueError, match=words):
        run("push-kernel", "--kernel-dir", str(kernel_dir(tmp_path, enable_internet=internet)))
    assert fake_kaggle.requests == []


def test_kernel_status_with_a_shared_kaggle_json(fake_kaggle, monkeypatch, capsys):
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    path = Path(os.environ["KAGGLE_CONFIG_DIR"]) / "kaggle.json"
    path.write_text(json.dumps({"username": USERNAME, "key": KEY}))
    path.chmod(0o644)
    fake_kaggle.add_kernel("tester/severstal-offline", "RUNNING")
    run("kernel-status", "--kernel", "tester/severstal-offline")
    assert fake_kaggle.named("GetKernelSessionStatus")[0].body == {
        "userName": "tester", "kernelSlug": "severstal-offline"}
    out, err = capsys.readouterr()
    assert "tester/severstal-offline: RUNNING" in out and f"chmod 600 {path}" in err
    assert_no_secret(out, err)


def test_missing_credentials_say_where_to_put_them(fake_kaggle, monkeypatch, tmp_path):
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    with pytest.raises(RuntimeError) as error:
        run("download", "--data-dir", str(tmp_path / "data"))
    message = str(error.value)
    # Both kinds of credential, in the order the client tries them: token first.
    order = ("Create New Token", "KAGGLE_API_TOKEN", "~/.kaggle/access_token",
             "Create Legacy API Key", os.environ["KAGGLE_CONFIG_DIR"] + "/kaggle.json",
             "KAGGLE_USERNAME", "KAGGLE_KEY")
    assert [message.find(words) for words in order] == sorted(
        message.find(words) for words in order) and all(w in message for w in order)
    assert message.count("chmod 600") == 2
    assert fake_kaggle.requests == []


def test_bad_credentials_and_unknown_competition_differ(fake_kaggle, monkeypatch, tmp_path):
    monkeypatch.setenv("KAGGLE_KEY", "wrong-key")
    with pytest.raises(RuntimeError, match="rejected the credentials") as unauthorized:
        run("download", "--data-dir", str(tmp_path / "data"))
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    fake_kaggle.fail("DownloadDataFiles", 404)
    with pytest.raises(RuntimeError, match="unknown competition") as missing:
        run("download", "--data-dir", str(tmp_path / "data"))
    assert "401" in str(unauthorized.value) and "404" in str(missing.value)


def test_server_errors_are_retried_with_backoff(fake_kaggle, entries, tmp_path, capsys):
    fake_kaggle.archive = make_zip(entries)
    fake_kaggle.fail("DownloadDataFiles", 503, 429)
    run("download", "--data-dir", str(tmp_path / "data"), "--quiet")
    assert len(fake_kaggle.named("DownloadDataFiles")) == 3
    assert "retry 2/3" in capsys.readouterr().err
    fake_kaggle.add_dataset("tester/severstal-weights")
    fake_kaggle.fail("SaveKernel", 500, 500, 500, 500)
    with pytest.raises(RuntimeError, match=r"HTTP 500"):
        run("push-kernel", "--kernel-dir", str(kernel_dir(tmp_path)))
    assert len(fake_kaggle.named("SaveKernel")) == 1  # a create is not repeated after a 500
    fake_kaggle.fail("GetKernelSessionStatus", 502, 502, 502, 502)
    with pytest.raises(RuntimeError, match=r"kept failing .*HTTP 502: injected HTTP 502; 4 tries"):
        run("kernel-status", "--kernel", "tester/severstal-offline")


def test_an_unreachable_server_is_reported_as_offline(fake_kaggle, monkeypatch, tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{port}")
    with pytest.raises(RuntimeError, match="cannot reach Kaggle.*Connection refused"):
        run("download", "--data-dir", str(tmp_path / "data"))


def test_the_key_never_reaches_output_or_files(fake_kaggle, entries, submission_dirs,
                                               monkeypatch, tmp_path, capsys):
    fake_kaggle.archive = make_zip(entries)
    fake_kaggle.kernels_only = False
    data, run_dir, path = submission_dirs
    assert cli.main(["download", "--data-dir", str(tmp_path / "full")]) == 0
    assert cli.main(["submit", "--file", path, "--data-dir", data,
                     "--run-dir", run_dir, "--wait", "--poll-seconds", "0"]) == 0
    monkeypatch.setenv("VERBOSE", "true")  # the client would print request headers
    fake_kaggle.add_dataset("tester/severstal-weights")
    fake_kaggle.fail("SaveKernel", 403)
    assert cli.main(["push-kernel", "--kernel-dir", str(kernel_dir(tmp_path))]) == 1
    out, err = capsys.readouterr()
    assert "error: Kaggle refused pushing kernel" in err and "public score" in out
    assert_no_secret(out, err, root=tmp_path)


def test_the_library_returns_results_and_logs_progress_only_the_cli_prints(
        fake_kaggle, entries, submission_dirs, tmp_path, capsys, caplog):
    fake_kaggle.archive = make_zip(entries)
    fake_kaggle.kernels_only = False
    data_dir, run_dir, path = submission_dirs
    data = config.DataPaths(tmp_path / "full")
    with caplog.at_level(logging.INFO, logger="pipeline"):
        assert download.download(data, quiet=True) == download.Downloaded(
            data.root, train_images=3, test_images=3)
        assert download.download(data) == download.Downloaded(data.root, already=True)
        run = config.RunPaths(Path(run_dir))
        done = submissions.submit_file(Path(path), config.DataPaths(Path(data_dir)), run,
                                       "fold ensemble", quiet=True)
        assert (done.ref, done.rows, done.file) == (4242, 2, path)
        assert done.description == submissions.describe(run, "fold ensemble")
        assert submissions.wait_for_score(done.ref, 0.01) == submissions.Score(
            4242, "COMPLETE", "0.8556")
        fake_kaggle.add_dataset("tester/severstal-weights")
        pushed = kernels.push_kernel(kernel_dir(tmp_path))
        assert (pushed.kernel, pushed.version) == ("tester/severstal-offline", 1)
        assert kernels.kernel_status("tester/severstal-offline/1") == kernels.KernelStatus(
            "tester/severstal-offline/1", "QUEUED")
    assert weights.url("tester/x-weights") == "https://www.kaggle.com/datasets/tester/x-weights"
    assert capsys.readouterr().out == ""
    logged = caplog.text
    assert f"downloading the competition data to {download.archive_path(data)}" in logged
    assert "uploading" in logged and "pushing tester/severstal-offline" in logged
