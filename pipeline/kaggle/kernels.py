"""Kernels on Kaggle: build a kernel folder (the script ``pack`` makes + its metadata), push it
(internet off, title matching the slug, the weights dataset ready), record the version pushed,
and read a kernel version's run status."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import config, fileio
from pipeline.inference.config import InferenceConfig
from pipeline.kaggle import api, pack, weights

log = logging.getLogger(__name__)

RECORD = "pushed.json"  # in the kernel folder: the kernel and version the last push made


@dataclass(frozen=True)
class Built:
    """A kernel folder ``build`` wrote, and what the kernel takes from the weights dataset."""

    script: Path
    metadata: Path
    recorded: dict | None  # the inference settings of the run's postprocess.json, if any
    postprocess: Path  # that file, which upload-weights stages

    @property
    def kib(self) -> float:
        """The script's size in KiB."""
        return self.script.stat().st_size / 1024


@dataclass(frozen=True)
class Pushed:
    """A kernel version ``push_kernel`` made: ``owner/slug``, its number and its page."""

    kernel: str
    version: int
    url: str


@dataclass(frozen=True)
class KernelStatus:
    """A kernel version's run status ('QUEUED', 'RUNNING', 'COMPLETE', 'ERROR', ...)."""

    ref: str  # as asked: owner/slug (its latest version) or owner/slug/N
    status: str
    failure: str | None = None  # Kaggle's message when the run failed


def build(kernel: str, weights_dataset: str, title: str | None = None,
          out_dir: Path | None = None, settings: InferenceConfig = InferenceConfig(),
          run: config.RunPaths | None = None) -> Built:
    """Write the kernel folder (default ``kernels/<slug>``): script and kernel-metadata.json."""
    from pipeline.inference import ensembles

    api.check_ref(kernel, "--kernel", "kernel")
    folder = Path(out_dir or Path("kernels") / kernel.split("/")[1])
    run = run or config.resolve_run_dir()
    source = ensembles.resolve(run.root)
    description = source.describe(names_only=True) if source.is_ensemble or \
        run.config_json.is_file() else None
    script = pack.build(folder, kernel, title, weights_dataset, config.code_version(), settings,
                        description)
    log.info("packed %s for %s (%s) with the weights of %s", script.name, kernel,
             description or "no run", weights_dataset)
    recorded = None
    if run.postprocess_json.is_file():
        from pipeline.inference.postprocess import PostProcess

        recorded = PostProcess.load(run.postprocess_json).inference
    return Built(script, folder / "kernel-metadata.json", recorded, run.postprocess_json)


def read_metadata(folder: Path) -> dict:
    """kernel-metadata.json of a built kernel, checked as Kaggle would run it for Severstal."""
    path = folder / "kernel-metadata.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: build the kernel first (`make kernel`)")
    try:
        meta = json.loads(path.read_text())
    except ValueError as error:
        raise ValueError(f"{path} is not valid JSON ({error})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path} does not hold a JSON object: rebuild it (`make kernel`)")
    api.check_ref(meta.get("id"), f"{path}: id", "kernel")
    pack.check_title(meta.get("title"), meta["id"], str(path))
    internet = meta.get("enable_internet")
    if internet is None:
        raise ValueError(f"{path} has no enable_internet, which the kaggle client turns into "
                         'true: add "enable_internet": false')
    if str(internet).lower() != "false":
        raise ValueError(f"{path}: enable_internet is {internet!r}, but Severstal kernels run "
                         "with the internet off: set it to false")
    if config.COMPETITION not in meta.get("competition_sources", []):
        raise ValueError(f"{path}: competition_sources lacks {config.COMPETITION!r}, so the "
                         "kernel would not see the test images: add it")
    code = meta.get("code_file")
    if not code or not (folder / code).is_file():
        raise FileNotFoundError(f"{path}: code_file {code!r} is not a file in {folder}")
    return meta


def _check_saved(response: Any, kernel: str) -> str:
    """The ``owner/slug`` Kaggle saved; KaggleError for an ``error`` or a source it refused."""
    if response.error:
        raise api.KaggleError(f"Kaggle refused kernel {kernel}: {response.error}")
    refused = {"dataset": response.invalid_dataset_sources,
               "competition": response.invalid_competition_sources,
               "kernel": response.invalid_kernel_sources,
               "model": response.invalid_model_sources}
    named = "; ".join(f"{kind} source {', '.join(map(str, found))}"
                      for kind, found in refused.items() if found)
    if named:
        raise api.KaggleError(f"Kaggle saved kernel {kernel} but could not attach {named} "
                              "(missing, or not accessible to this account): fix "
                              "kernel-metadata.json or the dataset, then push again")
    saved = "/".join(str(response.ref or "").strip("/").split("/")[-2:])
    if saved and saved.lower() != kernel.lower():
        raise api.KaggleError(f"Kaggle saved the push as kernel {saved}, not {kernel}: set the "
                              "id in kernel-metadata.json to it, or delete it on Kaggle")
    return kernel


def push_kernel(kernel_dir: Path, quiet: bool = False) -> Pushed:
    """Push a kernel folder (kernel-metadata.json + script); records and returns the version."""
    folder = Path(kernel_dir)
    meta = read_metadata(folder)
    kernel = meta["id"]
    client = api.client()
    for dataset in meta.get("dataset_sources", []):
        weights.check_ready(client, dataset)
    log.info("pushing %s from %s", kernel, folder)
    response = api.call(f"pushing kernel {kernel}", client.kernels_push, str(folder),
                        retry_on=api.RETRY_UNPROCESSED,
                        created=f"check https://www.kaggle.com/code/{kernel} before pushing "
                                "again")
    _check_saved(response, kernel)
    version = int(response.version_number)
    fileio.write_json(folder / RECORD, {"kernel": kernel, "version": version,
                                        "url": response.url})
    return Pushed(kernel, version, response.url)


def pushed_version(folder: Path) -> tuple[str, int]:
    """The kernel and version the last ``push-kernel`` of ``folder`` recorded."""
    path = Path(folder) / RECORD
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: push the kernel first (`make "
                                "push-kernel`), or pass --kernel and --kernel-version")
    try:
        record = json.loads(path.read_text())
        return api.check_ref(record["kernel"], str(path), "kernel"), int(record["version"])
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"{path} is not a push record (kernel, version): push again") from None


def _session_status(client: Any, kernel: str) -> Any:
    import requests

    try:
        return client.kernels_status(kernel)
    except ValueError as error:
        # The client rewrites 401/403 into a ValueError about benchmarks: restore the HTTP error.
        if isinstance(error.__context__, requests.HTTPError):
            raise error.__context__ from None
        raise


def session_status(kernel: str, version: int | None) -> tuple[str, str | None]:
    """(status, failure message) of a kernel's version (its latest with None)."""
    client = api.client()
    name = f"{kernel}/{version}" if version else kernel
    what = f"kernel {kernel}" + (f" version {version}" if version else "")
    response = api.call(f"reading the status of {what}", _session_status, client, name,
                        missing=f"{what} not found: check the owner/slug in its "
                                "kernel-metadata.json and the version push-kernel printed")
    return response.status.name, response.failure_message or None


def kernel_status(ref: str) -> KernelStatus:
    """The run status of ``owner/slug`` (its latest version) or ``owner/slug/N``."""
    kernel, version = api.split_kernel_version(ref, "--kernel")
    return KernelStatus(ref, *session_status(kernel, version))
