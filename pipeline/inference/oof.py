"""Out-of-fold (OOF) predictions of every fold's best model, accumulated flat in memory, then
tuned (``tuning``) and reported (``reports``).

For each image, class and candidate pixel threshold only the intersection, predicted area and
true area are kept ((N, K, 4, 3) integers), plus a gated model's presence probabilities
((N, 4)): from them the score of every (presence threshold, pixel threshold, min_area) follows
exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from pipeline import checkpoint, distributed, fileio, metrics
from pipeline.config import N_CLASSES, DataPaths, RunPaths, code_version, resolve_data_dir
from pipeline.data import folds, images, labels
from pipeline.inference import breakdown, drift, ensembles, postprocess, predict, pseudo, \
    reports, steps, tuning
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


def collect(source: ensembles.Source, paths: DataPaths, fold_ids: list[int],
            settings: InferenceConfig, min_component: tuple[int, ...], n_overlays: int,
            context: distributed.Context, shift=None,
            thresholds: tuple[float | None, ...] | None = None, label: str = "OOF",
            limit: int | None = None, loaded: dict | None = None, lines: bool = True):
    """Every fold's best model(s) on the fold's validation images -> (accumulator, examples,
    infos): a run's fold model, or every member's of an ensemble, weighted; ``shift`` changes
    the images as read, ``thresholds`` (default: the head's grid) are the pixel thresholds
    counted, ``limit`` keeps the first images of each fold's validation set; ``loaded``: a
    dict of models already loaded by fold, filled as they load (for callers that go over the
    same folds several times); ``lines``: one log line per fold."""
    loaded = {} if loaded is None else loaded
    table, image_ids = labels.load_train(paths)
    split = folds.read_folds(source.folds_csv, image_ids)
    rles = labels.rle_table(table, image_ids)
    accumulator, examples, infos, first = None, [], [], None
    for fold in fold_ids:
        if fold not in loaded:
            chosen = source.fold_models(fold)
            loaded[fold] = predict.load_models([p for p, _ in chosen], context.device, settings,
                                               [w for _, w in chosen])
        ensemble = loaded[fold]
        infos.extend(info.as_dict() for info in ensemble.infos)
        first = first or (fold, ensemble.head, ensemble.gated)
        if (ensemble.head, ensemble.gated) != first[1:]:
            raise ValueError(f"{source.root}: fold {fold} has another head or gate than fold "
                             f"{first[0]}: one post-processing cannot serve both")
        accumulator = accumulator or OOFAccumulator(
            ensemble.head, thresholds or tuning.default_thresholds(ensemble.head), min_component)
        val_ids = folds.split_ids(split, fold)[1][:limit]
        _check_unseen(ensemble, val_ids, fold)
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


def _check_unseen(ensemble: predict.Ensemble, val_ids: list[str], fold: int) -> None:
    """Refuse to score a model on images it was trained on (its ``trained_on``), naming the
    count and an example: with folds.csv changed after training, scores are not out-of-fold."""
    for path, trained in zip(ensemble.sources, ensemble.trained_on):
        seen = sorted(set(val_ids) & trained) if trained else []
        if seen:
            raise ValueError(f"{path} was trained on {len(seen)} of the {len(val_ids)} images "
                             f"of fold {fold}'s validation set (e.g. {seen[0]}): its scores "
                             "would not be out-of-fold; folds.csv changed after training: "
                             "restore it or retrain (`make train`)")


def run_cv(run_dir: str | None, data_dir: str | None,
           settings: InferenceConfig = InferenceConfig(), fold_ids: list[int] | None = None,
           min_component: tuple[int, ...] = (0,) * N_CLASSES, n_overlays: int = 4) -> dict:
    """OOF predictions of every fold's best model, tuning, reports; returns the cv.json dict.
    The settings that change the probabilities are recorded with the tuned post-processing.

    Writes the pictures, then ``reports/cv.json``, then ``postprocess.json`` (each atomically).
    """
    paths, source = resolve_data_dir(data_dir), ensembles.resolve(run_dir)
    run = source.paths
    if fold_ids is None:
        fold_ids = sorted(set(folds.read_folds(run.folds_csv)["fold"]))
    context, loaded = distributed.setup(settings.device), {}
    accumulator, examples, infos = collect(source, paths, fold_ids, settings, min_component,
                                           n_overlays, context, loaded=loaded)
    counts, thresholds, head = accumulator.counts(), accumulator.thresholds, accumulator.head
    presence = accumulator.presence()
    with stage("search"):
        outcome = tuning.default_and_tuned(counts, thresholds, head, presence)
    chosen, gates, default, tuned = outcome.chosen, outcome.gates, outcome.default, outcome.tuned
    params = postprocess.PostProcess(head=head, min_area=chosen.min_area,
                                     threshold=[thresholds[k] for k in chosen.threshold_index],
                                     min_component=min_component, presence=chosen.presence,
                                     inference=settings.recorded(),
                                     checkpoints=model_digests(source, loaded))
    report = {"folds": fold_ids, "n_images": len(accumulator.image_ids),
              "tta": settings.tta, "inference": settings.as_dict(),
              "default": default.as_dict(), "tuned": tuned.as_dict(),
              "postprocess": dict(params.__dict__), "models": infos,
              "members": _members(source),
              "drift": _drift_reference(accumulator, params),
              "grid": {"presence": list(gates), "thresholds": list(thresholds),
                       "min_areas": list(tuning.MIN_AREAS)},
              "code_version": code_version()}
    report.update(_analysis(accumulator, outcome, run))
    # The settings go last: a kill leaves at worst a new report beside the old settings,
    # never new settings beside an old report (pictures, then cv.json, then postprocess.json).
    with stage("plots"):
        _pictures(run, paths, default, tuned, chosen.curves(tuning.MIN_AREAS, gates), params,
                  examples)
        if not (loaded and report["gallery"]["images"] and breakdown.draw_gallery(
                run.reports / "gallery.png", report["gallery"]["images"], loaded,
                paths.train_images, labels.rle_table(*labels.load_train(paths)), params,
                settings, context.device)):
            report["gallery"]["path"] = None
    save_oof(run.reports / "oof.npz", accumulator)
    fileio.write_json(run.reports / "cv.json", report)
    params.save(run.postprocess_json)
    return report


def model_digests(source: ensembles.Source, loaded: dict) -> list[str] | None:
    """The digests of the models ``predict`` runs for ``source`` (every fold's, every
    member's): what ``postprocess.json`` is tuned for (None where there is none to record).
    ``loaded``: ensembles already loaded, by fold, whose digests are reused."""
    known = {str(path): digest for ensemble in loaded.values()
             for path, digest in zip(ensemble.sources, ensemble.digests)}
    return [known.get(str(path)) or checkpoint.digest(checkpoint.load(path)["model"])
            for path, _ in source.all_models()] or None


def _analysis(accumulator: OOFAccumulator, outcome: tuning.Outcome, run: RunPaths) -> dict:
    """cv.json's "breakdown", "gallery" (without the picture) and "stability" (see
    ``breakdown``) at the tuned post-processing."""
    chosen, counts, presence = outcome.chosen, accumulator.counts(), accumulator.presence()
    pairs = breakdown.chosen_counts(counts, chosen.threshold_index, chosen.min_area, presence,
                                    chosen.presence)
    split = folds.read_folds(run.folds_csv).set_index("ImageId")["fold"]
    fold_of = split.reindex(accumulator.image_ids).to_numpy()
    gallery = breakdown.costliest(*pairs, accumulator.image_ids)
    for entry in gallery:
        entry["fold"] = int(split[entry["image_id"]])
    return {"breakdown": breakdown.split_deficit(*pairs),
            "gallery": {"path": "gallery.png", "images": gallery},
            "stability": {"per_fold": breakdown.per_fold(counts, accumulator.thresholds,
                                                         accumulator.head, presence, fold_of,
                                                         chosen),
                          "bootstrap": breakdown.bootstrap(*pairs)}}


def _drift_reference(accumulator: OOFAccumulator, params: postprocess.PostProcess) -> dict:
    """What the kernel's drift check compares the test predictions with: the OOF positive
    shares and median areas at the tuned post-processing, and the training prior (the share of
    the scored images holding each class: every training image once when cv scores all folds)."""
    thresholds = np.array([np.nan if t is None else t for t in accumulator.thresholds])
    predicted, area, truth = pseudo.oof_decisions(accumulator.counts(), thresholds,
                                                  accumulator.presence(), params)
    return drift.reference(predicted, area, truth)


def _members(source: ensembles.Source) -> list[dict]:
    """An ensemble's members: name, run folder, weight and their own cv scores (tuned)."""
    if not source.is_ensemble:
        return []
    found = []
    for member in source.members:
        report = json.loads((member.run.reports / "cv.json").read_text())
        found.append({"name": member.name, "run_dir": str(member.run.root),
                      "weight": member.weight, "tuned": report["tuned"],
                      "default": report["default"], "models": report.get("models", [])})
    return found


def save_oof(path: Path, accumulator: OOFAccumulator) -> None:
    """The OOF counts as ``reports/oof.npz``: image_ids (N,), thresholds (K,) (NaN: argmax),
    counts (N, K, 4, 3) and, for gated models, presence (N, 4); written atomically."""
    arrays = {"image_ids": np.asarray(accumulator.image_ids, dtype=str),
              "thresholds": np.array([np.nan if t is None else t
                                      for t in accumulator.thresholds], dtype=float),
              "counts": accumulator.counts(), "head": np.asarray(accumulator.head)}
    if accumulator.presence() is not None:
        arrays["presence"] = accumulator.presence()
    with fileio.atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)


def load_oof(path: Path) -> dict:
    """``reports/oof.npz`` as a dict of arrays (thresholds as a tuple with None for argmax)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path} does not exist: run `make cv` first")
    with np.load(path, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    arrays["thresholds"] = tuple(None if np.isnan(t) else float(t) for t in arrays["thresholds"])
    arrays["head"] = str(arrays["head"])
    arrays["presence"] = arrays.get("presence")
    return arrays


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
