"""The only module that imports ``kaggle``: the client (its version checked at first use), the
remote-call wrapper with its retries and errors, the download, and the owner/slug rules.

``import kaggle`` authenticates at import time, so it happens inside ``client()`` once
``check_credentials()`` has found credentials. Every remote call goes through ``call()``: HTTP
429 and 5xx are retried with exponential backoff (a create only on 429/503, when the server
surely did nothing); 401, 403, 404 and an unreachable server become one ``KaggleError`` saying
what to do. The client's own retries (10 tries, minutes when offline) are turned off. No function
here prints or logs a key or token.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.config import COMPETITION
from pipeline.kaggle.credentials import TOKEN_URL, check_credentials, config_dir

log = logging.getLogger(__name__)

COMPETITION_URL = f"https://www.kaggle.com/c/{COMPETITION}"
RULES_URL = f"{COMPETITION_URL}/rules"
# The client range the calls here are written against (setup.cfg says the same).
CLIENT_RANGE = ((2, 2, 5), (3,))
TRIES_ENV, DELAY_ENV = "SEVERSTAL_KAGGLE_TRIES", "SEVERSTAL_KAGGLE_RETRY_DELAY"
RETRY_ANY = frozenset({429, 500, 502, 503, 504})
# Calls that create something are retried only when the server surely did nothing.
RETRY_UNPROCESSED = frozenset({429, 503})
NO_COMPETITION = (f"unknown competition {COMPETITION!r}: check that {COMPETITION_URL} exists and "
                  "that this account can see it")


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


def split_kernel_version(ref: str | None, flag: str) -> tuple[str, int | None]:
    """``owner/slug`` or ``owner/slug/N`` -> (``owner/slug``, N or None); ValueError if neither."""
    ref = ref or ""
    base, _, version = ref.rpartition("/") if ref.count("/") == 2 else (ref, "", "")
    if version and not (version.isdigit() and int(version) >= 1):
        raise ValueError(f"{flag} {ref!r}: the version after the second '/' must be a number "
                         "(1 or more), as push-kernel prints it")
    return check_ref(base, flag, "kernel"), int(version) if version else None


def slugify(title: str) -> str:
    """The slug Kaggle derives from a kernel title (the client's own ``slugify``)."""
    from slugify import slugify as kaggle_slugify  # python-slugify, as the client uses

    return kaggle_slugify(title)


def check_client_version(version: str) -> None:
    """RuntimeError naming the fix unless ``version`` is in the range the code is written for."""
    numbers = tuple(int(n) for n in re.findall(r"\d+", version)[:3])
    if not CLIENT_RANGE[0] <= numbers < CLIENT_RANGE[1]:
        least, below = (".".join(map(str, v)) for v in CLIENT_RANGE)
        raise RuntimeError(
            f"the installed kaggle client is {version}, but this pipeline needs kaggle>={least},"
            f"<{below} (on Python >= 3.11; older Pythons get kaggle 1.x, which lacks calls it "
            f"makes): run `pip install 'kaggle>={least},<{below}'`, or `make install`")


def client() -> Any:
    """An authenticated ``kaggle.KaggleApi`` following the current environment."""
    from importlib import metadata

    source = check_credentials()
    check_client_version(metadata.version("kaggle"))
    # The client prints notices on stdout (auth help, its own permission warning): ours suffice.
    with contextlib.redirect_stdout(io.StringIO()):
        import kaggle  # authenticates a module-level instance at import time

        api = kaggle.KaggleApi()
        # Class attributes were fixed at the first import; follow today's environment instead.
        # `args` never holds --verbose, which would print request headers (the credentials).
        api.config_dir = str(config_dir())
        api.config = os.path.join(api.config_dir, "kaggle.json")
        api.args = ["--local"] if os.environ.get("KAGGLE_API_ENVIRONMENT") == "LOCALHOST" else []
        # The client retries creates and uploads up to 10 times on a dropped connection
        # (minutes offline, and a second dataset or version when the first try took effect):
        # one try each; `call` decides what is safe to repeat.
        api.with_retry = functools.partial(type(api).with_retry, api, max_retries=1)
        try:
            call("signing in to Kaggle", api.authenticate)
        except SystemExit:
            raise KaggleError(f"Kaggle did not accept the credentials in {source}: create a new "
                              f"token at {TOKEN_URL} (API > Create New Token) and replace "
                              "them") from None
    return api


def username(api: Any) -> str:
    """The signed-in user's name, as the client resolved it (token introspection or key)."""
    return str(api.config_values.get("username") or "")


def _explain(error: Exception, status: int | None, what: str, rules: bool,
             missing: str | None, forbidden: str | None, tries: int) -> str:
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
    if status == 403 and forbidden:
        return f"Kaggle refused {what} ({code}): {forbidden}"
    if status == 403 and rules:
        return (f"Kaggle refused {what} ({code}): this account has not accepted the "
                f"competition rules; accept them at {RULES_URL}, then run again")
    if status == 403:
        return (f"Kaggle refused {what} ({code}): this account may not access it (private, or "
                "another owner's)")
    if status == 404:
        return f"{missing} ({code})" if missing else f"not found while {what} ({code})"
    if status is not None and (status == 429 or status >= 500):
        return f"Kaggle kept failing while {what} ({code}; {tries} tries): try again later"
    return f"Kaggle failed while {what} ({code})"


def _retry_after(response: Any) -> float | None:
    try:
        return min(float(response.headers["Retry-After"]), 60.0)
    except (AttributeError, KeyError, TypeError, ValueError):
        return None


def _offline(error: Exception, what: str, created: str | None) -> KaggleError:
    reason = re.search(r"\[Errno -?\d+\][^'\")]*", str(error))
    if created and not reason:  # connected, then lost: the request may have taken effect
        return KaggleError(f"the connection to Kaggle dropped while {what} "
                           f"({type(error).__name__}): it may have taken effect; {created}")
    return KaggleError(
        f"cannot reach Kaggle while {what}: offline, DNS failure or connection refused "
        f"({reason.group(0) if reason else type(error).__name__}); check the network "
        "(and any HTTP_PROXY), then run again")


def call(what: str, fn: Callable[..., Any], *args: Any, rules: bool = False,
         missing: str | None = None, forbidden: str | None = None,
         retry_on: frozenset = RETRY_ANY, created: str | None = None, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``; retries HTTP ``retry_on`` with backoff, else a clear KaggleError.

    ``missing`` / ``forbidden``: what a 404 / 403 means for this call. ``created``: for a call
    that creates something, what to check when the connection drops mid-call (it is never
    repeated then). A connection that cannot be opened is reported at once, never retried.
    """
    import requests

    tries = max(1, int(os.environ.get(TRIES_ENV) or 4))
    delay = float(os.environ.get(DELAY_ENV) or 1.0)
    for attempt in range(1, tries + 1):
        try:
            return fn(*args, **kwargs)
        except requests.HTTPError as error:
            status = error.response.status_code if error.response is not None else None
            if status not in retry_on or attempt == tries:
                raise KaggleError(_explain(error, status, what, rules, missing, forbidden,
                                           attempt)) from None
            wait = _retry_after(error.response) or delay * 2 ** (attempt - 1)
            log.warning("HTTP %s while %s; retry %d/%d in %.3g s", status, what, attempt,
                        tries - 1, wait)
            time.sleep(wait)
        except (requests.ConnectionError, requests.Timeout) as error:
            raise _offline(error, what, created) from None
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


def or_none_if_404(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``, or None when it answers HTTP 404 (something not there, or not yet)."""
    import requests

    try:
        return fn(*args)
    except requests.HTTPError as error:
        if error.response is not None and error.response.status_code == 404:
            return None
        raise
