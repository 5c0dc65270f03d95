"""The weights dataset: stage it (weights-only checkpoints, beside a zoo model's its exported
program, post-processing and config), then create it on Kaggle or add a version (never twice),
wait until Kaggle has processed it, and check that a kernel can attach it."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import fileio
from pipeline.config import RunPaths, code_version
from pipeline.kaggle import api
from pipeline.kaggle.kernel import DRIFT_FILE, MODELS_FILE

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


def _stage_checkpoints(entries: list[tuple[Path, float, str]],
                       folder: Path) -> tuple[dict[str, Path], list[dict]]:
    """Weights-only ``<prefix>fold<k>.pt`` (and ``.pt2`` beside a zoo model's) of ``(checkpoint,
    weight, prefix)`` entries -> (staged name -> source, the ``models.json`` entries in order)."""
    import torch

    from pipeline import checkpoint
    from pipeline.models import registry

    sources: dict[str, Path] = {}
    models = []
    for path, weight, prefix in entries:
        path = Path(path)
        state = checkpoint.load(path)
        fold = f"fold{state['fold']}" if "fold" in state else path.parent.name
        name = f"{prefix}{fold}.pt"
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
        models.append({"file": name, "weight": weight,
                       "digest": checkpoint.digest(state["model"])})
    return sources, models


def staged_entries(source, checkpoints: list[Path] | None) -> list[tuple[Path, float, str]]:
    """``(checkpoint, weight, name prefix)`` of what a run or ensemble stages: the given
    checkpoints (weight 1), a run's folds, or every member's folds named ``<member>-fold<k>``
    with the member's weight shared by its folds (the order ``predict`` averages them in)."""
    if checkpoints is not None:
        return [(Path(p), 1.0, "") for p in checkpoints]
    return [(path, weight, f"{re.sub(r'[^A-Za-z0-9._-]', '_', member.name)}-"
             if source.is_ensemble else "") for member, path, weight in source.member_models()]


def as_source(run):
    """A run's ``RunPaths`` (or an ``ensembles.Source``) as the ``Source`` it names."""
    from pipeline.inference import ensembles

    return ensembles.resolve(run.root) if isinstance(run, RunPaths) else run


def stage_weights(source, checkpoints: list[Path] | None, dataset: str, title: str,
                  folder: Path, accept: bool = False) -> list[str]:
    """Write weights-only checkpoints, ``models.json`` (their files and weights, in order),
    postprocess.json, config.json (an ensemble: ensemble.json) and dataset metadata; beside
    each checkpoint of a model that needs smp/timm, its ``torch.export`` program (``.pt2``),
    which the offline kernel runs with torch alone. ``source``: a run or ensemble
    (``ensembles.Source``) or a run's ``RunPaths``. The post-processing must be tuned for the
    staged checkpoints (``postprocess.check_models``) unless ``accept``, which ``models.json``
    then records for the kernel."""
    from pipeline.inference import ensembles
    from pipeline.inference.postprocess import PostProcess, check_models

    source = as_source(source)
    run = source.paths
    described = run.root / ensembles.ENSEMBLE_FILE if source.is_ensemble else run.config_json
    for needed, fix in ((described, "train first (`make train`)"),
                        (run.postprocess_json, "run `make cv` first")):
        if not needed.is_file():
            raise FileNotFoundError(f"{needed} does not exist: {fix}")
    entries = staged_entries(source, checkpoints)
    if not entries:
        raise FileNotFoundError(f"no checkpoint {run.checkpoints}/fold*/best.pt: train first "
                                "(`make train`) or pass --checkpoints")
    params = PostProcess.load(run.postprocess_json)
    sources, models = _stage_checkpoints(entries, folder)
    check_models(params, {str(sources[m["file"]]): m["digest"] for m in models},
                 str(run.postprocess_json), accept)
    for staged in (run.postprocess_json, described):
        _write_if_changed(folder / staged.name, staged.read_bytes())
    listing = {"models": models, "accept_postprocess": accept}
    _write_if_changed(folder / MODELS_FILE, (json.dumps(listing, indent=2) + "\n").encode())
    staged_drift = _stage_drift(run, folder)
    metadata = {"title": title, "id": dataset, "licenses": [{"name": "CC0-1.0"}]}
    _write_if_changed(folder / "dataset-metadata.json",
                      (json.dumps(metadata, indent=2) + "\n").encode())
    keep = {*sources, run.postprocess_json.name, described.name, MODELS_FILE,
            "dataset-metadata.json", *staged_drift}
    for stale in folder.iterdir():
        if stale.name not in keep:
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    return sorted(keep - {"dataset-metadata.json"})


def _stage_drift(run: RunPaths, folder: Path) -> list[str]:
    """``drift.json``, the reference of the kernel's drift check, from the cv report (older
    reports have none: the kernel then skips the check)."""
    report = run.reports / "cv.json"
    reference = json.loads(report.read_text()).get("drift") if report.is_file() else None
    if reference is None:
        log.warning("%s has no drift reference: rerun `make cv` so the kernel can check its "
                    "test predictions against the out-of-fold ones", report)
        return []
    _write_if_changed(folder / DRIFT_FILE, (json.dumps(reference, indent=2) + "\n").encode())
    return [DRIFT_FILE]


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


def upload_weights(run, checkpoints: list[Path] | None, dataset: str,
                   title: str | None = None, message: str | None = None, public: bool = False,
                   quiet: bool = False, wait_seconds: float = 1800.0,
                   accept: bool = False) -> WeightsUpload:
    """Stage the weights of a run or ensemble (``ensembles.Source`` or ``RunPaths``), create
    the Kaggle dataset or add a version, and wait (at most ``wait_seconds``) until Kaggle has
    processed it."""
    api.check_ref(dataset, "--dataset", "dataset")
    slug = dataset.split("/")[1]
    run = as_source(run)
    folder = run.root / "kaggle-dataset"
    names = stage_weights(run, checkpoints, dataset, title or slug.replace("-", " ").title(),
                          folder, accept)
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
