"""Kaggle subcommands: download, submit, upload-weights, push-kernel, kernel-status.

``register(commands)`` adds them to the CLI's subparsers; each handler returns 0 or raises
ValueError / FileNotFoundError / RuntimeError with a message saying what to do.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from pipeline import config, kaggle_io

KERNEL_RE = re.compile(r"[A-Za-z0-9_-]+/[A-Za-z0-9_-]+")


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
    from pipeline import submission

    if not data.sample_submission.is_file():
        raise FileNotFoundError(f"{data.sample_submission} does not exist: run `make download` "
                                "or pass --data-dir")
    table = submission.validate(Path(path), submission.read_sample(data.sample_submission))
    description = describe(run, message)
    ref = kaggle_io.submit_file(Path(path), description, quiet)
    print(f"submitted {path} ({len(table)} rows) as submission {ref}: {description}")
    if wait:
        score = kaggle_io.wait_for_score(ref, poll_seconds, timeout, quiet)
        print(f"submission {ref}: public score {score}")
    return ref


def submit_kernel_version(kernel: str, version: int, file_name: str = "submission.csv",
                          message: str | None = None, run: config.RunPaths | None = None,
                          wait: bool = False, poll_seconds: float = 30.0,
                          timeout: float = 3600.0, quiet: bool = False) -> int:
    """Submit the output file of a kernel version (the code-competition path)."""
    if not KERNEL_RE.fullmatch(kernel or ""):
        raise ValueError(f"--kernel {kernel!r} is not 'owner/slug'")
    if version is None or int(version) < 1:
        raise ValueError(f"--kernel-version {version!r}: pass the version number that "
                         "`push-kernel` printed (1 or more)")
    description = describe(run or config.resolve_run_dir(), message)
    ref = kaggle_io.submit_code(kernel, int(version), file_name, description)
    print(f"submitted {file_name} of {kernel} version {version} as submission {ref}: "
          f"{description}")
    if wait:
        score = kaggle_io.wait_for_score(ref, poll_seconds, timeout, quiet)
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
    if kaggle_io.COMPETITION not in meta.get("competition_sources", []):
        raise ValueError(f"{path}: competition_sources lacks {kaggle_io.COMPETITION!r}, so the "
                         "kernel would not see the test images: add it")
    code = meta.get("code_file")
    if not code or not (folder / code).is_file():
        raise FileNotFoundError(f"{path}: code_file {code!r} is not a file in {folder}")
    return meta


def push_kernel(kernel_dir: Path, quiet: bool = False) -> int:
    """Push a kernel directory (kernel-metadata.json + script) with internet off; its version."""
    folder = Path(kernel_dir)
    meta = _read_kernel_metadata(folder)
    api = kaggle_io.client()
    response = kaggle_io.call(f"pushing kernel {meta.get('id')}", api.kernels_push, str(folder),
                              retry_on=kaggle_io.RETRY_UNPROCESSED)
    if response.error:
        raise kaggle_io.KaggleError(f"Kaggle refused kernel {meta.get('id')}: {response.error}")
    print(f"pushed {meta.get('id')} version {response.version_number}: {response.url}")
    return response.version_number


def _session_status(api, kernel: str):
    import requests

    try:
        return api.kernels_status(kernel)
    except ValueError as error:
        # The client rewrites 401/403 into a ValueError about benchmarks: restore the HTTP error.
        if isinstance(error.__context__, requests.HTTPError):
            raise error.__context__ from None
        raise


def kernel_status(kernel: str) -> str:
    """Print and return a kernel's latest session status (QUEUED, RUNNING, COMPLETE, ERROR...)."""
    if not KERNEL_RE.fullmatch(kernel or ""):
        raise ValueError(f"--kernel {kernel!r} is not 'owner/slug'")
    api = kaggle_io.client()
    response = kaggle_io.call(f"reading the status of kernel {kernel}", _session_status, api,
                              kernel, missing=f"kernel {kernel} not found (HTTP 404): check "
                                              "the owner/slug in its kernel-metadata.json")
    status = response.status.name
    failure = f": {response.failure_message}" if response.failure_message else ""
    print(f"{kernel}: {status}{failure}")
    return status


def _cmd_download(args: argparse.Namespace) -> int:
    from pipeline import kaggle_data

    kaggle_data.download(config.resolve_data_dir(args.data_dir), quiet=args.quiet)
    return 0


def _cmd_submit(args: argparse.Namespace) -> int:
    run = config.resolve_run_dir(args.run_dir)
    timing = {"wait": args.wait, "poll_seconds": args.poll_seconds, "timeout": args.timeout,
              "quiet": args.quiet}
    if args.kernel or args.kernel_version is not None:
        submit_kernel_version(args.kernel, args.kernel_version, args.kernel_file, args.message,
                              run, **timing)
    else:
        submit(Path(args.file), config.resolve_data_dir(args.data_dir), run, args.message,
               **timing)
    return 0


def _cmd_upload_weights(args: argparse.Namespace) -> int:
    from pipeline import kaggle_data

    checkpoints = [Path(p) for p in args.checkpoints] if args.checkpoints else None
    kaggle_data.upload_weights(config.resolve_run_dir(args.run_dir), checkpoints, args.dataset,
                               args.title, args.message, args.public, args.quiet)
    return 0


def _cmd_push_kernel(args: argparse.Namespace) -> int:
    push_kernel(Path(args.kernel_dir), args.quiet)
    return 0


def _cmd_kernel_status(args: argparse.Namespace) -> int:
    kernel_status(args.kernel)
    return 0


def _dirs(parser: argparse.ArgumentParser, data: bool = True, run: bool = True) -> None:
    if data:
        parser.add_argument("--data-dir", default=None, help="competition layout (default "
                            f"${config.DATA_DIR_ENV} or {config.DEFAULT_DATA_DIR}/)")
    if run:
        parser.add_argument("--run-dir", default=None, help="the run (default "
                            f"${config.RUN_DIR_ENV} or {config.DEFAULT_RUN_DIR}/)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def register(commands: argparse._SubParsersAction) -> None:
    """Add the Kaggle subcommands to the CLI's subparsers."""
    download = commands.add_parser("download", help="download + check the competition data")
    _dirs(download, run=False)
    download.set_defaults(func=_cmd_download)

    sub = commands.add_parser("submit", help="validate and submit a file, or a kernel version")
    sub.add_argument("--file", default=str(config.DEFAULT_SUBMISSION), help="submission.csv")
    sub.add_argument("--message", default=None, help="description (code version + CV added)")
    sub.add_argument("--wait", action="store_true", help="wait for the public score")
    sub.add_argument("--poll-seconds", type=float, default=30.0, help="seconds between checks")
    sub.add_argument("--timeout", type=float, default=3600.0, help="longest wait in seconds")
    sub.add_argument("--kernel", default=None, help="owner/slug: submit this kernel's output")
    sub.add_argument("--kernel-version", type=int, default=None, help="its version number")
    sub.add_argument("--kernel-file", default="submission.csv", help="the file it writes")
    _dirs(sub)
    sub.set_defaults(func=_cmd_submit)

    upload = commands.add_parser("upload-weights", help="weights + post-processing -> dataset")
    upload.add_argument("--dataset", required=True, help="owner/slug of the Kaggle dataset")
    upload.add_argument("--checkpoints", nargs="+", default=None,
                        help="checkpoint files (default RUN_DIR/checkpoints/fold*/best.pt)")
    upload.add_argument("--title", default=None, help="dataset title (default from the slug)")
    upload.add_argument("--message", default=None, help="version notes")
    upload.add_argument("--public", action="store_true", help="make a new dataset public")
    _dirs(upload, data=False)
    upload.set_defaults(func=_cmd_upload_weights)

    push = commands.add_parser("push-kernel", help="push a built kernel (internet off)")
    push.add_argument("--kernel-dir", required=True, help="holds kernel-metadata.json + script")
    _dirs(push, data=False, run=False)
    push.set_defaults(func=_cmd_push_kernel)

    status = commands.add_parser("kernel-status", help="a kernel's latest run status")
    status.add_argument("--kernel", required=True, help="owner/slug")
    status.set_defaults(func=_cmd_kernel_status)
