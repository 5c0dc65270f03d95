"""Class probabilities -> binary class masks (one implementation for CV, predict and the
kernel).

Per class c: a pixel is on where ``probs[c] > threshold[c]`` (or, with ``threshold[c] = None``,
where class c wins the argmax for the softmax head / ``p > 0.5`` for the sigmoid head); then
connected components smaller than ``min_component[c]`` pixels are removed; then the **empty-mask
threshold**: if fewer than ``min_area[c]`` pixels remain, the class is empty for that image;
and, for a model with a gate, the class is empty where its presence probability is below
``presence[c]`` (None: the gate is not used). Areas are counted on the original 256x1600 grid.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import cv2
import numpy as np
import torch

from pipeline import fileio, metrics
from pipeline.config import N_CLASSES
from pipeline.models.forward import default_masks
from pipeline.models.registry import HEADS


def _per_class(value: object, name: str, kind: type) -> tuple:
    values = tuple(value) if isinstance(value, (list, tuple)) else (value,) * N_CLASSES
    if len(values) != N_CLASSES:
        raise ValueError(f"{name} needs {N_CLASSES} values (classes 1..4), got {len(values)}")
    return tuple(None if v is None else kind(v) for v in values)


@dataclass(frozen=True)
class PostProcess:
    """Post-processing parameters, one value per class; stored as JSON beside the run."""

    head: str = "softmax"
    threshold: tuple[float | None, ...] = field(default=(None,) * N_CLASSES)
    min_area: tuple[int, ...] = field(default=(0,) * N_CLASSES)
    min_component: tuple[int, ...] = field(default=(0,) * N_CLASSES)
    presence: tuple[float | None, ...] = field(default=(None,) * N_CLASSES)

    @property
    def gated(self) -> bool:
        """Whether any class uses the presence gate."""
        return any(p is not None for p in self.presence)

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise ValueError(f"unknown head {self.head!r}; valid heads: {', '.join(HEADS)}")
        object.__setattr__(self, "threshold", _per_class(self.threshold, "threshold", float))
        object.__setattr__(self, "min_area", _per_class(self.min_area, "min_area", int))
        object.__setattr__(self, "min_component",
                           _per_class(self.min_component, "min_component", int))
        object.__setattr__(self, "presence", _per_class(self.presence, "presence", float))
        for name in ("threshold", "presence"):
            if any(t is not None and not 0.0 <= t < 1.0 for t in getattr(self, name)):
                raise ValueError(f"{name} values must be in [0, 1), got {getattr(self, name)}")
        if any(v < 0 for v in self.min_area + self.min_component):
            raise ValueError("min_area and min_component must be >= 0")

    def replace(self, **changes) -> "PostProcess":
        """A copy with some fields changed (per-class values or one value for all)."""
        return PostProcess(**{**asdict(self), **changes})

    def save(self, path: Path) -> None:
        """Write the parameters as JSON atomically."""
        fileio.write_json(path, asdict(self))

    @classmethod
    def load(cls, path: Path) -> "PostProcess":
        """Read parameters written by ``save``; a clear error for a missing or bad file."""
        if not Path(path).is_file():
            raise FileNotFoundError(f"post-processing file {path} does not exist: run `make cv` "
                                    "or pass --postprocess / --min-area explicitly")
        try:
            values = json.loads(Path(path).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{path} is not a post-processing file: {error}") from None
        _check_file(values, path)
        try:
            return cls(**values)
        except ValueError as error:
            raise ValueError(f"{path}: {error}: rerun `make cv`") from None


def _check_file(values: object, path: Path) -> None:
    """Every key of a post-processing file present, of its type: no default fills a gap."""
    keys = [f.name for f in fields(PostProcess)]
    if not isinstance(values, dict):
        raise ValueError(f"{path} is not a post-processing file: a JSON object with keys "
                         f"{keys} was expected, got a {type(values).__name__}")
    for key in keys:
        if key not in values:
            raise ValueError(f"{path}: key {key!r} is missing: rerun `make cv`")
    unknown = sorted(set(values) - set(keys))
    if unknown:
        raise ValueError(f"{path}: unknown key {unknown[0]!r} (valid keys {keys})")
    if not isinstance(values["head"], str):
        raise ValueError(f"{path}: key 'head' must be a string, got {values['head']!r}")
    kinds = {"threshold": (float, True), "presence": (float, True), "min_area": (int, False),
             "min_component": (int, False)}
    for key, (kind, nullable) in kinds.items():
        value = values[key]
        ok = isinstance(value, list) and len(value) == N_CLASSES and all(
            (v is None and nullable) or (isinstance(v, (int, float) if kind is float else int)
                                         and not isinstance(v, bool)) for v in value)
        if not ok:
            what = "numbers or null" if nullable else "integers"
            raise ValueError(f"{path}: key {key!r} must be a list of {N_CLASSES} {what} "
                             f"(classes 1..4), got {value!r}")


def least_area(min_area: object) -> np.ndarray:
    """The smallest predicted area a class keeps under ``min_area`` (broadcasts): min_area 0
    counts as 1, since an empty mask is empty whatever the threshold."""
    return np.maximum(np.asarray(min_area, dtype=np.int64), 1)


def pixel_masks(probs: torch.Tensor, head: str,
                thresholds: tuple[float | None, ...]) -> torch.Tensor:
    """``(N, 4, H, W)`` bool pixel masks: ``p > threshold``, or the head's default decision
    (argmax for softmax, ``p > 0.5`` for sigmoid) where the threshold is None."""
    masks = torch.empty(probs.shape, dtype=torch.bool, device=probs.device)
    default = None
    for c, threshold in enumerate(thresholds):
        if threshold is None:
            default = default_masks(probs, head) if default is None else default
            masks[:, c] = default[:, c]
        else:
            torch.gt(probs[:, c], threshold, out=masks[:, c])
    return masks


def remove_small_components(masks: torch.Tensor, min_size: int) -> torch.Tensor:
    """Drop the 8-connected components of ``(N, H, W)`` bool masks smaller than min_size."""
    if min_size <= 1:
        return masks
    out = masks.cpu().numpy().astype(np.uint8)
    for image in out:
        if not image.any():
            continue
        n, labels, stats, _ = cv2.connectedComponentsWithStats(image, connectivity=8)
        small = np.flatnonzero(stats[:, cv2.CC_STAT_AREA] < min_size)
        small = small[small > 0]  # label 0 is the background
        if small.size:
            image[np.isin(labels, small)] = 0
    return torch.from_numpy(out.astype(bool)).to(masks.device)


def gate_open(presence: torch.Tensor | np.ndarray | None,
              thresholds: tuple[float | None, ...]) -> torch.Tensor | np.ndarray | bool:
    """Where the gate lets a class through: ``presence (N, 4) >= threshold`` per class, True
    for classes without a threshold (or when there is no gate at all)."""
    if presence is None or all(t is None for t in thresholds):
        return True
    bounds = [-1.0 if t is None else t for t in thresholds]
    if isinstance(presence, np.ndarray):
        return presence >= np.asarray(bounds)
    return presence >= torch.tensor(bounds, device=presence.device, dtype=presence.dtype)


def class_masks(probs: torch.Tensor, params: PostProcess,
                presence: torch.Tensor | None = None) -> torch.Tensor:
    """``(N, 4, H, W)`` bool masks of ``(N, 4, H, W)`` probabilities (and ``(N, 4)`` presence
    probabilities of a gated model) under ``params``."""
    if params.gated and presence is None:
        raise ValueError("the post-processing uses a presence gate but the model has none: "
                         "rerun `make cv` for these checkpoints or drop the presence values")
    masks = pixel_masks(probs, params.head, params.threshold)
    for c in range(N_CLASSES):
        masks[:, c] = remove_small_components(masks[:, c], params.min_component[c])
    area = metrics.plane_counts(masks)
    keep = area >= torch.as_tensor(least_area(params.min_area), device=masks.device)
    keep = keep & gate_open(presence, params.presence)
    return masks & keep[:, :, None, None]
