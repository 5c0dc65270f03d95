"""Inference: checkpoints -> fold ensemble (+ flip TTA) -> probabilities -> masks -> RLE rows.

Each checkpoint carries its ``ModelInfo`` (architecture, head, input scale, normalisation,
stride), so an ensemble is rebuilt and fed from the checkpoints alone: the loader decodes the
images once at the largest input scale of the ensemble and a model trained at another scale
gets them resized to its own on the device.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from tqdm import tqdm

from pipeline import checkpoint, distributed
from pipeline.config import CLASS_IDS, HEIGHT, WIDTH
from pipeline.data import rle
from pipeline.data.dataset import SteelDataset, Transform, collate, to_model_input
from pipeline.data.workers import DataLoader
from pipeline.inference import postprocess, runtime, submission
from pipeline.inference.config import TTA_MODES, InferenceConfig
from pipeline.models import forward
from pipeline.models.registry import ModelInfo, model_info, rebuild
from pipeline.stages import stage

log = logging.getLogger(__name__)


class Batch(NamedTuple):
    """One batch of predictions: probabilities ``(B, 4, 256, 1600)``, presence probabilities
    ``(B, 4)`` of a gated ensemble (else None) and true masks ``(B, 4, 256, 1600)`` or None."""

    image_ids: list[str]
    probs: torch.Tensor
    presence: torch.Tensor | None
    masks: torch.Tensor | None


@dataclass(frozen=True)
class Ensemble:
    """Eval-mode models, each with the ``ModelInfo`` of its checkpoint and a weight; ``runners``
    are what runs them (the models, or their ``torch.compile``d forms).

    Models may differ in architecture, scale, head and gate: they combine as per-class
    probabilities (a softmax model's class channels, a sigmoid model's channels), averaged with
    the weights; the presence probability of a class is the weighted mean over the gated models
    only (a model without a gate contributes none); with no gated model there is none.
    ``clock``: per model, the seconds its passes took and the images they saw (passes x images).
    Loaded from checkpoints (``load_models``), each model also has its file (``sources``), its
    weights' digest (``digests``, see ``checkpoint.digest``) and the ids of the images it was
    trained on (``trained_on``; None for a checkpoint from before they were recorded).
    """

    models: tuple[torch.nn.Module, ...]
    runners: tuple = ()
    weights: tuple[float, ...] = ()
    clock: dict = field(default_factory=dict, compare=False)
    sources: tuple[Path, ...] = ()
    digests: tuple[str, ...] = ()
    trained_on: tuple[frozenset | None, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if not self.runners:
            object.__setattr__(self, "runners", self.models)
        if not self.weights:
            object.__setattr__(self, "weights", (1.0,) * len(self.models))
        if len(self.weights) != len(self.models):
            raise ValueError(f"{len(self.weights)} weights for {len(self.models)} models")

    @property
    def compiled(self) -> bool:
        """Whether the models run compiled (fixed input shapes: batches are padded)."""
        return self.runners is not self.models

    @property
    def infos(self) -> tuple[ModelInfo, ...]:
        return tuple(model_info(m) for m in self.models)

    @property
    def head(self) -> str:
        """softmax when every model is (argmax is defined), else sigmoid: per-class
        probabilities with per-class thresholds."""
        return "softmax" if all(i.head == "softmax" for i in self.infos) else "sigmoid"

    @property
    def gated(self) -> bool:
        """Whether any model has a presence gate."""
        return any(info.gate for info in self.infos)

    @property
    def input_scale(self) -> float:
        """The scale the loader decodes at: the largest of the models' input scales."""
        return max(info.input_scale for info in self.infos)

    def __len__(self) -> int:
        return len(self.models)

    def named_digests(self) -> dict[str, str]:
        """Each model's file -> its weights' digest (``postprocess.check_models`` takes it)."""
        return dict(zip(map(str, self.sources), self.digests))


def load_models(paths: list[Path], device: torch.device,
                settings: InferenceConfig = InferenceConfig(),
                weights: list[float] | None = None) -> Ensemble:
    """The ensemble of the checkpoints (``weights``: one per checkpoint, default 1 each); with
    ``settings.compile`` they run through ``forward.compile_for_inference`` (compiled at the
    first batch)."""
    if not paths:
        raise ValueError("no checkpoints given: train first or pass --checkpoints")
    weights = [1.0] * len(paths) if weights is None else [float(w) for w in weights]
    if len(weights) != len(paths) or not all(w >= 0 for w in weights) or not sum(weights) > 0:
        raise ValueError(f"ensemble weights {weights} for {len(paths)} checkpoints: one "
                         "weight >= 0 per checkpoint, summing to a positive number")
    runtime.keep_freed_memory()   # the process policy inference runs under (see runtime)
    models, digests, trained = [], [], []
    for path in paths:
        with stage("load"):
            state = checkpoint.load(path)
            model = rebuild(state, path)
            digests.append(checkpoint.digest(state["model"]))
            trained.append(checkpoint.trained_ids(state))
        model = model.to(device)
        if settings.channels_last:
            model = model.to(memory_format=torch.channels_last)
        models.append(model)
    provenance = {"sources": tuple(Path(p) for p in paths), "digests": tuple(digests),
                  "trained_on": tuple(trained)}
    if not settings.compile:
        return Ensemble(tuple(models), weights=tuple(weights), **provenance)
    return Ensemble(tuple(models), tuple(forward.compile_for_inference(m) for m in models),
                    tuple(weights), **provenance)


def model_input(images: torch.Tensor, info: ModelInfo,
                size: tuple[int, int] = (HEIGHT, WIDTH)) -> torch.Tensor:
    """``images`` of an image of ``size`` resized to the model's input scale (area when
    shrinking), if not there yet."""
    size = (max(1, round(size[0] * info.input_scale)), max(1, round(size[1] * info.input_scale)))
    if tuple(images.shape[-2:]) == size:
        return images
    shrink = size[0] < images.shape[-2]
    resized = F.interpolate(images, size=size, mode="area" if shrink else "bilinear")
    return resized.contiguous(memory_format=torch.channels_last)


@torch.inference_mode()
def pass_probabilities(runner, info: ModelInfo, inputs: torch.Tensor, dims: tuple[int, ...],
                       amp: str = "auto", size: tuple[int, int] = (HEIGHT, WIDTH),
                       ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One model pass (``dims``: the flip, () for none) -> ``(N, 4, *size)`` per-class
    probabilities and ``(N, 4)`` presence probabilities (None without a gate), flipped back."""
    flipped = inputs.flip(dims) if dims else inputs
    with forward.autocast(amp, inputs.device), stage("forward"):
        logits, presence = forward.forward_padded(runner, flipped, info.stride)
    with stage("upsample"):
        logits = forward.upsample(logits, size)
    with stage("probabilities"):
        probs = forward.probabilities(logits, info.head)
        probs = probs.flip(dims) if dims else probs
    return probs, None if presence is None else presence.float().sigmoid()


@torch.inference_mode()
def ensemble_probabilities(ensemble: Ensemble, images: torch.Tensor, tta: str = "none",
                           amp: str = "auto", size: tuple[int, int] = (HEIGHT, WIDTH),
                           ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(N, 4, *size)`` class probabilities and, for gated models, ``(N, 4)`` presence
    probabilities, each the weighted average over models and flips (presence: over the gated
    models only).

    ``images``: ``(N, 3, h, w)`` float in [0, 1], images of ``size`` (default 256x1600) at
    ``ensemble.input_scale``; each model gets them at its own scale of ``size``.
    """
    if tta not in TTA_MODES:
        raise ValueError(f"unknown --tta {tta!r}; valid: {sorted(TTA_MODES)}")
    total, present, gated_weight = None, None, 0.0
    for index, (model, info, weight) in enumerate(zip(ensemble.runners, ensemble.infos,
                                                      ensemble.weights)):
        start = time.perf_counter()
        with stage("resize"):
            inputs = model_input(images, info, size)
        for dims in TTA_MODES[tta]:
            probs, presence = pass_probabilities(model, info, inputs, dims, amp, size)
            with stage("probabilities"):
                probs = probs if weight == 1.0 else probs.mul_(weight)
                total = probs if total is None else total.add_(probs)
            if presence is not None:
                presence = presence if weight == 1.0 else presence.mul_(weight)
                present = presence if present is None else present.add_(presence)
        gated_weight += weight if info.gate else 0.0
        if images.device.type == "cuda":
            torch.cuda.synchronize(images.device)
        seconds, seen = ensemble.clock.get(index, (0.0, 0))
        ensemble.clock[index] = (seconds + time.perf_counter() - start,
                                 seen + len(images) * len(TTA_MODES[tta]))
    n_flips = len(TTA_MODES[tta])
    total = total.div_(sum(ensemble.weights) * n_flips)
    return total, None if present is None else present.div_(gated_weight * n_flips)


def iterate_probabilities(ensemble: Ensemble, loader: DataLoader, device: torch.device,
                          settings: InferenceConfig = InferenceConfig(),
                          desc: str = "predict", line: bool = True) -> Iterator[Batch]:
    """Yield a ``Batch`` of ids, probabilities, presence and true masks per loader batch; at
    the end (``line``) log one line: images, seconds, images/s and the first batch's time
    (which includes compiling a compiled ensemble)."""
    start, first, n_images = time.perf_counter(), None, 0
    for batch in tqdm(loader, desc=desc, unit="batch", disable=settings.quiet or None):
        if "image" not in batch:   # every image of the batch unreadable, and skipped
            continue
        images = to_model_input(batch["image"], device)
        n = len(images)
        if ensemble.compiled and n < loader.batch_size:  # one input shape: no recompilation
            images = torch.cat([images, images[-1:].expand(loader.batch_size - n, -1, -1, -1)])
        probs, presence = ensemble_probabilities(ensemble, images, settings.tta, settings.amp)
        probs, presence = probs[:n], None if presence is None else presence[:n]
        if not bool(torch.isfinite(probs).all()):   # finite weights that overflow
            raise FloatingPointError(f"non-finite probabilities on {batch['image_id'][0]}: the "
                                     f"weights of {', '.join(map(str, ensemble.sources))} "
                                     "overflow (diverged training?): retrain with a lower --lr")
        masks = batch["masks"].to(device) if "masks" in batch else None
        first = time.perf_counter() - start if first is None else first
        n_images += n
        yield Batch(batch["image_id"], probs, presence, masks)
    seconds = time.perf_counter() - start
    if line and n_images:
        log.info("%s: %d images in %.1f s (%.2f images/s; first batch %.1f s%s)", desc,
                 n_images, seconds, n_images / seconds, first,
                 ", compiling included" if ensemble.compiled else "")


def make_loader(image_dir: Path, image_ids: list[str], scale: float,
                settings: InferenceConfig = InferenceConfig(), rles=None,
                shift=None, skip_bad_images: bool | None = None) -> DataLoader:
    """Full images at ``scale``, batched and decoded as ``settings`` say (see ``Transform``);
    masks at 256x1600 when ``rles`` is given; ``shift`` (see ``data.shifts``) applied to each
    image as read; ``skip_bad_images`` as ``SteelDataset`` takes it."""
    dataset = SteelDataset(image_dir, image_ids, rles,
                           Transform(scale=scale, decode=settings.decode), full_masks=True,
                           shift=shift, skip_bad_images=skip_bad_images)
    return DataLoader(dataset, batch_size=settings.batch_size, num_workers=settings.n_workers,
                      collate_fn=collate, pin_memory=torch.cuda.is_available())


def predict_rles(ensemble: Ensemble, image_dir: Path, image_ids: list[str],
                 params: postprocess.PostProcess, context: distributed.Context,
                 settings: InferenceConfig = InferenceConfig(),
                 skip_bad_images: bool = False) -> dict[str, list[str]]:
    """``{image_id: [rle of class 1..4]}`` for this rank's share of the images.

    With ``skip_bad_images`` an unreadable image is predicted defect-free (a warning each and
    a count), so that one bad file never costs a whole submission (the kernel's choice);
    without, it stops with the reader's error naming the file."""
    if params.head != ensemble.head:
        raise ValueError(f"post-processing is for the {params.head} head but the checkpoints "
                         f"have the {ensemble.head} head: rerun `make cv` for these checkpoints")
    mine = image_ids[context.rank::context.world_size]
    loader = make_loader(image_dir, mine, ensemble.input_scale, settings,
                         skip_bad_images=True if skip_bad_images else None)
    out: dict[str, list[str]] = {}
    quiet = settings.quiet or not context.is_main
    for batch in iterate_probabilities(ensemble, loader, context.device,
                                       settings.replace(quiet=quiet)):
        with stage("postprocess"):
            masks = postprocess.class_masks(batch.probs, params, batch.presence).cpu().numpy()
        with stage("rle"):
            for image_id, image_masks in zip(batch.image_ids, masks):
                out[image_id] = [rle.encode(mask) for mask in image_masks]
    skipped = [image_id for image_id in mine if image_id not in out]
    if skipped:
        log.warning("%d unreadable image(s) predicted defect-free (e.g. %s)", len(skipped),
                    skipped[0])
        out.update({image_id: [""] * len(CLASS_IDS) for image_id in skipped})
    return out


def write_submission(ensemble: Ensemble, image_dir: Path, sample: submission.Sample,
                     params: postprocess.PostProcess, context: distributed.Context, out: Path,
                     settings: InferenceConfig = InferenceConfig(),
                     skip_bad_images: bool = False,
                     ) -> tuple[dict[str, list[str]], object] | None:
    """Predict every sample image (sharded over ranks); on rank 0 write ``out``, validated
    before it replaces any previous file. Returns ``(rles by image, validated table)`` on rank
    0, None on the other ranks; ``skip_bad_images`` as ``predict_rles`` takes it."""
    rles = predict_rles(ensemble, image_dir, sample.image_ids, params, context, settings,
                        skip_bad_images)
    shards = distributed.gather(rles, context)
    if not context.is_main:
        return None
    merged = {k: v for shard in shards for k, v in shard.items()}
    return merged, submission.write(submission.build(sample, merged), out, sample)
