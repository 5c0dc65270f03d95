"""Where the ``kaggle`` client will find credentials, in its own order, and what to do when
there are none. Never reads a secret aloud: only the place it was found.

The client tries, in order: an access token ("Create New Token" on kaggle.com: the value or a
path in ``$KAGGLE_API_TOKEN``, else ``~/.kaggle/access_token``), sent as Bearer; then a legacy
API key ("Create Legacy API Key": ``kaggle.json`` with ``username`` and ``key``, overridden by
``$KAGGLE_USERNAME`` / ``$KAGGLE_KEY``), sent as HTTP Basic auth; then the OAuth credentials
``kaggle auth login`` caches.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger(__name__)

TOKEN_URL = "https://www.kaggle.com/settings"
TOKEN_FILES = ("access_token", "access_token.txt")


def config_dir() -> Path:
    """Where the client reads kaggle.json: $KAGGLE_CONFIG_DIR, ~/.kaggle, else ~/.config/kaggle."""
    if os.environ.get("KAGGLE_CONFIG_DIR"):
        return Path(os.environ["KAGGLE_CONFIG_DIR"])
    legacy = Path.home() / ".kaggle"
    if sys.platform.startswith("linux") and not legacy.exists():
        return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "kaggle"
    return legacy


def how_to_sign_in(kaggle_json: Path) -> str:
    """The fix for missing or broken credentials, in the order the client looks for them."""
    return (f"create an access token at {TOKEN_URL} (API > Create New Token) and put it in "
            "$KAGGLE_API_TOKEN or ~/.kaggle/access_token (`chmod 600` it); or, with a legacy "
            f"key (API > Create Legacy API Key), save kaggle.json as {kaggle_json} and "
            "`chmod 600` it, or set KAGGLE_USERNAME and KAGGLE_KEY")


def _warn_if_shared(path: Path, warn: bool) -> None:
    if warn and os.name != "nt" and path.stat().st_mode & 0o077:
        log.warning("%s is readable by other users: run `chmod 600 %s`", path, path)


def check_credentials(warn: bool = True) -> str:
    """Where the client will find credentials (never their value); RuntimeError if nowhere."""
    if os.environ.get("KAGGLE_API_TOKEN"):
        return "$KAGGLE_API_TOKEN"
    for name in TOKEN_FILES:
        path = Path.home() / ".kaggle" / name
        if path.is_file() and path.stat().st_size:
            _warn_if_shared(path, warn)
            return str(path)
    user, key = os.environ.get("KAGGLE_USERNAME"), os.environ.get("KAGGLE_KEY")
    if user and key:
        return "$KAGGLE_USERNAME/$KAGGLE_KEY"
    path = config_dir() / "kaggle.json"
    oauth = Path.home() / ".kaggle" / "credentials.json"  # from `kaggle auth login`
    if not path.is_file() and oauth.is_file() and oauth.stat().st_size:
        return str(oauth)
    if not path.is_file():
        raise RuntimeError(f"no Kaggle credentials found: {how_to_sign_in(path)}")
    _warn_if_shared(path, warn)
    try:
        values = json.loads(path.read_text() or "{}")
    except ValueError:
        raise RuntimeError(f"{path} is not valid JSON: {how_to_sign_in(path)}") from None

    def given(name: str, override: str | None) -> bool:
        value = values.get(name) if isinstance(values, dict) else None
        return bool(override) or (isinstance(value, str) and bool(value.strip()))

    if not (given("username", user) and given("key", key)):
        raise RuntimeError(f"{path} lacks 'username' or 'key' (both text, as Kaggle writes "
                           f"them): {how_to_sign_in(path)}")
    return str(path)
