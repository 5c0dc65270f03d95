"""Submitting: a kernel version (the code-competition path, checked to have completed), or a
file for a competition that accepts files (validated against the sample first); the
description, and the wait for the score.

Each raises ValueError / FileNotFoundError / RuntimeError with a message saying what to do;
the CLI parses the flags, calls these and prints what they return.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import config
from pipeline.inference import submission
from pipeline.kaggle import api, kernels

log = logging.getLogger(__name__)

SUBMISSIONS_URL = f"{api.COMPETITION_URL}/submissions"
CLOSED = (f"or it no longer accepts submissions (a closed competition takes late submissions "
          f"once 'Late Submission' is accepted on {api.COMPETITION_URL})")
# A code submission reruns the kernel on the hidden test set: up to its run-time limit plus a
# queue. The kaggle CLI's own default wait is 12 hours.
WAIT_SECONDS = 12 * 3600.0


@dataclass(frozen=True)
class Submitted:
    """A submission made: its ref, description, and what was submitted."""

    ref: int
    description: str
    file: str  # a local file's path, or the name of the kernel's output file
    rows: int | None = None  # a local file's rows
    kernel: str | None = None  # owner/slug of the kernel version submitted
    version: int | None = None


@dataclass(frozen=True)
class Score:
    """Where a submission stands: COMPLETE with its public score, or still pending."""

    ref: int
    status: str
    public_score: str | None = None  # None: not scored within the wait


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


def competition_entry(client: Any) -> Any:
    """The competition's entry in Kaggle's listing (``isKernelsSubmissionsOnly`` and more)."""
    found = api.call("looking up the competition", client.competitions_list, category="all",
                     search=api.COMPETITION)
    for entry in found.competitions if found is not None else []:
        if str(entry.ref).rstrip("/").rsplit("/", 1)[-1] == api.COMPETITION:
            return entry
    raise api.KaggleError(f"Kaggle's competition listing has no {api.COMPETITION!r}: check "
                          f"that {api.COMPETITION_URL} exists and that this account can see it")


def check_accepts_files(client: Any) -> None:
    """KaggleError, before anything is uploaded, when the competition takes no uploaded file."""
    entry = competition_entry(client)
    if entry.submissions_disabled:
        raise api.KaggleError(f"{api.COMPETITION} accepts no submissions now: see "
                              f"{api.COMPETITION_URL}")
    if entry.is_kernels_submissions_only:
        raise api.KaggleError(
            f"{api.COMPETITION} is a code competition: Kaggle scores a kernel version, not an "
            "uploaded file. Submit the kernel instead: `make upload-weights kernel push-kernel`, "
            "wait for `make kernel-status` to say COMPLETE, then `make submit` (or "
            "`python -m pipeline submit --kernel-dir kernels/<slug>`)")


def submit_file(path: Path, data: config.DataPaths, run: config.RunPaths,
                message: str | None = None, quiet: bool = False) -> Submitted:
    """Validate a submission file against the sample and upload it, for a competition that
    accepts files (a code competition is refused before anything is uploaded)."""
    if not data.sample_submission.is_file():
        raise FileNotFoundError(f"{data.sample_submission} does not exist: run `make download` "
                                "or pass --data-dir")
    path = Path(path)
    table = submission.validate(path, submission.read_sample(data.sample_submission))
    description = describe(run, message)
    client = api.client()
    check_accepts_files(client)
    log.info("uploading %s (%d rows)", path, len(table))
    response = api.call(f"submitting {path}", client.competition_submit, str(path),
                        description, api.COMPETITION, quiet=api.quiet_client(quiet), rules=True,
                        missing=f"competition {api.COMPETITION!r} not found, {CLOSED}",
                        retry_on=api.RETRY_UNPROCESSED,
                        created=f"see {SUBMISSIONS_URL} before submitting again")
    if response.message == client.COMPETITION_SUBMIT_UPLOAD_FAILED_MESSAGE:
        raise api.KaggleError(f"uploading {path} to Kaggle failed; nothing was submitted: "
                              "run again")
    return Submitted(response.ref, description, str(path), rows=len(table))


def _which_version(kernel: str | None, version: int | None,
                   kernel_dir: Path | None) -> tuple[str, int]:
    """The kernel and version asked for, the last push of ``kernel_dir`` filling in the rest."""
    if kernel is None or version is None:
        if kernel_dir is None:
            raise ValueError("pass --kernel-dir (the folder push-kernel pushed), or --kernel "
                             "owner/slug with --kernel-version N")
        pushed, last = kernels.pushed_version(Path(kernel_dir))
        if kernel not in (None, pushed) and version is None:
            raise ValueError(f"--kernel {kernel} is not the kernel {kernel_dir} pushed "
                             f"({pushed}): pass --kernel-version too")
        kernel, version = kernel or pushed, version or last
    api.check_ref(kernel, "--kernel", "kernel")
    if int(version) < 1:
        raise ValueError(f"--kernel-version {version!r}: pass the version number that "
                         "`push-kernel` printed (1 or more)")
    return kernel, int(version)


def submit_kernel_version(kernel: str | None = None, version: int | None = None,
                          kernel_dir: Path | None = None, file_name: str = "submission.csv",
                          message: str | None = None,
                          run: config.RunPaths | None = None) -> Submitted:
    """Submit a kernel version (the code-competition path), by default the version that the
    last ``push-kernel`` of ``kernel_dir`` recorded, once its run has completed."""
    kernel, version = _which_version(kernel, version, kernel_dir)
    status, failure = kernels.session_status(kernel, version)
    if status != "COMPLETE":
        hint = (f"it failed ({failure or 'no message'}): fix it and push a new version"
                if status == "ERROR" else "wait until `make kernel-status` says COMPLETE")
        raise api.KaggleError(f"kernel {kernel} version {version} is {status}, and Kaggle "
                              f"scores only a version whose run completed: {hint}")
    description = describe(run or config.resolve_run_dir(), message)
    client = api.client()
    response = api.call(
        f"submitting kernel {kernel} version {version}", client.competition_submit_code,
        file_name, description, api.COMPETITION, kernel, version, quiet=True,
        retry_on=api.RETRY_UNPROCESSED,
        missing=f"competition {api.COMPETITION!r}, kernel {kernel} or its version {version} "
                f"not found, {CLOSED}; check `kernel-status --kernel {kernel}/{version}`",
        forbidden=("this account may not submit that kernel version: it must be the account's "
                   "own kernel (or a teammate's), with the competition attached and the "
                   "internet off; the server's message says which"),
        created=f"see {SUBMISSIONS_URL} before submitting again")
    return Submitted(response.ref, description, file_name, kernel=kernel, version=version)


def wait_for_score(ref: int, poll_seconds: float = 60.0, timeout: float = WAIT_SECONDS,
                   quiet: bool = False) -> Score:
    """Poll GetSubmission until COMPLETE (with its public score) or ERROR (KaggleError).
    After ``timeout`` seconds: the state it is still in, unscored; it stays queued on Kaggle."""
    client, started = api.client(), time.monotonic()
    while True:
        # A fresh submission may answer 404 for a moment: count it as pending.
        found = api.call(f"reading submission {ref}", api.or_none_if_404,
                         client.get_submission, ref)
        status = found.status.name if found is not None else "PENDING"
        if status == "COMPLETE":
            return Score(ref, status, found.public_score or "(not published)")
        if status == "ERROR":
            raise api.KaggleError(f"submission {ref} failed to score: "
                                  f"{found.error_description or 'no message'}; see "
                                  f"{SUBMISSIONS_URL}")
        waited = time.monotonic() - started
        if waited + poll_seconds > timeout:
            log.info("submission %s still %s after %s: it stays queued on Kaggle and will be "
                     "scored; see %s", ref, status, _duration(waited), SUBMISSIONS_URL)
            return Score(ref, status)
        if not quiet:
            log.info("submission %s: %s after %s; next check in %s", ref, status,
                     _duration(waited), _duration(poll_seconds))
        time.sleep(poll_seconds)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"
