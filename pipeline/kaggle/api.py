"""The only module that imports ``kaggle``: credentials, the client, retries, errors, the
calls, and the owner/slug rules.

``import kaggle`` authenticates at import time, so it happens inside ``client()`` once
``check_credentials()`` has found credentials. Every remote call goes through ``call()``: HTTP
429 and 5xx are retried with exponential backoff; 401, 403, 404 and an unreachable server become
one ``KaggleError`` saying what to do. No function here prints or logs a key or token.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.config import COMPETITION

log = logging.getLogger(__name__)

COMPETITION_URL = f"https://www.kaggle.com/c/{COMPETITION}"
RULES_URL = f"{COMPETITION_URL}/rules"
TOKEN_URL = "https://www.kaggle.com/settings"
TRIES_ENV, DELAY_ENV = "SEVERSTAL_KAGGLE_TRIES", "SEVERSTAL_KAGGLE_RETRY_DELAY"
RETRY_ANY = frozenset({429, 500, 502, 503, 504})
# Calls that create something are retried only when the server surely did nothing.
RETRY_UNPROCESSED = frozenset({429, 503})
NO_COMPETITION = (f"unknown competition {COMPETITION!r} (HTTP 404): check that {COMPETITION_URL} "
                  "exists and that this account can see it")


# Kaggle's rules for an owner/slug reference: the owner's user name, then a slug of letters,
# digits and dashes; a dataset slug has 6 to 50 characters, a kernel slug up to 50.
REF_RE = re.compile(r"[A-Za-z0-9_-]+/[A-Za-z0-9-]+")
SLUG_LENGTHS = {"dataset": (6, 50), "kernel": (1, 50)}


class KaggleError(RuntimeError):
    """A Kaggle call failed; the message says why and what to do."""


def check_ref(ref: str | None, flag: str, kind: str) -> str:
    """``ref`` if it is a valid ``owner/slug`` of a dataset or kernel, else a ValueError."""
    least, most = SLUG_LENGTHS[kind]
    slug = (ref or "").partition("/")[2]
    if not REF_RE.fullmatch(ref or "") or not least <= len(slug) <= most:
        size = f"{least}-{most}" if least > 1 else f"at most {most}"
        raise ValueError(f"{flag} {ref!r} is not an owner/slug {kind} reference: the owner's "
                         f"user name, '/', then a slug of {size} letters, digits or dashes "
                         f"(e.g. alice/severstal-{'weights' if kind == 'dataset' else 'kernel'})")
    return ref


def config_dir() -> Path:
    """Where the client reads kaggle.json: $KAGGLE_CONFIG_DIR, ~/.kaggle, else ~/.config/kaggle."""
    if os.environ.get("KAGGLE_CONFIG_DIR"):
        return Path(os.environ["KAGGLE_CONFIG_DIR"])
    legacy = Path.home() / ".kaggle"
    if sys.platform.startswith("linux") and not legacy.exists():
        return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "kaggle"
    return legacy


def _warn_if_shared(path: Path, warn: bool) -> None:
    if warn and os.name != "nt" and path.stat().st_mode & 0o077:
        log.warning("%s is readable by other users: run `chmod 600 %s`", path, path)


def check_credentials(warn: bool = True) -> str:
    """Where the client will find credentials (never their value); RuntimeError if nowhere."""
    if os.environ.get("KAGGLE_API_TOKEN"):
        return "$KAGGLE_API_TOKEN"
    for name in ("access_token", "access_token.txt", "credentials.json"):
        path = Path.home() / ".kaggle" / name
        if path.is_file() and path.stat().st_size:
            _warn_if_shared(path, warn)
            return str(path)
    user, key = os.environ.get("KAGGLE_USERNAME"), os.environ.get("KAGGLE_KEY")
    if user and key:
        return "$KAGGLE_USERNAME/$KAGGLE_KEY"
    path = config_dir() / "kaggle.json"
    fix = (f"create an API token at {TOKEN_URL} (API > Create New Token), save kaggle.json in "
           f"~/.kaggle/ or $KAGGLE_CONFIG_DIR (looked for {path}) and `chmod 600` it; or set "
           "KAGGLE_USERNAME and KAGGLE_KEY, or KAGGLE_API_TOKEN")
    if not path.is_file():
        raise RuntimeError(f"no Kaggle credentials found: {fix}")
    _warn_if_shared(path, warn)
    try:
        values = json.loads(path.read_text() or "{}")
    except ValueError:
        raise RuntimeError(f"{path} is not valid JSON: {fix}") from None
    if not (isinstance(values, dict) and (user or values.get("username"))
            and (key or values.get("key"))):
        raise RuntimeError(f"{path} lacks 'username' or 'key': {fix}")
    return str(path)


def client() -> Any:
    """An authenticated ``kaggle.KaggleApi`` following the current environment."""
    source = check_credentials()
    # The client prints notices on stdout (auth help, its own permission warning): ours suffice.
    with contextlib.redirect_stdout(io.StringIO()):
        import kaggle  # authenticates a module-level instance at import time

        api = kaggle.KaggleApi()
        # Class attributes were fixed at the first import; follow today's environment instead.
        # `args` never holds --verbose, which would print request headers (the credentials).
        api.config_dir = str(config_dir())
        api.config = os.path.join(api.config_dir, "kaggle.json")
        api.args = ["--local"] if os.environ.get("KAGGLE_API_ENVIRONMENT") == "LOCALHOST" else []
        try:
            call("signing in to Kaggle", api.authenticate)
        except SystemExit:
            raise KaggleError(f"Kaggle did not accept the credentials in {source}: create a new "
                              f"token at {TOKEN_URL} and replace them") from None
    return api


def _explain(error: Exception, status: int | None, what: str, rules: bool,
             missing: str | None, tries: int) -> str:
    try:
        message = error.response.json().get("message")
    except (AttributeError, ValueError):
        message = None
    code = f"HTTP {status}: {message}" if message else f"HTTP {status}"
    # A 403/404 of a signed file URL (expired, moved) says nothing about rules or competition.
    url = str(getattr(error.response, "url", ""))
    rules, missing = rules and "CompetitionApiService/" in url, missing if "/v1/" in url else None
    if status == 401:
        return (f"Kaggle rejected the credentials in {check_credentials(False)} while {what} "
                f"({code}): wrong, expired or revoked; create a new token at {TOKEN_URL}")
    if status == 403 and rules:
        return (f"Kaggle refused {what} ({code}): this account has not accepted the "
                f"competition rules; accept them at {RULES_URL}, then run again")
    if status == 403:
        return (f"Kaggle refused {what} ({code}): this account may not access it (private, or "
                "another owner's)")
    if status == 404:
        return missing or f"not found while {what} ({code})"
    if status is not None and (status == 429 or status >= 500):
        return f"Kaggle kept failing while {what} ({code}; {tries} tries): try again later"
    return f"Kaggle failed while {what} ({code})"


def _retry_after(response: Any) -> float | None:
    try:
        return min(float(response.headers["Retry-After"]), 60.0)
    except (AttributeError, KeyError, TypeError, ValueError):
        return None


def call(what: str, fn: Callable[..., Any], *args: Any, rules: bool = False,
         missing: str | None = None, retry_on: frozenset = RETRY_ANY, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``; retries HTTP ``retry_on`` with backoff, else a clear KaggleError."""
    import requests

    tries = max(1, int(os.environ.get(TRIES_ENV) or 4))
    delay = float(os.environ.get(DELAY_ENV) or 1.0)
    for attempt in range(1, tries + 1):
        try:
            return fn(*args, **kwargs)
        except requests.HTTPError as error:
            status = error.response.status_code if error.response is not None else None
            if status not in retry_on or attempt == tries:
                raise KaggleError(_explain(error, status, what, rules, missing, attempt)) from None
            wait = _retry_after(error.response) or delay * 2 ** (attempt - 1)
            log.warning("HTTP %s while %s; retry %d/%d in %.3g s", status, what, attempt,
                        tries - 1, wait)
            time.sleep(wait)
        except (requests.ConnectionError, requests.Timeout) as error:
            reason = re.search(r"\[Errno -?\d+\][^'\")]*", str(error))
            raise KaggleError(
                f"cannot reach Kaggle while {what}: offline, DNS failure or connection refused "
                f"({reason.group(0) if reason else type(error).__name__}); check the network "
                "(and any HTTP_PROXY), then run again") from None
    raise AssertionError("unreachable")


def quiet_client(quiet: bool) -> bool:
    """The client's own progress bars and notices: off with --quiet or when stderr is no TTY."""
    return quiet or not sys.stderr.isatty()


def download_archive(folder: Path, quiet: bool) -> Path:
    """DownloadDataFiles -> 302 -> ``folder/<competition>.zip``; a partial file is resumed."""
    from kagglesdk.competitions.types.competition_api_service import ApiDownloadDataFilesRequest

    api, outfile = client(), Path(folder) / f"{COMPETITION}.zip"

    def fetch() -> None:
        with api.build_kaggle_client() as kaggle:
            request = ApiDownloadDataFilesRequest()
            request.competition_name = COMPETITION
            response = kaggle.competitions.competition_api_client.download_data_files(request)
            # The client resumes (Range + If-Range) when its .kaggle-partial marker matches the
            # ETag; one in-process retry, the rest is ours.
            if api.download_needed(response, str(outfile), quiet=True):
                api.download_file(response, str(outfile), kaggle.http_client(),
                                  quiet_client(quiet), resume=True, max_retries=1)
            response.close()

    try:
        call("downloading the competition data", fetch, rules=True, missing=NO_COMPETITION)
    except OSError as error:
        raise RuntimeError(f"writing {outfile} failed ({error}): free disk space, then run "
                           "again to resume") from None
    return outfile


def _or_none_if_404(fn: Callable[..., Any], *args: Any) -> Any:
    import requests

    try:
        return fn(*args)
    except requests.HTTPError as error:
        if error.response is not None and error.response.status_code == 404:
            return None
        raise


def submit_file(path: Path, description: str, quiet: bool) -> int:
    """StartSubmissionUpload -> PUT -> CreateSubmission; returns the submission ref."""
    api = client()
    response = call(f"submitting {path}", api.competition_submit, str(path), description,
                    COMPETITION, quiet=quiet_client(quiet), rules=True, missing=NO_COMPETITION,
                    retry_on=RETRY_UNPROCESSED)
    if response.message == api.COMPETITION_SUBMIT_UPLOAD_FAILED_MESSAGE:
        raise KaggleError(f"uploading {path} to Kaggle failed; nothing was submitted: run again")
    return response.ref


def submit_code(kernel: str, version: int, file_name: str, description: str) -> int:
    """CreateCodeSubmission of a kernel version's output file; returns the submission ref."""
    api = client()
    response = call(f"submitting kernel {kernel} version {version}", api.competition_submit_code,
                    file_name, description, COMPETITION, kernel, version, quiet=True, rules=True,
                    retry_on=RETRY_UNPROCESSED,
                    missing=f"competition {COMPETITION!r}, kernel {kernel} or its version "
                            f"{version} not found (HTTP 404): check `kernel-status --kernel "
                            f"{kernel}` and the version number")
    return response.ref


def wait_for_score(ref: int, poll_seconds: float, timeout: float, quiet: bool) -> str:
    """Poll GetSubmission until COMPLETE (returns the public score) or ERROR (KaggleError)."""
    api, deadline = client(), time.monotonic() + timeout
    while True:
        # A fresh submission may answer 404 for a moment: count it as pending.
        found = call(f"reading submission {ref}", _or_none_if_404, api.get_submission, ref)
        status = found.status.name if found is not None else "PENDING"
        if status == "COMPLETE":
            return found.public_score or "(not published)"
        if status == "ERROR":
            raise KaggleError(f"submission {ref} failed to score: "
                              f"{found.error_description or 'no message'}")
        if time.monotonic() + poll_seconds > deadline:
            raise KaggleError(f"submission {ref} still {status} after {timeout:g} s: see "
                              f"{COMPETITION_URL}/submissions")
        if not quiet:
            log.info("submission %s: %s; next check in %g s", ref, status, poll_seconds)
        time.sleep(poll_seconds)
