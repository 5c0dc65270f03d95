"""Submitting: a kernel version (the code-competition path, checked to have completed), or a
file for a competition that accepts files; the description and the wait for the score.

Each raises ValueError / FileNotFoundError / RuntimeError with a message saying what to do;
the CLI parses the flags and calls these.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline import config
from pipeline.inference import submission
from pipeline.kaggle import api, push, submissions

# A code submission reruns the kernel on the hidden test set: up to its run-time limit plus a
# queue. The kaggle CLI's own default wait is 12 hours.
WAIT_SECONDS = 12 * 3600.0


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
           wait: bool = False, poll_seconds: float = 60.0, timeout: float = WAIT_SECONDS,
           quiet: bool = False) -> int:
    """Validate a submission file against the sample and upload it, for a competition that
    accepts files (a code competition is refused before anything is uploaded)."""
    if not data.sample_submission.is_file():
        raise FileNotFoundError(f"{data.sample_submission} does not exist: run `make download` "
                                "or pass --data-dir")
    table = submission.validate(Path(path), submission.read_sample(data.sample_submission))
    description = describe(run, message)
    ref = submissions.submit_file(Path(path), description, quiet)
    print(f"submitted {path} ({len(table)} rows) as submission {ref}: {description}")
    if wait:
        _wait(ref, poll_seconds, timeout, quiet)
    return ref


def _wait(ref: int, poll_seconds: float, timeout: float, quiet: bool) -> None:
    status, score = submissions.wait_for_score(ref, poll_seconds, timeout, quiet)
    if score is not None:
        print(f"submission {ref}: public score {score}")
    else:
        print(f"submission {ref}: still {status} on Kaggle; see {submissions.SUBMISSIONS_URL}")


def submit_kernel_version(kernel: str | None = None, version: int | None = None,
                          kernel_dir: Path | None = None, file_name: str = "submission.csv",
                          message: str | None = None, run: config.RunPaths | None = None,
                          wait: bool = False, poll_seconds: float = 60.0,
                          timeout: float = WAIT_SECONDS, quiet: bool = False) -> int:
    """Submit a kernel version (the code-competition path), by default the version that the
    last ``push-kernel`` of ``kernel_dir`` recorded, once its run has completed."""
    if kernel is None or version is None:
        if kernel_dir is None:
            raise ValueError("pass --kernel-dir (the folder push-kernel pushed), or --kernel "
                             "owner/slug with --kernel-version N")
        pushed, last = push.pushed_version(Path(kernel_dir))
        if kernel not in (None, pushed) and version is None:
            raise ValueError(f"--kernel {kernel} is not the kernel {kernel_dir} pushed "
                             f"({pushed}): pass --kernel-version too")
        kernel, version = kernel or pushed, version or last
    api.check_ref(kernel, "--kernel", "kernel")
    if int(version) < 1:
        raise ValueError(f"--kernel-version {version!r}: pass the version number that "
                         "`push-kernel` printed (1 or more)")
    status, failure = push.session_status(kernel, int(version))
    if status != "COMPLETE":
        hint = (f"it failed ({failure or 'no message'}): fix it and push a new version"
                if status == "ERROR" else "wait until `make kernel-status` says COMPLETE")
        raise api.KaggleError(f"kernel {kernel} version {version} is {status}, and Kaggle "
                              f"scores only a version whose run completed: {hint}")
    description = describe(run or config.resolve_run_dir(), message)
    ref = submissions.submit_code(kernel, int(version), file_name, description)
    print(f"submitted {file_name} of {kernel} version {version} as submission {ref}: "
          f"{description}; Kaggle now reruns the kernel on the hidden test set (up to its "
          "run-time limit, plus a queue)")
    if wait:
        _wait(ref, poll_seconds, timeout, quiet)
    return ref
