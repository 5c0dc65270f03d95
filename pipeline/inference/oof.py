"""Out-of-fold (OOF) predictions of every fold's best model, accumulated flat in memory, then
tuned (``tuning``) and reported (``reports``).

For each image, class and candidate pixel threshold only the intersection, predicted area and
true area are kept ((N, K, 4, 3) integers), plus a gated model's presence probabilities
((N, 4)): from them the score of every (presence threshold, pixel threshold, min_area) follows
exactly.
"""

from __future__ import annotations

import numpy as np
import torch

from pipeline import distributed, fileio, metrics
from pipeline.config import N_CLASSES, DataPaths, RunPaths, code_version, resolve_data_dir, \
    resolve_run_dir
from pipeline.data import folds, images, labels
from pipeline.inference import postprocess, predict, reports, steps, tuning
from pipeline.inference.config import InferenceConfig
from pipeline.stages import stage


class OOFAccumulator:
    """Per image, candidate threshold and class: ``(intersection, pred_area, true_area)``;
    per image and class: the presence probability of a gated model."""

    def __init__(self, head: str, thresholds: tuple[float | None, ...],
                 min_component: tuple[int, ...] = (0,) * N_CLASSES):
        self.head, self.thresholds, self.min_component = head, thresholds, min_component
        self.image_ids: list[str] = []
        self._counts: list[np.ndarray] = []
        self._presence: list[np.ndarray] = []

    @torch.inference_mode()
    def add(self, image_ids: list[str], probs: torch.Tensor, truth: torch.Tensor,
            presence: torch.Tensor | None = None) -> None:
        """Accumulate a batch: probs ``(B, 4, H, W)`` float, truth ``(B, 4, H, W)`` 0/1,
        presence ``(B, 4)`` probabilities of a gated model (every batch, or none)."""
        if (presence is None) != (not self._presence) and self.image_ids:
            raise ValueError("presence must come with every batch or with none")
        if presence is not None:
            self._presence.append(presence.float().cpu().numpy())
        counts = torch.empty((len(image_ids), len(self.thresholds), N_CLASSES, 3),
                             dtype=torch.int64)
        # Plain thresholds (no component filter): counted straight from the probabilities.
        fixed = {steps.MIN_COMPONENT.key: self.min_component}   # pixel steps not tuned here
        filtered = any(step.active(fixed[step.key]) for step in steps.PIXEL_STEPS[1:])
        plain = [] if filtered else [k for k, t in enumerate(self.thresholds) if t is not None]
        if plain:
            with stage("metric"):
                counts[:, plain] = metrics.threshold_counts(
                    probs, truth, tuple(self.thresholds[k] for k in plain)).cpu()
        for k, threshold in enumerate(self.thresholds):
            if k in plain:
                continue
            with stage("postprocess"):
                pred = steps.pixel_masks(probs, self.head, {
                    steps.THRESHOLD.key: (threshold,) * N_CLASSES, **fixed})
            with stage("metric"):
                counts[:, k] = torch.stack(metrics.pair_counts(pred, truth), dim=-1).cpu()
        self.image_ids.extend(image_ids)
        self._counts.append(counts.numpy())

    def counts(self) -> np.ndarray:
        """``(N, K, 4, 3)`` int64 counts of every image added so far."""
        if not self._counts:
            return np.zeros((0, len(self.thresholds), N_CLASSES, 3), dtype=np.int64)
        return np.concatenate(self._counts)

    def presence(self) -> np.ndarray | None:
        """``(N, 4)`` presence probabilities, or None for a model without a gate."""
        return np.concatenate(self._presence) if self._presence else None


def collect(run: RunPaths, paths: DataPaths, fold_ids: list[int], settings: InferenceConfig,
            min_component: tuple[int, ...], n_overlays: int, context: distributed.Context,
            shift=None, thresholds: tuple[float | None, ...] | None = None, label: str = "OOF",
            limit: int | None = None, loaded: dict | None = None, lines: bool = True):
    """Every fold's best model on its own validation images -> (accumulator, examples, infos);
    ``shift`` changes the images as read, ``thresholds`` (default: the head's grid) are the
    pixel thresholds counted, ``limit`` keeps the first images of each fold's validation set;
    ``loaded``: a dict of models already loaded by checkpoint path, filled as they load (for
    callers that go over the same folds several times); ``lines``: one log line per fold."""
    loaded = {} if loaded is None else loaded
    table, image_ids = labels.load_train(paths)
    split = folds.read_folds(run.folds_csv, image_ids)
    rles = labels.rle_table(table, image_ids)
    accumulator, examples, infos = None, [], []
    for fold, path in zip(fold_ids, run.find_checkpoints(fold_ids)):
        if path not in loaded:
            loaded[path] = predict.load_models([path], context.device, settings)
        ensemble = loaded[path]
        infos.append(ensemble.infos[0].as_dict())
        if infos[0]["head"] != infos[-1]["head"] or infos[0]["gate"] != infos[-1]["gate"]:
            raise ValueError(f"{path}: fold {fold} has another head or gate than fold "
                             f"{fold_ids[0]}: one post-processing cannot serve both")
        accumulator = accumulator or OOFAccumulator(
            ensemble.head, thresholds or tuning.default_thresholds(ensemble.head), min_component)
        val_ids = folds.split_ids(split, fold)[1][:limit]
        loader = predict.make_loader(paths.train_images, val_ids, ensemble.input_scale,
                                     settings, rles, shift)
        for batch in predict.iterate_probabilities(ensemble, loader, context.device, settings,
                                                   desc=f"{label} fold {fold}", line=lines):
            accumulator.add(batch.image_ids, batch.probs, batch.masks, batch.presence)
            for i in np.flatnonzero(batch.masks.flatten(1).any(dim=1).cpu().numpy()):
                if len(examples) < n_overlays:
                    presence = None if batch.presence is None else batch.presence[i:i + 1].cpu()
                    examples.append((batch.image_ids[i], batch.probs[i:i + 1].cpu(), presence,
                                     batch.masks[i].cpu().numpy()))
    return accumulator, examples, infos


def run_cv(run_dir: str | None, data_dir: str | None,
           settings: InferenceConfig = InferenceConfig(), fold_ids: list[int] | None = None,
           min_component: tuple[int, ...] = (0,) * N_CLASSES, n_overlays: int = 4) -> dict:
    """OOF predictions of every fold's best model, tuning, reports; returns the cv.json dict.
    The settings that change the probabilities are recorded with the tuned post-processing.

    Writes the pictures, then ``reports/cv.json``, then ``postprocess.json`` (each atomically).
    """
    paths, run = resolve_data_dir(data_dir), resolve_run_dir(run_dir)
    if fold_ids is None:
        fold_ids = sorted(set(folds.read_folds(run.folds_csv)["fold"]))
    context = distributed.setup(settings.device)
    accumulator, examples, infos = collect(run, paths, fold_ids, settings, min_component,
                                           n_overlays, context)
    counts, thresholds, head = accumulator.counts(), accumulator.thresholds, accumulator.head
    presence = accumulator.presence()
    with stage("search"):
        outcome = tuning.default_and_tuned(counts, thresholds, head, presence)
    chosen, gates, default, tuned = outcome.chosen, outcome.gates, outcome.default, outcome.tuned
    params = postprocess.PostProcess(head=head, min_area=chosen.min_area,
                                     threshold=[thresholds[k] for k in chosen.threshold_index],
                                     min_component=min_component, presence=chosen.presence,
                                     inference=settings.recorded())
    report = {"folds": fold_ids, "n_images": len(accumulator.image_ids),
              "tta": settings.tta, "inference": settings.as_dict(),
              "default": default.as_dict(), "tuned": tuned.as_dict(),
              "postprocess": dict(params.__dict__), "models": infos,
              "grid": {"presence": list(gates), "thresholds": list(thresholds),
                       "min_areas": list(tuning.MIN_AREAS)},
              "code_version": code_version()}
    # The settings go last: a kill leaves at worst a new report beside the old settings,
    # never new settings beside an old report (pictures, then cv.json, then postprocess.json).
    with stage("plots"):
        _pictures(run, paths, default, tuned, chosen.curves(tuning.MIN_AREAS, gates), params,
                  examples)
    fileio.write_json(run.reports / "cv.json", report)
    params.save(run.postprocess_json)
    return report


def _pictures(run: RunPaths, paths: DataPaths, default: metrics.Scores, tuned: metrics.Scores,
              curves: np.ndarray, params: postprocess.PostProcess, examples: list) -> None:
    reports.confusion(default.confusion, run.reports / "confusion_default.png", "default")
    reports.confusion(tuned.confusion, run.reports / "confusion_tuned.png", "tuned")
    reports.min_area_curves(curves, tuning.MIN_AREAS, params, run.reports / "min_area.png")
    if examples:
        reports.overlays([(image_id, images.read_image(paths.train_images / image_id), truth,
                           postprocess.class_masks(probs, params, presence)[0].numpy())
                          for image_id, probs, presence, truth in examples],
                         run.reports / "overlays.png")
