"""The weights dataset: stage it (weights-only checkpoints, beside a zoo model's its exported
program, post-processing and config), then create it on Kaggle or add a version (never twice),
wait until Kaggle has processed it, and check that a kernel can attach it."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import fileio
from pipeline.config import RunPaths, code_version
from pipeline.kaggle import api

log = logging.getLogger(__name__)

WEIGHT_KEYS = ("model", "model_info", "config", "fold", "epoch", "code_version")
POLL_ENV = "SEVERSTAL_KAGGLE_POLL_SECONDS"
READY, FAILED = "ready", "failed"


@dataclass(frozen=True)
class WeightsUpload:
    """What ``upload_weights`` did: the dataset, new or versioned, its files, URL and state."""

    dataset: str
    created: bool  # a new dataset; False: a version added to an existing one
    files: tuple[str, ...]
    url: str
    ready: bool  # Kaggle finished processing it within the wait

    @property
    def verb(self) -> str:
        """'created' or 'added a version to', as the upload did."""
        return "created" if self.created else "added a version to"


def url(dataset: str) -> str:
    """The dataset's page on Kaggle."""
    return f"https://www.kaggle.com/datasets/{dataset}"


def _write_if_changed(path: Path, data: bytes) -> None:
    # An unchanged file keeps its mtime, so the client can resume an interrupted upload of it.
    if not (path.is_file() and path.read_bytes() == data):
        fileio.write_bytes(path, data)


def _stage_checkpoints(checkpoints: list[Path], folder: Path) -> dict[str, Path]:
    """Weights-only ``fold<k>.pt`` (and ``fold<k>.pt2`` for a zoo model) -> their source."""
    import torch

    from pipeline import checkpoint
    from pipeline.models import registry

    sources: dict[str, Path] = {}
    for path in map(Path, checkpoints):
        state = checkpoint.load(path)
        if "model" not in state or "model_info" not in state:
            raise ValueError(f"{path} is not a checkpoint of this pipeline (no model_info)")
        name = f"fold{state['fold']}.pt" if "fold" in state else f"{path.parent.name}.pt"
        if name in sources:
            raise ValueError(f"{path} and {sources[name]} would both be {name}: pass one "
                             "checkpoint per fold")
        sources[name] = path
        buffer = io.BytesIO()  # no optimizer, scheduler or scaler state: weights only
        torch.save({k: state[k] for k in WEIGHT_KEYS if k in state}, buffer)
        _write_if_changed(folder / name, buffer.getvalue())
        if registry.spec_of(state, path).requires:
            exported = folder / f"{Path(name).stem}.pt2"
            registry.export(registry.rebuild(state, path), exported)
            sources[exported.name] = path
    return sources


def stage_weights(run: RunPaths, checkpoints: list[Path], dataset: str, title: str,
                  folder: Path) -> list[str]:
    """Write weights-only checkpoints, postprocess.json, config.json and dataset metadata;
    beside each checkpoint of a model that needs smp/timm, its ``torch.export`` program
    (``fold<k>.pt2``), which the offline kernel runs with torch alone."""
    for needed, fix in ((run.config_json, "train first (`make train`)"),
                        (run.postprocess_json, "run `make cv` first")):
        if not needed.is_file():
            raise FileNotFoundError(f"{needed} does not exist: {fix}")
    if not checkpoints:
        raise FileNotFoundError(f"no checkpoint {run.checkpoints}/fold*/best.pt: train first "
                                "(`make train`) or pass --checkpoints")
    sources = _stage_checkpoints(checkpoints, folder)
    for source in (run.postprocess_json, run.config_json):
        _write_if_changed(folder / source.name, source.read_bytes())
    metadata = {"title": title, "id": dataset, "licenses": [{"name": "CC0-1.0"}]}
    _write_if_changed(folder / "dataset-metadata.json",
                      (json.dumps(metadata, indent=2) + "\n").encode())
    keep = {*sources, run.postprocess_json.name, run.config_json.name, "dataset-metadata.json"}
    for stale in folder.iterdir():
        if stale.name not in keep:
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    return sorted(keep - {"dataset-metadata.json"})


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
                       quiet: bool, wait_seconds: float) -> tuple[bool, Any]:
    """(True if the dataset was created, else False for a new version; the response)."""
    state = status(client, dataset)
    created = (f"see {url(dataset)}: upload-weights adds a version when the dataset exists, so "
               "run it again only if none was made")
    if state is None:
        return True, api.call(
            f"creating dataset {dataset}", client.dataset_create_new, str(folder),
            public=public, quiet=quiet, dir_mode="skip", retry_on=api.RETRY_UNPROCESSED,
            created=created)
    if state != READY:  # Kaggle refuses a version while one is processing
        log.info("dataset %s is still processing its last version (%s): waiting", dataset,
                 state.upper())
        wait_until_ready(client, dataset, wait_seconds, quiet)
    processing = status(client, dataset) != READY
    return False, api.call(
        f"adding a version to dataset {dataset}", client.dataset_create_version, str(folder),
        notes, quiet=quiet, dir_mode="skip", retry_on=api.RETRY_UNPROCESSED, created=created,
        forbidden=("Kaggle is still processing its previous version: wait, then run again"
                   if processing else "this account may not add versions to it (another "
                   "owner's, or shared without edit rights)"))


def upload_weights(run: RunPaths, checkpoints: list[Path] | None, dataset: str,
                   title: str | None = None, message: str | None = None, public: bool = False,
                   quiet: bool = False, wait_seconds: float = 1800.0) -> WeightsUpload:
    """Stage the run's weights, create the Kaggle dataset or add a version, and wait (at most
    ``wait_seconds``) until Kaggle has processed it."""
    api.check_ref(dataset, "--dataset", "dataset")
    if checkpoints is None:
        checkpoints = run.find_checkpoints()
    slug = dataset.split("/")[1]
    folder = run.root / "kaggle-dataset"
    names = stage_weights(run, checkpoints, dataset, title or slug.replace("-", " ").title(),
                          folder)
    log.info("staged %s in %s", ", ".join(names), folder)
    notes = message or f"code {code_version()}: {', '.join(names)}"
    client = api.client()
    _check_owner(client, dataset)
    created, response = _create_or_version(client, dataset, folder, notes, public,
                                           api.quiet_client(quiet), wait_seconds)
    if response.error:
        raise api.KaggleError(f"Kaggle refused dataset {dataset}: {response.error}")
    link = response.url or url(dataset)
    log.info("uploaded to %s: waiting until Kaggle has processed it (at most %.0f s)", link,
             wait_seconds)
    ready = wait_until_ready(client, dataset, wait_seconds, quiet)
    return WeightsUpload(dataset, created, tuple(names), link, ready)
