"""Class probabilities -> binary class masks (one implementation for CV, predict and the
kernel), and the post-processing parameters a run tunes (``postprocess.json``).

The steps and what each value means are defined in ``steps``; ``PostProcess`` has one field of
per-class values per step, plus the head and the inference settings the values were tuned with.

``postprocess.json`` carries a format ``version``. A file of an older version loads with the
documented value of each key added since; a key the file's own version must have is refused
when missing:

=======  =====================  ====================================================
version  keys added             value for a file of an older version
=======  =====================  ====================================================
1        head, threshold,       (the first format; files without ``version``)
         min_area, min_component,
         presence
2        version, inference     ``inference``: {"tta": "none", "decode": "scaled"}
                                (what predict and the kernel used before it was
                                recorded)
3        checkpoints            null (not recorded: not checked)
=======  =====================  ====================================================

``checkpoints`` lists the digests (``checkpoint.digest``) of the models the values were tuned
for; ``check_models`` refuses to apply them to others (a stale file after retraining, one of
another run), and ``inference.config.with_recorded`` refuses other inference settings, unless
the user accepts it (``--accept-postprocess``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import torch

from pipeline import fileio, metrics
from pipeline.config import N_CLASSES
from pipeline.inference import steps
from pipeline.inference.config import RECORDED, InferenceConfig
from pipeline.models.registry import HEADS

log = logging.getLogger(__name__)

FORMAT_VERSION = 3
# key -> (format version that added it, its value for files of older versions)
ADDED = {"version": (2, None), "inference": (2, {"tta": "none", "decode": "scaled"}),
         "checkpoints": (3, None)}
ACCEPT_FLAG = "--accept-postprocess"


def _post_init(self) -> None:
    if self.head not in HEADS:
        raise ValueError(f"unknown head {self.head!r}; valid heads: {', '.join(HEADS)}")
    for step in steps.STEPS:
        object.__setattr__(self, step.key, step.values(getattr(self, step.key)))
    recorded = dict(self.inference)
    if set(recorded) != set(RECORDED):
        raise ValueError(f"inference must hold exactly {', '.join(RECORDED)}, got "
                         f"{sorted(recorded)}")
    InferenceConfig(**recorded)   # refuses an unknown TTA or decode, naming the flag
    object.__setattr__(self, "inference", recorded)
    if self.checkpoints is not None:
        object.__setattr__(self, "checkpoints", tuple(sorted(map(str, self.checkpoints))))


def _gated(self) -> bool:
    """Whether any class uses the presence gate."""
    return any(p is not None for p in self.presence)


def _replace(self, **changes) -> "PostProcess":
    """A copy with some fields changed (per-class values or one value for all)."""
    return dataclasses.replace(self, **changes)


def _as_dict(self) -> dict:
    """The JSON of the parameters, with the format version."""
    return {"version": FORMAT_VERSION, **dataclasses.asdict(self)}


def _save(self, path: Path) -> None:
    """Write the parameters as JSON atomically."""
    fileio.write_json(path, self.as_dict())


def _load(cls, path: Path) -> "PostProcess":
    """Read parameters written by ``save`` (any format version); a clear error for a missing
    or bad file."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"post-processing file {path} does not exist: run `make cv` "
                                "or pass --postprocess / --min-area explicitly")
    try:
        values = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not a post-processing file: {error}") from None
    values = upgrade(values, path)
    try:
        return cls(**values)
    except ValueError as error:
        raise ValueError(f"{path}: {error}: rerun `make cv`") from None


PostProcess = dataclasses.make_dataclass(
    "PostProcess",
    [("head", str, dataclasses.field(default="softmax"))]
    + [(step.key, tuple, dataclasses.field(default=(step.default,) * N_CLASSES))
       for step in steps.STEPS]
    + [("inference", dict, dataclasses.field(default_factory=lambda: dict(
        ADDED["inference"][1]))),
       ("checkpoints", tuple | None, dataclasses.field(default=None))],
    frozen=True,
    namespace={"__post_init__": _post_init, "gated": property(_gated), "replace": _replace,
               "as_dict": _as_dict, "save": _save, "load": classmethod(_load),
               "__doc__": "Post-processing parameters, one value per class and step (see "
                          "``steps``), the inference settings they were tuned with and the "
                          "digests of the checkpoints they were tuned for (sorted)."})
PostProcess.__module__ = __name__


def upgrade(values: object, path: Path) -> dict:
    """The keyword arguments of PostProcess from a file's JSON, checked key by key; keys added
    after the file's format version get their documented values (``ADDED``)."""
    keys = ["head", *(step.key for step in steps.STEPS), "inference", "checkpoints",
            "version"]
    if not isinstance(values, dict):
        raise ValueError(f"{path} is not a post-processing file: a JSON object with keys "
                         f"{keys} was expected, got a {type(values).__name__}")
    version = values.get("version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"{path}: key 'version' must be a positive integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(f"{path}: format version {version} is newer than this pipeline's "
                         f"({FORMAT_VERSION}): update the pipeline or rerun `make cv`")
    since = {"head": 1, **{step.key: step.since for step in steps.STEPS},
             **{key: added for key, (added, _) in ADDED.items()}}
    for key in keys:
        if key not in values and since[key] <= version:
            raise ValueError(f"{path}: key {key!r} is missing: rerun `make cv`")
    unknown = sorted(set(values) - set(keys))
    if unknown:
        raise ValueError(f"{path}: unknown key {unknown[0]!r} (valid keys {keys})")
    _check_types(values, path)
    filled = {key: default for key, (added, default) in ADDED.items() if added > version}
    return {k: v for k, v in {**filled, **values}.items() if k != "version"}


def _check_types(values: dict, path: Path) -> None:
    """Every key of a post-processing file of its type: no default fills a gap."""
    if not isinstance(values["head"], str):
        raise ValueError(f"{path}: key 'head' must be a string, got {values['head']!r}")
    for step in steps.STEPS:
        if step.key in values and not step.json_ok(values[step.key]):
            what = "numbers or null" if step.nullable else (
                "numbers" if step.kind is float else "integers")
            raise ValueError(f"{path}: key {step.key!r} must be a list of {N_CLASSES} {what} "
                             f"(classes 1..4), got {values[step.key]!r}")
    if "inference" in values and not isinstance(values["inference"], dict):
        raise ValueError(f"{path}: key 'inference' must be an object with keys "
                         f"{', '.join(RECORDED)}, got {values['inference']!r}")
    listed = values.get("checkpoints")
    if listed is not None and not (isinstance(listed, list) and listed
                                   and all(isinstance(d, str) for d in listed)):
        raise ValueError(f"{path}: key 'checkpoints' must be a list of checkpoint digests "
                         f"(strings) or null, got {listed!r}")


def check_models(params, digests: dict[str, str], source: str, accept: bool = False,
                 fix: str = f"or pass {ACCEPT_FLAG} to use it anyway") -> None:
    """Refuse ``params`` (read from ``source``) for models it was not tuned for: ``digests``
    maps each loaded model's file to its weights' digest. A model outside the recorded ones
    (retrained since, or of another run) is refused unless ``accept``, then a warning; a
    subset of them (``predict --checkpoints`` of some folds) and a file that records none
    (older, or written by hand) get a warning. ``fix``: the error's last advice."""
    if params.checkpoints is None:
        log.warning("%s records no checkpoints (an older format, or written by hand): not "
                    "checked against the %d model(s) loaded", source, len(digests))
        return
    tuned = set(params.checkpoints)
    foreign = [name for name, digest in digests.items() if digest not in tuned]
    if foreign:
        message = (f"{source} was tuned for other checkpoints: {len(foreign)} of the "
                   f"{len(digests)} model(s) loaded (e.g. {foreign[0]}, digest "
                   f"{digests[foreign[0]]}) are not among the {len(tuned)} it was tuned for: "
                   "rerun `make cv` for these checkpoints")
        if not accept:
            raise ValueError(f"{message}, {fix}")
        log.warning("%s (%s given)", message, ACCEPT_FLAG)
    elif len(set(digests.values())) < len(tuned):
        log.warning("%s was tuned for %d models; %d of them are loaded", source, len(tuned),
                    len(set(digests.values())))


def class_masks(probs: torch.Tensor, params: PostProcess,
                presence: torch.Tensor | None = None) -> torch.Tensor:
    """``(N, 4, H, W)`` bool masks of ``(N, 4, H, W)`` probabilities (and ``(N, 4)`` presence
    probabilities of a gated model) under ``params``: every step of ``steps`` in order."""
    if params.gated and presence is None:
        raise ValueError("the post-processing uses a presence gate but the model has none: "
                         "rerun `make cv` for these checkpoints or drop the presence values")
    values = {step.key: getattr(params, step.key) for step in steps.STEPS}
    masks = steps.pixel_masks(probs, params.head, values)
    kept = steps.keep(metrics.plane_counts(masks), presence, values)
    return masks & kept[:, :, None, None]
