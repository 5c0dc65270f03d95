"""Submissions on the wire: what the competition accepts, a file upload, a kernel version's code
submission, and waiting for the score."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from pipeline.kaggle import api

log = logging.getLogger(__name__)

SUBMISSIONS_URL = f"{api.COMPETITION_URL}/submissions"
CLOSED = (f"or it no longer accepts submissions (a closed competition takes late submissions "
          f"once 'Late Submission' is accepted on {api.COMPETITION_URL})")


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


def submit_file(path: Path, description: str, quiet: bool) -> int:
    """StartSubmissionUpload -> PUT -> CreateSubmission; returns the submission ref."""
    client = api.client()
    check_accepts_files(client)
    response = api.call(f"submitting {path}", client.competition_submit, str(path),
                        description, api.COMPETITION, quiet=api.quiet_client(quiet), rules=True,
                        missing=f"competition {api.COMPETITION!r} not found, {CLOSED}",
                        retry_on=api.RETRY_UNPROCESSED,
                        created=f"see {SUBMISSIONS_URL} before submitting again")
    if response.message == client.COMPETITION_SUBMIT_UPLOAD_FAILED_MESSAGE:
        raise api.KaggleError(f"uploading {path} to Kaggle failed; nothing was submitted: "
                              "run again")
    return response.ref


def submit_code(kernel: str, version: int, file_name: str, description: str) -> int:
    """CreateCodeSubmission of a kernel version's output file; returns the submission ref."""
    client = api.client()
    what = f"submitting kernel {kernel} version {version}"
    response = api.call(
        what, client.competition_submit_code, file_name, description, api.COMPETITION,
        kernel, version, quiet=True, retry_on=api.RETRY_UNPROCESSED,
        missing=f"competition {api.COMPETITION!r}, kernel {kernel} or its version {version} "
                f"not found, {CLOSED}; check `kernel-status --kernel {kernel}/{version}`",
        forbidden=("this account may not submit that kernel version: it must be the account's "
                   "own kernel (or a teammate's), with the competition attached and the "
                   "internet off; the server's message says which"),
        created=f"see {SUBMISSIONS_URL} before submitting again")
    return response.ref


def wait_for_score(ref: int, poll_seconds: float, timeout: float,
                   quiet: bool) -> tuple[str, str | None]:
    """Poll GetSubmission until COMPLETE: ("COMPLETE", public score), or ERROR: KaggleError.
    After ``timeout`` seconds: (the state it is still in, None); it stays queued on Kaggle."""
    client, started = api.client(), time.monotonic()
    while True:
        # A fresh submission may answer 404 for a moment: count it as pending.
        found = api.call(f"reading submission {ref}", api.or_none_if_404,
                         client.get_submission, ref)
        status = found.status.name if found is not None else "PENDING"
        if status == "COMPLETE":
            return status, found.public_score or "(not published)"
        if status == "ERROR":
            raise api.KaggleError(f"submission {ref} failed to score: "
                                  f"{found.error_description or 'no message'}; see "
                                  f"{SUBMISSIONS_URL}")
        waited = time.monotonic() - started
        if waited + poll_seconds > timeout:
            log.info("submission %s still %s after %s: it stays queued on Kaggle and will be "
                     "scored; see %s", ref, status, _duration(waited), SUBMISSIONS_URL)
            return status, None
        if not quiet:
            log.info("submission %s: %s after %s; next check in %s", ref, status,
                     _duration(waited), _duration(poll_seconds))
        time.sleep(poll_seconds)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"
