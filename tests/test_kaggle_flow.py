"""The code-competition path as the real service behaves: our code and the real ``kaggle``
client against the local server, which answers as Kaggle does (see fake_kaggle's docstring)."""

import json
import os
import subprocess
import sys
import time
from configparser import ConfigParser
from pathlib import Path

import pytest
import requests
from fake_kaggle import COMPETITION, TOKEN, USERNAME, fake_kaggle_fixture  # noqa: F401
from test_kaggle import kernel_dir, run, submission_dirs_fixture  # noqa: F401

from pipeline import checkpoint, cli
from pipeline.inference.postprocess import PostProcess
from pipeline.kaggle import api

KERNEL, WEIGHTS = "tester/severstal-offline", "tester/severstal-weights"
ROOT = Path(__file__).resolve().parent.parent


def test_a_file_for_a_code_competition_is_refused_before_any_upload(
        fake_kaggle, submission_dirs, capsys):
    data, run_dir, path = submission_dirs
    assert cli.main(["submit", "--file", path, "--data-dir", data, "--run-dir", run_dir]) == 1
    err = capsys.readouterr().err
    assert "is a code competition" in err and "make submit" in err and "kernel" in err
    assert [r.name for r in fake_kaggle.requests] == ["ListCompetitions"]
    # ... because the service itself refuses one (the client, unchecked, gets an error body).
    with pytest.raises(requests.HTTPError, match="only accepts submissions from Notebooks") as e:
        api.client().competition_submit(path, "x", COMPETITION, quiet=True)
    assert e.value.response.status_code == 400


def push_built_kernel(fake_kaggle, tmp_path: Path) -> Path:
    """`make kernel` + `make push-kernel` with the weights dataset ready; the kernel folder."""
    fake_kaggle.add_dataset(WEIGHTS)
    folder = tmp_path / "kernels" / "severstal-offline"
    assert cli.main(["kernel", "--kernel", KERNEL, "--weights-dataset", WEIGHTS,
                     "--out-dir", str(folder)]) == 0
    assert cli.main(["push-kernel", "--kernel-dir", str(folder)]) == 0
    return folder


def test_submit_takes_the_pushed_version_once_its_run_completed(fake_kaggle, submission_dirs,
                                                                tmp_path, capsys):
    _, run_dir, _ = submission_dirs
    folder = push_built_kernel(fake_kaggle, tmp_path)
    (save,) = fake_kaggle.named("SaveKernel")
    assert save.body["newTitle"] == "Severstal Offline" and save.body["slug"] == KERNEL
    assert json.loads((folder / "pushed.json").read_text())["version"] == 1
    submit = ["submit", "--kernel-dir", str(folder), "--run-dir", run_dir]
    assert cli.main(submit) == 1  # version 1 is QUEUED
    assert "version 1 is QUEUED" in capsys.readouterr().err
    assert cli.main(["kernel-status", "--kernel", KERNEL]) == 0  # now RUNNING
    assert cli.main(["kernel-status", "--kernel", f"{KERNEL}/1"]) == 0  # now COMPLETE
    assert cli.main(submit) == 0
    (create,) = fake_kaggle.named("CreateCodeSubmission")
    assert (create.body["kernelSlug"], create.body["kernelVersion"]) == ("severstal-offline", 1)
    out = capsys.readouterr().out
    assert f"{KERNEL}: RUNNING" in out and f"{KERNEL}/1: COMPLETE" in out
    assert "submission 4343" in out


def test_make_submit_is_the_kernel_path():
    planned = subprocess.run(["make", "-n", "-o", ".venv/.installed", "submit",
                              f"KERNEL={KERNEL}", "VENV=.venv"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
    assert "--kernel-dir kernels/severstal-offline" in planned and "--wait" in planned
    assert "--file" not in planned


def test_the_wait_gives_up_with_the_state_and_fails_only_on_error(fake_kaggle, submission_dirs,
                                                                  capsys):
    _, run_dir, _ = submission_dirs
    fake_kaggle.add_kernel(KERNEL, "COMPLETE")
    fake_kaggle.submission_statuses = ["PENDING"]
    submit = ["submit", "--kernel", KERNEL, "--kernel-version", "1", "--run-dir", run_dir,
              "--wait", "--poll-seconds", "0.02"]
    assert cli.main([*submit, "--timeout", "0.1"]) == 0
    out, err = capsys.readouterr()
    assert "submission 4343: still PENDING on Kaggle" in out
    assert "submission 4343: PENDING after 0 s; next check in 0 s" in err
    assert "stays queued on Kaggle" in err
    fake_kaggle.submission_statuses = ["PENDING", "ERROR"]
    assert cli.main(submit) == 1
    assert "failed to score: Notebook Threw Exception" in capsys.readouterr().err
    assert cli.build_parser().parse_args(["submit"]).timeout == 12 * 3600


def test_an_old_client_is_named_with_the_fix_before_any_call(fake_kaggle, tmp_path):
    site = tmp_path / "site"
    meta = site / "kaggle-1.7.4.2.dist-info"
    meta.mkdir(parents=True)
    (meta / "METADATA").write_text("Metadata-Version: 2.1\nName: kaggle\nVersion: 1.7.4.2\n")
    result = subprocess.run([sys.executable, "-m", "pipeline", "kernel-status", "--kernel",
                             KERNEL], env={**os.environ, "PYTHONPATH": str(site)},
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "kaggle client is 1.7.4.2" in result.stderr
    assert "pip install 'kaggle>=2.2.5,<3'" in result.stderr
    assert fake_kaggle.requests == []
    with pytest.raises(RuntimeError, match="kaggle client is 3.0.0"):
        api.check_client_version("3.0.0")
    api.check_client_version("2.2.5")


def test_setup_cfg_pins_the_client_range_the_code_checks():
    setup = ConfigParser()
    setup.read(ROOT / "setup.cfg")
    requires = [r.strip() for r in setup["options"]["install_requires"].splitlines()]
    assert "kaggle>=2.2.5,<3" in requires
    assert api.CLIENT_RANGE == ((2, 2, 5), (3,))
    assert setup["options"]["python_requires"] == ">=3.11"


@pytest.mark.parametrize("metadata, extra, words", [
    ({"kernel_sources": ["tester/no-such-kernel"]}, {}, "kernel source tester/no-such-kernel"),
    ({"competition_sources": [COMPETITION, "no-such-contest"]}, {},
     "competition source no-such-contest"),
    ({}, {"invalidDatasetSources": [WEIGHTS]}, f"dataset source {WEIGHTS}"),
    ({}, {"error": "Notebook text is too large"}, "refused kernel .*too large"),
])
def test_a_push_that_kaggle_saved_with_refused_sources_is_an_error(
        fake_kaggle, tmp_path, metadata, extra, words):
    fake_kaggle.add_dataset(WEIGHTS)
    fake_kaggle.save_kernel_extra = extra
    folder = kernel_dir(tmp_path, **metadata)
    with pytest.raises(RuntimeError, match=words):
        run("push-kernel", "--kernel-dir", str(folder))
    assert len(fake_kaggle.named("SaveKernel")) == 1 and not (folder / "pushed.json").exists()


def test_a_title_that_is_not_the_slug_is_refused_before_pushing(fake_kaggle, tmp_path):
    fake_kaggle.add_dataset(WEIGHTS)
    folder = kernel_dir(tmp_path, title="Severstal Offline Kernel")
    # What Kaggle does with it: the first push creates a kernel under the title's slug ...
    api.client().kernels_push(str(folder))
    assert "tester/severstal-offline-kernel" in fake_kaggle.kernels
    with pytest.raises(RuntimeError, match="not found"):  # ... and the id finds nothing
        run("kernel-status", "--kernel", KERNEL)
    fake_kaggle.requests.clear()
    with pytest.raises(ValueError, match="slugify to the slug 'severstal-offline'.*"
                                         "'Severstal Offline'"):
        run("push-kernel", "--kernel-dir", str(folder))
    with pytest.raises(ValueError, match="slugify"):
        run("kernel", "--kernel", KERNEL, "--weights-dataset", WEIGHTS, "--title",
            "My Severstal kernel", "--out-dir", str(tmp_path / "k"))
    assert fake_kaggle.requests == [] and not (tmp_path / "k").exists()


def tiny_run(tmp_path: Path) -> Path:
    """A run folder holding what upload-weights stages."""
    run_dir = tmp_path / "run"
    checkpoint.save(run_dir / "checkpoints" / "fold0" / "best.pt", {
        "model": {}, "fold": 0, "model_info": {"name": "fcn32_vgg11"}, "config": {}})
    (run_dir / "config.json").write_text("{}")
    PostProcess().save(run_dir / "postprocess.json")
    return run_dir


def test_upload_weights_waits_for_processing_and_push_needs_a_ready_dataset(
        fake_kaggle, tmp_path, capsys):
    upload = ["upload-weights", "--dataset", WEIGHTS, "--run-dir", str(tiny_run(tmp_path))]
    assert cli.main(upload) == 0
    out, err = capsys.readouterr()
    assert "BLOBS_RECEIVED after" in err and "BLOBS_DECOMPRESSED after" in err
    assert f"{WEIGHTS} is ready" in out
    folder = kernel_dir(tmp_path)
    for states, words in ((["BLOBS_DECOMPRESSED"], "still being processed"),
                          (["FAILED"], "failed to process"), (None, "does not exist")):
        fake_kaggle.datasets.pop(WEIGHTS)
        if states:
            fake_kaggle.add_dataset(WEIGHTS, *states)
        assert cli.main(["push-kernel", "--kernel-dir", str(folder)]) == 1
        assert words in capsys.readouterr().err
    assert fake_kaggle.named("SaveKernel") == []
    fake_kaggle.processing = ["BLOBS_RECEIVED", "FAILED"]
    assert cli.main(upload) == 1  # a new dataset whose processing fails
    assert f"failed to process dataset {WEIGHTS} (status FAILED)" in capsys.readouterr().err


def test_a_403_while_processing_is_not_a_403_for_someone_elses(fake_kaggle, tmp_path, capsys):
    run_dir = str(tiny_run(tmp_path))
    fake_kaggle.add_dataset(WEIGHTS, "BLOBS_RECEIVED")  # stuck in processing
    assert cli.main(["upload-weights", "--dataset", WEIGHTS, "--run-dir", run_dir,
                     "--wait-seconds", "0.05"]) == 1
    err = capsys.readouterr().err
    assert "HTTP 403" in err and "still processing its previous version" in err
    fake_kaggle.add_dataset(WEIGHTS)
    fake_kaggle.fail("CreateDatasetVersion", 403)  # ready, but shared without edit rights
    assert cli.main(["upload-weights", "--dataset", WEIGHTS, "--run-dir", run_dir]) == 1
    assert "may not add versions" in capsys.readouterr().err
    fake_kaggle.add_dataset("alice/severstal-weights")
    fake_kaggle.requests.clear()
    assert cli.main(["upload-weights", "--dataset", "alice/severstal-weights",
                     "--run-dir", run_dir]) == 1
    assert "belongs to 'alice', but the credentials are 'tester'" in capsys.readouterr().err
    assert [r.name for r in fake_kaggle.requests] == []  # not even an upload


def test_submit_errors_say_what_happened(fake_kaggle, submission_dirs, capsys):
    _, run_dir, _ = submission_dirs
    fake_kaggle.add_kernel(KERNEL, "COMPLETE", "ERROR")
    submit = ["submit", "--kernel", KERNEL, "--run-dir", run_dir, "--kernel-version"]
    fake_kaggle.fail("CreateCodeSubmission", 403)
    assert cli.main([*submit, "1"]) == 1
    err = capsys.readouterr().err
    assert "HTTP 403" in err and "own kernel" in err and "rules" not in err
    fake_kaggle.accepting = False
    assert cli.main([*submit, "1"]) == 1
    err = capsys.readouterr().err
    assert "HTTP 404" in err and "no longer accepts submissions" in err
    assert "Late Submission" in err
    assert cli.main([*submit, "2"]) == 1  # a version whose run failed is not submitted
    err = capsys.readouterr().err
    assert "version 2 is ERROR" in err and "Your notebook hit an error" in err
    assert cli.main([*submit, "9"]) == 1
    assert "version 9 not found" in capsys.readouterr().err
    assert len(fake_kaggle.named("CreateCodeSubmission")) == 2


@pytest.mark.parametrize("where", ["env", "file"])
def test_an_access_token_is_introspected_and_sent_as_bearer(fake_kaggle, monkeypatch, where,
                                                            capsys):
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    if where == "env":
        monkeypatch.setenv("KAGGLE_API_TOKEN", TOKEN)
    else:
        path = Path.home() / ".kaggle" / "access_token"
        path.write_text(TOKEN + "\n")
        path.chmod(0o600)
    fake_kaggle.add_kernel(KERNEL, "COMPLETE")
    assert cli.main(["kernel-status", "--kernel", KERNEL]) == 0
    introspect, status = fake_kaggle.requests
    assert introspect.name == "IntrospectToken" and introspect.body == {"token": TOKEN}
    assert status.headers["Authorization"] == f"Bearer {TOKEN}"
    out, err = capsys.readouterr()
    assert f"{KERNEL}: COMPLETE" in out
    assert TOKEN not in out + err
    if where == "env":
        monkeypatch.setenv("KAGGLE_API_TOKEN", "KGAT_revoked")
        assert cli.main(["kernel-status", "--kernel", KERNEL]) == 1
        err = capsys.readouterr().err
        assert "did not accept the credentials in $KAGGLE_API_TOKEN" in err
        assert "Create New Token" in err and "KGAT_revoked" not in err


def test_a_dropped_create_is_never_repeated(fake_kaggle, tmp_path, capsys):
    run_dir = str(tiny_run(tmp_path))
    upload = ["upload-weights", "--dataset", WEIGHTS, "--run-dir", run_dir]
    fake_kaggle.drop = {"CreateDataset"}  # Kaggle made it, the answer never came
    assert cli.main(upload) == 1
    assert "dropped while creating dataset" in capsys.readouterr().err
    assert len(fake_kaggle.named("CreateDataset")) == 1 and WEIGHTS in fake_kaggle.datasets
    fake_kaggle.drop = set()
    assert cli.main(upload) == 0  # the next run finds it and adds a version
    assert len(fake_kaggle.named("CreateDataset")) == 1
    assert len(fake_kaggle.named("CreateDatasetVersion")) == 1
    fake_kaggle.drop = {"StartBlobUpload"}
    fake_kaggle.requests.clear()
    PostProcess(head="sigmoid").save(Path(run_dir) / "postprocess.json")  # a new file to send
    started = time.monotonic()
    assert cli.main(upload) == 1
    seconds = time.monotonic() - started
    print(f"dropped blob upload reported after {seconds:.2f} s")
    assert len(fake_kaggle.named("StartBlobUpload")) == 1  # the client would try 10 times
    assert "dropped while adding a version" in capsys.readouterr().err


def test_kernel_status_reads_one_version(fake_kaggle, capsys):
    fake_kaggle.add_kernel(KERNEL, "COMPLETE", "ERROR", "RUNNING")
    for ref, expected in ((KERNEL, "RUNNING"), (f"{KERNEL}/2", "ERROR: Your notebook hit an "
                                                "error"), (f"{KERNEL}/1", "COMPLETE")):
        assert cli.main(["kernel-status", "--kernel", ref]) == 0
        assert f"{ref}: {expected}" in capsys.readouterr().out
    assert [r.body.get("versionLabel") for r in fake_kaggle.requests] == [None, "v2", "v1"]
    assert cli.main(["kernel-status", "--kernel", f"{KERNEL}/x"]) == 1
    assert "must be a number" in capsys.readouterr().err


@pytest.mark.parametrize("content, words", [
    ("{not json", "is not valid JSON"),
    ('["tester", "key"]', "lacks 'username' or 'key'"),
    ('{"username": "tester"}', "lacks 'username' or 'key'"),
    ('{"username": "tester", "key": 12345}', r"lacks 'username' or 'key' \(both text"),
    ('{"username": " ", "key": "abc"}', "lacks 'username' or 'key'"),
])
def test_a_broken_kaggle_json_is_named_before_any_call(fake_kaggle, monkeypatch, content, words):
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    path = Path(os.environ["KAGGLE_CONFIG_DIR"]) / "kaggle.json"
    path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(RuntimeError, match=words) as error:
        run("kernel-status", "--kernel", KERNEL)
    assert str(path) in str(error.value) and "Create New Token" in str(error.value)
    assert fake_kaggle.requests == []
