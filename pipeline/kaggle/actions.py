"""Kaggle actions: submit a file or a kernel version, push a kernel, read a kernel's status.

Each raises ValueError / FileNotFoundError / RuntimeError with a message saying what to do;
the CLI parses the flags and calls these.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline import config
from pipeline.inference import submission
from pipeline.kaggle import api


def describe(run: config.RunPaths, message: str | None = None) -> str:
    """A submission description: the message, the code version and the run's tuned CV score."""
    parts = [message] if message else []
    parts.append(f"code {config.code_version()}")
    cv_json = run.reports / "cv.json"
    if cv_json.is_file():
        try:
            parts.append(f"CV {float(json.loads(cv_json.read_text())['tuned']['score']):.4f}")
        except (ValueError, KeyError, TypeError):
            raise ValueError(f"{cv_json} has no number at tuned.score: rerun `make cv` or "
                             "remove the file") from None
    return "; ".join(parts)


def submit(path: Path, data: config.DataPaths, run: config.RunPaths, message: str | None = None,
           wait: bool = False, poll_seconds: float = 30.0, timeout: float = 3600.0,
           quiet: bool = False) -> int:
    """Validate a submission file against the sample, upload it, optionally wait for its score."""
    if not data.sample_submission.is_file():
        raise FileNotFoundError(f"{data.sample_submission} does not exist: run `make download` "
                                "or pass --data-dir")
    table = submission.validate(Path(path), submission.read_sample(data.sample_submission))
    description = describe(run, message)
    ref = api.submit_file(Path(path), description, quiet)
    print(f"submitted {path} ({len(table)} rows) as submission {ref}: {description}")
    if wait:
        score = api.wait_for_score(ref, poll_seconds, timeout, quiet)
        print(f"submission {ref}: public score {score}")
    return ref


def submit_kernel_version(kernel: str, version: int, file_name: str = "submission.csv",
                          message: str | None = None, run: config.RunPaths | None = None,
                          wait: bool = False, poll_seconds: float = 30.0,
                          timeout: float = 3600.0, quiet: bool = False) -> int:
    """Submit the output file of a kernel version (the code-competition path)."""
    api.check_ref(kernel, "--kernel", "kernel")
    if version is None or int(version) < 1:
        raise ValueError(f"--kernel-version {version!r}: pass the version number that "
                         "`push-kernel` printed (1 or more)")
    description = describe(run or config.resolve_run_dir(), message)
    ref = api.submit_code(kernel, int(version), file_name, description)
    print(f"submitted {file_name} of {kernel} version {version} as submission {ref}: "
          f"{description}")
    if wait:
        score = api.wait_for_score(ref, poll_seconds, timeout, quiet)
        print(f"submission {ref}: public score {score}")
    return ref


def _read_kernel_metadata(folder: Path) -> dict:
    path = folder / "kernel-metadata.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: build the kernel first (`make kernel`)")
    try:
        meta = json.loads(path.read_text())
    except ValueError as error:
        raise ValueError(f"{path} is not valid JSON ({error})") from None
    internet = meta.get("enable_internet")
    if internet is None:
        raise ValueError(f"{path} has no enable_internet, which the kaggle client turns into "
                         'true: add "enable_internet": false')
    if str(internet).lower() != "false":
        raise ValueError(f"{path}: enable_internet is {internet!r}, but Severstal kernels run "
                         "with the internet off: set it to false")
    if config.COMPETITION not in meta.get("competition_sources", []):
        raise ValueError(f"{path}: competition_sources lacks {config.COMPETITION!r}, so the "
                         "kernel would not see the test images: add it")
    code = meta.get("code_file")
    if not code or not (folder / code).is_file():
        raise FileNotFoundError(f"{path}: code_file {code!r} is not a file in {folder}")
    return meta


def push_kernel(kernel_dir: Path, quiet: bool = False) -> int:
    """Push a kernel directory (kernel-metadata.json + script) with internet off; its version."""
    folder = Path(kernel_dir)
    meta = _read_kernel_metadata(folder)
    client = api.client()
    response = api.call(f"pushing kernel {meta.get('id')}", client.kernels_push, str(folder),
                        retry_on=api.RETRY_UNPROCESSED)
    if response.error:
        raise api.KaggleError(f"Kaggle refused kernel {meta.get('id')}: {response.error}")
    print(f"pushed {meta.get('id')} version {response.version_number}: {response.url}")
    return response.version_number


def _session_status(client, kernel: str):
    import requests

    try:
        return client.kernels_status(kernel)
    except ValueError as error:
        # The client rewrites 401/403 into a ValueError about benchmarks: restore the HTTP error.
        if isinstance(error.__context__, requests.HTTPError):
            raise error.__context__ from None
        raise


def kernel_status(kernel: str) -> str:
    """Print and return a kernel's latest session status (QUEUED, RUNNING, COMPLETE, ERROR...)."""
    api.check_ref(kernel, "--kernel", "kernel")
    client = api.client()
    response = api.call(f"reading the status of kernel {kernel}", _session_status, client,
                        kernel, missing=f"kernel {kernel} not found (HTTP 404): check "
                                        "the owner/slug in its kernel-metadata.json")
    status = response.status.name
    failure = f": {response.failure_message}" if response.failure_message else ""
    print(f"{kernel}: {status}{failure}")
    return status
