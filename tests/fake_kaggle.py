"""A local stand-in for the Kaggle API, spoken to by the real ``kaggle`` client.

It answers as the real service does where that is less kind than a plain success: Severstal is a
kernels-only competition (``CreateSubmission`` answers an error body; the listing says
``isKernelsSubmissionsOnly``); ``SaveKernel`` creates a new kernel under the slug of its *title*
and reports sources it cannot attach in ``invalid*Sources`` next to a success; a dataset goes
through processing states before ``GetDatasetStatus`` says READY, and a version created while
one is processing is refused with 403; kernel versions have their own run states; access tokens
are checked with ``IntrospectToken`` and sent as Bearer, legacy keys as Basic auth.

The client runs with ``KAGGLE_API_ENVIRONMENT=LOCALHOST`` (endpoint ``http://localhost``) and
``HTTP_PROXY`` pointing here, so every request arrives with an absolute URI. Only the remote
service is replaced: ``POST /api/v1/<service>/<Method>`` with camelCase JSON, the 302 to a signed
archive URL (with Range / If-Range / ETag), and the PUT of uploaded bytes. Every request is
recorded (method, path, headers, JSON body, raw bytes) for the tests to inspect.
"""

from __future__ import annotations

import base64
import json
import re
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlparse

import pytest

USERNAME = "tester"
KEY = "fake-kaggle-key-5d41402abc4b2a76"  # must never appear in any output or file
TOKEN = "KGAT_fake0access0token0c4ca4238a0b9"  # an access token ("Create New Token"); likewise
COMPETITION = "severstal-steel-defect-detection"
BLOB_PATH = f"/storage/kaggle-competitions-data/{COMPETITION}.zip"
LAST_MODIFIED = "Mon, 01 Jul 2019 12:00:00 GMT"
ETAG = '"archive-v1"'


@dataclass
class Request:
    """One request as the server saw it."""

    method: str
    path: str
    name: str
    headers: dict
    body: Any
    data: bytes


class FakeKaggle:
    """Scripted state of the fake service; tests set fields and read ``requests``."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self.archive = b""
        self.rules_accepted = True
        self.failures: dict[str, list[int]] = {}
        self.cut_first_download: int | None = None  # bytes sent before the connection stalls
        self.release = threading.Event()  # set to let a stalled download drop its connection
        self.blob_status: int | None = None  # e.g. 403: the signed archive URL has expired
        self.submission_statuses = ["COMPLETE"]
        self.public_score = "0.8556"
        self.kernels_only = True  # the listing's isKernelsSubmissionsOnly
        self.accepting = True  # False: the competition no longer takes submissions (404)
        # A dataset's status sequence: each GetDatasetStatus moves one step, the last stays.
        self.processing = ["BLOBS_RECEIVED", "BLOBS_DECOMPRESSED", "READY"]
        self.datasets: dict[str, list[str]] = {}
        # kernel "owner/slug" -> its versions' run states, version 1 first; a new version
        # starts with `new_version_states` and moves one step per status read.
        self.kernels: dict[str, list[list[str]]] = {}
        self.new_version_states = ["QUEUED", "RUNNING", "COMPLETE"]
        self.kernel_failure = "Your notebook hit an error"
        self.save_kernel_extra: dict = {}  # e.g. {"invalidDatasetSources": [...]}
        self.drop: set[str] = set()  # methods whose connection drops after they took effect
        self.uploads: dict[str, bytes] = {}
        self.blob_names: dict[str, str] = {}

    def add_dataset(self, ref: str, *states: str) -> None:
        """A dataset that exists, in these states (default READY)."""
        self.datasets[ref] = list(states or ("READY",))

    def add_kernel(self, ref: str, *versions: str) -> None:
        """A kernel whose versions 1, 2, ... are in these (final) run states."""
        self.kernels[ref] = [[state] for state in versions]

    def fail(self, name: str, *statuses: int) -> None:
        """Answer the next calls of ``name`` with these HTTP statuses, in order."""
        self.failures.setdefault(name, []).extend(statuses)

    def named(self, name: str) -> list[Request]:
        """The recorded requests of one API method (or 'GET'/'PUT' of a blob)."""
        return [r for r in self.requests if r.name == name]


class Handler(BaseHTTPRequestHandler):
    """Dispatches ``POST /api/v1/<service>/<Method>`` to ``api_<Method>``."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    @property
    def fake(self) -> FakeKaggle:
        return self.server.fake

    def _read(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while (size := int(self.rfile.readline().strip() or b"0", 16)):
                data += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
            return data
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _record(self, name: str, body: Any, data: bytes) -> None:
        with self.fake.lock:
            self.fake.requests.append(Request(self.command, urlparse(self.path).path, name,
                                              dict(self.headers), body, data))

    def _send(self, status: int, data: bytes = b"", headers: dict | None = None) -> None:
        if getattr(self, "mute", False):  # the connection drops: no answer at all
            self.close_connection = True
            return
        self.send_response(status)
        for key, value in {"Content-Length": str(len(data)), **(headers or {})}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _json(self, status: int, obj: dict) -> None:
        self._send(status, json.dumps(obj).encode(), {"Content-Type": "application/json"})

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"code": status, "message": message})

    def do_POST(self) -> None:
        data = self._read()
        name = urlparse(self.path).path.rsplit("/", 1)[-1]
        body = json.loads(data or b"{}")
        self._record(name, body, data)
        basic = base64.b64encode(f"{USERNAME}:{KEY}".encode()).decode()
        if name != "IntrospectToken" and self.headers.get("Authorization") not in (
                f"Basic {basic}", f"Bearer {TOKEN}"):
            return self._error(401, "Unauthenticated")
        self.mute = name in self.fake.drop
        with self.fake.lock:
            queued = self.fake.failures.get(name)
            status = queued.pop(0) if queued else None
        if status:
            return self._error(status, f"injected HTTP {status}")
        handler = getattr(self, f"api_{name}", None)
        if handler is None:
            return self._error(400, f"the fake server does not know {name}")
        handler(body)

    def do_GET(self) -> None:
        self._record("GET", None, b"")
        if urlparse(self.path).path != BLOB_PATH:
            return self._send(404)
        if self.fake.blob_status:
            return self._send(self.fake.blob_status, b"<Error>ExpiredToken</Error>",
                              {"Content-Type": "application/xml"})
        blob, start = self.fake.archive, 0
        headers = {"Content-Type": "application/zip", "Accept-Ranges": "bytes", "ETag": ETAG,
                   "Last-Modified": LAST_MODIFIED}
        wanted = self.headers.get("Range", "")
        if wanted.startswith("bytes=") and self.headers.get("If-Range", ETAG) == ETAG:
            start = int(wanted[len("bytes="):].split("-")[0])
            headers["Content-Range"] = f"bytes {start}-{len(blob) - 1}/{len(blob)}"
        with self.fake.lock:
            cut, self.fake.cut_first_download = self.fake.cut_first_download, None
        self.send_response(206 if start else 200)
        for key, value in {"Content-Length": str(len(blob) - start), **headers}.items():
            self.send_header(key, value)
        self.end_headers()
        if cut is None:
            self.wfile.write(blob[start:])
            return
        self.wfile.write(blob[start:start + cut])  # then stall, as a dying network does
        self.wfile.flush()
        self.fake.release.wait(30)
        self.close_connection = True

    def do_PUT(self) -> None:
        data = self._read()
        self._record("PUT", None, data)
        self.fake.uploads[urlparse(self.path).path.rsplit("/", 1)[-1]] = data
        self._send(200)

    def api_DownloadDataFiles(self, body: dict) -> None:
        if body.get("competitionName") != COMPETITION:
            return self._error(404, "Competition not found")
        if not self.fake.rules_accepted:
            return self._error(403, "You must accept this competition's rules first")
        self._send(302, headers={"Location": f"http://localhost{BLOB_PATH}?Signature=abc"})

    def api_IntrospectToken(self, body: dict) -> None:
        if body.get("token") != TOKEN:
            return self._json(200, {"active": False})
        self._json(200, {"active": True, "username": USERNAME})

    def api_ListCompetitions(self, body: dict) -> None:
        entry = {"ref": f"https://www.kaggle.com/competitions/{COMPETITION}",
                 "title": "Severstal: Steel Defect Detection", "category": "Featured",
                 "isKernelsSubmissionsOnly": self.fake.kernels_only,
                 "submissionsDisabled": not self.fake.accepting}
        found = [entry] if body.get("search", "") in COMPETITION else []
        self._json(200, {"competitions": found})

    def _competition_open(self, body: dict) -> bool:
        if body.get("competitionName") != COMPETITION or not self.fake.accepting:
            self._error(404, "Competition not found or not accepting submissions")
            return False
        return True

    def api_StartSubmissionUpload(self, body: dict) -> None:
        if self._competition_open(body):
            self._json(200, {"token": "submission-token",
                             "createUrl": "http://localhost/upload/submission-token"})

    def api_CreateSubmission(self, body: dict) -> None:
        if not self._competition_open(body):
            return
        if self.fake.kernels_only:
            return self._error(400, "This competition only accepts submissions from Notebooks")
        self._json(200, {"message": "Successfully submitted", "ref": 4242})

    def _kernel_version(self, ref: str, version: int | None) -> list[str] | None:
        versions = self.fake.kernels.get(ref, [])
        if version is None:
            return versions[-1] if versions else None
        return versions[version - 1] if 1 <= version <= len(versions) else None

    def api_CreateCodeSubmission(self, body: dict) -> None:
        if not self._competition_open(body):
            return
        ref = f"{body.get('kernelOwner')}/{body.get('kernelSlug')}"
        states = self._kernel_version(ref, body.get("kernelVersion"))
        if states is None:
            return self._error(404, f"Kernel {ref} version {body.get('kernelVersion')} not found")
        if states[0] != "COMPLETE":
            return self._error(400, "The notebook version has not completed successfully")
        self._json(200, {"message": "Successfully submitted", "ref": 4343})

    def api_GetSubmission(self, body: dict) -> None:
        with self.fake.lock:
            statuses = self.fake.submission_statuses
            status = statuses.pop(0) if len(statuses) > 1 else statuses[0]
        answer = {"ref": body.get("ref"), "status": status}
        if status == "COMPLETE":
            answer["publicScore"] = self.fake.public_score
        if status == "ERROR":
            answer["errorDescription"] = "Notebook Threw Exception"
        self._json(200, answer)

    def api_StartBlobUpload(self, body: dict) -> None:
        with self.fake.lock:
            token = f"blob-{len(self.fake.blob_names)}"
            self.fake.blob_names[token] = body["name"]
        self._json(200, {"token": token, "createUrl": f"http://localhost/upload/{token}"})

    def api_GetDatasetStatus(self, body: dict) -> None:
        ref = f"{body.get('ownerSlug')}/{body.get('datasetSlug')}"
        with self.fake.lock:
            states = self.fake.datasets.get(ref)
            if states is None:
                return self._error(404, "Dataset not found")
            status = states.pop(0) if len(states) > 1 else states[0]
        self._json(200, {"status": status})

    def api_CreateDataset(self, body: dict) -> None:
        ref = f"{body['ownerSlug']}/{body['slug']}"
        if ref in self.fake.datasets:
            return self._error(409, "Slug already in use")
        self.fake.datasets[ref] = list(self.fake.processing)
        self._json(200, {"ref": ref, "url": f"https://www.kaggle.com/datasets/{ref}",
                         "status": "Ok"})

    def api_CreateDatasetVersion(self, body: dict) -> None:
        ref = f"{body['ownerSlug']}/{body['datasetSlug']}"
        states = self.fake.datasets.get(ref)
        if states is None:
            return self._error(404, "Dataset not found")
        if body["ownerSlug"] != USERNAME or states[0] != "READY":
            return self._error(403, "Permission 'datasets.update' was denied")
        self.fake.datasets[ref] = list(self.fake.processing)
        self._json(200, {"ref": ref, "url": f"https://www.kaggle.com/datasets/{ref}",
                         "status": "Ok"})

    def api_SaveKernel(self, body: dict) -> None:
        owner, _, slug = body["slug"].partition("/")
        ref = body["slug"]
        if ref not in self.fake.kernels:  # a new kernel's slug comes from its title
            ref = f"{owner}/{slugify(body.get('newTitle') or slug)}"
        invalid = {
            "invalidDatasetSources": [d for d in body.get("datasetDataSources", [])
                                      if self.fake.datasets.get(d, ["?"])[-1] != "READY"],
            "invalidCompetitionSources": [c for c in body.get("competitionDataSources", [])
                                          if c != COMPETITION],
            "invalidKernelSources": [k for k in body.get("kernelDataSources", [])
                                     if k not in self.fake.kernels]}
        with self.fake.lock:
            versions = self.fake.kernels.setdefault(ref, [])
            versions.append(list(self.fake.new_version_states))
        self._json(200, {"ref": f"/code/{ref}", "url": f"https://www.kaggle.com/code/{ref}",
                         "versionNumber": len(versions), **invalid,
                         **self.fake.save_kernel_extra})

    def api_GetKernelSessionStatus(self, body: dict) -> None:
        ref = f"{body.get('userName')}/{body.get('kernelSlug')}"
        label = body.get("versionLabel")
        version = int(label[1:]) if label else None
        with self.fake.lock:
            states = self._kernel_version(ref, version)
            if states is None:
                return self._error(404, "Notebook not found")
            status = states.pop(0) if len(states) > 1 else states[0]
        answer = {"status": status}
        if status == "ERROR":
            answer["failureMessage"] = self.fake.kernel_failure
        self._json(200, answer)


def slugify(title: str) -> str:
    """Kaggle's slug of a title: lower case, runs of anything else than letters and digits
    become one dash."""
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


class Server(ThreadingHTTPServer):
    """Quiet about clients that hang up mid-response (a resumed or interrupted download)."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@pytest.fixture(name="fake_kaggle")
def fake_kaggle_fixture(monkeypatch: pytest.MonkeyPatch, tmp_path) -> Iterator[FakeKaggle]:
    """A running fake service; the client is pointed at it, credentials and HOME are fakes."""
    server = Server(("127.0.0.1", 0), Handler)
    server.fake = FakeKaggle()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    proxy = f"http://127.0.0.1:{server.server_port}"
    home = tmp_path / "home"
    (home / ".kaggle").mkdir(parents=True)
    for name, value in {"KAGGLE_API_ENVIRONMENT": "LOCALHOST", "HTTP_PROXY": proxy,
                        "http_proxy": proxy, "NO_PROXY": "", "no_proxy": "", "HOME": str(home),
                        "KAGGLE_CONFIG_DIR": str(home / ".kaggle"), "KAGGLE_USERNAME": USERNAME,
                        "KAGGLE_KEY": KEY, "SEVERSTAL_KAGGLE_RETRY_DELAY": "0.01",
                        "SEVERSTAL_KAGGLE_POLL_SECONDS": "0.01"}.items():
        monkeypatch.setenv(name, value)
    for name in ("KAGGLE_API_TOKEN", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy",
                 "VERBOSE", "VERBOSE_OUTPUT", "KAGGLE_KERNEL_RUN_TYPE", "XDG_CONFIG_HOME",
                 "SEVERSTAL_KAGGLE_TRIES", "SEVERSTAL_DATA_DIR", "SEVERSTAL_RUN_DIR"):
        monkeypatch.delenv(name, raising=False)
    yield server.fake
    server.fake.release.set()
    server.shutdown()
    server.server_close()
