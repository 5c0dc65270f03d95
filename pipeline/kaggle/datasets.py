"""The weights dataset on Kaggle: create it or add a version (never twice), wait until Kaggle
has processed it, and check that a kernel can attach it."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from pipeline.config import RunPaths, code_version
from pipeline.kaggle import api, transfer

log = logging.getLogger(__name__)

POLL_ENV = "SEVERSTAL_KAGGLE_POLL_SECONDS"
READY, FAILED = "ready", "failed"


def url(dataset: str) -> str:
    return f"https://www.kaggle.com/datasets/{dataset}"


def status(client: Any, dataset: str) -> str | None:
    """GetDatasetStatus in lower case ('ready', 'blobs_received', 'failed', ...); None: no such
    dataset visible to this account."""
    return api.call(f"reading the status of dataset {dataset}", api.or_none_if_404,
                    client.dataset_status, dataset)


def check_ready(client: Any, dataset: str) -> None:
    """KaggleError unless ``dataset`` exists, is visible and has finished processing."""
    state = status(client, dataset)
    if state is None:
        raise api.KaggleError(f"dataset {dataset} does not exist or this account cannot see it: "
                              "upload the weights first (`make upload-weights`)")
    if state == FAILED:
        raise api.KaggleError(f"Kaggle failed to process dataset {dataset} (status FAILED): "
                              f"see {url(dataset)}, then `make upload-weights` again")
    if state != READY:
        raise api.KaggleError(f"dataset {dataset} is still being processed by Kaggle (status "
                              f"{state.upper()}): a kernel cannot attach it yet; wait (`make "
                              "upload-weights` waits for it) and push again")


def wait_until_ready(client: Any, dataset: str, timeout: float, quiet: bool) -> bool:
    """Poll until Kaggle says ready (True) or ``timeout`` passes (False, with a warning);
    KaggleError when processing failed."""
    poll = float(os.environ.get(POLL_ENV) or 10.0)
    started = time.monotonic()
    while True:
        state = status(client, dataset)
        if state == READY:
            return True
        if state == FAILED or state is None:
            raise api.KaggleError(f"Kaggle failed to process dataset {dataset} (status "
                                  f"{(state or 'gone').upper()}): see {url(dataset)} for its "
                                  "message, fix it, then upload again")
        waited = time.monotonic() - started
        if waited + poll > timeout:
            log.warning("dataset %s still %s after %.0f s: Kaggle is still processing it; "
                        "push-kernel checks again before attaching it", dataset, state.upper(),
                        waited)
            return False
        if not quiet:
            log.info("dataset %s: %s after %.0f s; next check in %g s", dataset, state.upper(),
                     waited, poll)
        time.sleep(poll)


def _check_owner(client: Any, dataset: str) -> None:
    owner, user = dataset.split("/")[0], api.username(client)
    if user and owner.lower() != user.lower():
        raise api.KaggleError(f"--dataset {dataset} belongs to {owner!r}, but the credentials "
                              f"are {user!r}'s: pass --dataset {user}/{dataset.split('/')[1]}")


def _create_or_version(client: Any, dataset: str, folder: Path, notes: str, public: bool,
                       quiet: bool, wait_seconds: float) -> tuple[str, Any]:
    state = status(client, dataset)
    created = (f"see {url(dataset)}: upload-weights adds a version when the dataset exists, so "
               "run it again only if none was made")
    if state is None:
        return "created", api.call(
            f"creating dataset {dataset}", client.dataset_create_new, str(folder),
            public=public, quiet=quiet, dir_mode="skip", retry_on=api.RETRY_UNPROCESSED,
            created=created)
    if state != READY:  # Kaggle refuses a version while one is processing
        log.info("dataset %s is still processing its last version (%s): waiting", dataset,
                 state.upper())
        wait_until_ready(client, dataset, wait_seconds, quiet)
    processing = status(client, dataset) != READY
    return "added a version to", api.call(
        f"adding a version to dataset {dataset}", client.dataset_create_version, str(folder),
        notes, quiet=quiet, dir_mode="skip", retry_on=api.RETRY_UNPROCESSED, created=created,
        forbidden=("Kaggle is still processing its previous version: wait, then run again"
                   if processing else "this account may not add versions to it (another "
                   "owner's, or shared without edit rights)"))


def upload_weights(run: RunPaths, checkpoints: list[Path] | None, dataset: str,
                   title: str | None = None, message: str | None = None, public: bool = False,
                   quiet: bool = False, wait_seconds: float = 1800.0) -> str:
    """Stage the run's weights, create the Kaggle dataset or add a version, and wait (at most
    ``wait_seconds``) until Kaggle has processed it; returns its URL."""
    api.check_ref(dataset, "--dataset", "dataset")
    if checkpoints is None:
        checkpoints = run.find_checkpoints()
    slug = dataset.split("/")[1]
    folder = run.root / "kaggle-dataset"
    names = transfer.stage_weights(run, checkpoints, dataset,
                                   title or slug.replace("-", " ").title(), folder)
    notes = message or f"code {code_version()}: {', '.join(names)}"
    client = api.client()
    _check_owner(client, dataset)
    verb, response = _create_or_version(client, dataset, folder, notes, public,
                                        api.quiet_client(quiet), wait_seconds)
    if response.error:
        raise api.KaggleError(f"Kaggle refused dataset {dataset}: {response.error}")
    link = response.url or url(dataset)
    print(f"{verb} {dataset} with {', '.join(names)}: {link}")
    if wait_until_ready(client, dataset, wait_seconds, quiet):
        print(f"{dataset} is ready: `make kernel push-kernel` can attach it")
    return link
