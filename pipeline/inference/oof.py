"""Out-of-fold (OOF) scoring and the search of per-class pixel threshold and min_area.

Memory stays flat in the number of images: for each image, class and candidate pixel threshold
only the intersection, predicted area and true area are kept ((N, K, 4, 3) integers), from
which the score of every ``min_area`` on the grid follows exactly: a class whose predicted area
is below min_area is empty, so its Dice is 1 if the truth is empty and 0 otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pipeline import distributed, fileio, metrics
from pipeline.config import N_CLASSES, DataPaths, RunPaths, code_version, resolve_data_dir, \
    resolve_run_dir
from pipeline.data import folds, images, labels
from pipeline.inference import postprocess, predict, reports

SOFTMAX_THRESHOLDS: tuple[float | None, ...] = (None, 0.3, 0.4, 0.5, 0.6, 0.7)
SIGMOID_THRESHOLDS: tuple[float | None, ...] = (0.3, 0.4, 0.5, 0.6, 0.7)
MIN_AREAS: tuple[int, ...] = (0, 100, 200, 300, 500, 800, 1000, 1500, 2000, 3000, 4000, 6000,
                              8000, 12000, 16000, 24000)


def default_thresholds(head: str) -> tuple[float | None, ...]:
    """The pixel-threshold grid of a head (None = argmax for softmax)."""
    return SOFTMAX_THRESHOLDS if head == "softmax" else SIGMOID_THRESHOLDS


class OOFAccumulator:
    """Per image, candidate threshold and class: ``(intersection, pred_area, true_area)``."""

    def __init__(self, head: str, thresholds: tuple[float | None, ...],
                 min_component: tuple[int, ...] = (0,) * N_CLASSES):
        self.head, self.thresholds, self.min_component = head, thresholds, min_component
        self.image_ids: list[str] = []
        self._counts: list[np.ndarray] = []

    @torch.inference_mode()
    def add(self, image_ids: list[str], probs: torch.Tensor, truth: torch.Tensor) -> None:
        """Accumulate a batch: probs ``(B, 4, H, W)`` float, truth ``(B, 4, H, W)`` 0/1."""
        counts = torch.empty((len(image_ids), len(self.thresholds), N_CLASSES, 3),
                             dtype=torch.int64)
        for k, threshold in enumerate(self.thresholds):
            pred = postprocess.pixel_masks(probs, self.head, (threshold,) * N_CLASSES)
            for c in range(N_CLASSES):
                pred[:, c] = postprocess.remove_small_components(pred[:, c], self.min_component[c])
            counts[:, k] = torch.stack(metrics.pair_counts(pred, truth), dim=-1).cpu()
        self.image_ids.extend(image_ids)
        self._counts.append(counts.numpy())

    def counts(self) -> np.ndarray:
        """``(N, K, 4, 3)`` int64 counts of every image added so far."""
        if not self._counts:
            return np.zeros((0, len(self.thresholds), N_CLASSES, 3), dtype=np.int64)
        return np.concatenate(self._counts)


def apply_min_area(counts: np.ndarray, min_area: np.ndarray) -> tuple[np.ndarray, ...]:
    """``(intersection, pred_area, true_area)`` after emptying classes below ``min_area``.

    counts: ``(..., 3)``; min_area broadcasts against ``counts[..., 0]``.
    """
    intersection, pred_area, true_area = np.moveaxis(counts, -1, 0)
    keep = pred_area >= postprocess.least_area(min_area)
    return np.where(keep, intersection, 0), np.where(keep, pred_area, 0), true_area


def score_grid(counts: np.ndarray, min_areas: tuple[int, ...] = MIN_AREAS) -> np.ndarray:
    """``(K, M, 4)`` mean Dice per class for every (threshold k, min_area m)."""
    grid = np.asarray(min_areas)[None, None, :, None]             # (1, 1, M, 1)
    expanded = counts[:, :, None, :, :]                            # (N, K, 1, 4, 3)
    dice = metrics.dice_from_counts(*apply_min_area(expanded, grid))
    return dice.mean(axis=0)


@dataclass(frozen=True)
class Tuning:
    """Chosen grid indices per class and the grid itself."""

    threshold_index: tuple[int, ...]
    min_area: tuple[int, ...]
    grid: np.ndarray          # (K, M, 4) class scores


def tune(counts: np.ndarray, min_areas: tuple[int, ...] = MIN_AREAS) -> Tuning:
    """Per class, the (threshold, min_area) of the best OOF score (classes are separable)."""
    grid = score_grid(counts, min_areas)
    best_k, best_m = [], []
    for c in range(N_CLASSES):
        k, m = np.unravel_index(np.argmax(grid[:, :, c]), grid.shape[:2])
        best_k.append(int(k))
        best_m.append(int(min_areas[m]))
    return Tuning(tuple(best_k), tuple(best_m), grid)


def scores_at(counts: np.ndarray, threshold_index: tuple[int, ...],
              min_area: tuple[int, ...]) -> metrics.Scores:
    """Scores of the OOF set with one (threshold index, min_area) per class."""
    chosen = counts[:, list(threshold_index), np.arange(N_CLASSES), :]   # (N, 4, 3)
    return metrics.summarize(*apply_min_area(chosen, np.asarray(min_area)[None, :]))


def _collect(run: RunPaths, paths: DataPaths, fold_ids: list[int], settings: dict,
             min_component: tuple[int, ...], n_overlays: int, context: distributed.Context):
    """Every fold's best model on its own validation images -> (accumulator, examples, infos)."""
    table, image_ids = labels.load_train(paths)
    split = folds.read_folds(run.folds_csv, image_ids)
    rles = labels.rle_table(table, image_ids)
    accumulator, examples, infos = None, [], []
    for fold, path in zip(fold_ids, run.find_checkpoints(fold_ids)):
        ensemble = predict.load_models([path], context.device)
        infos.append(ensemble.infos[0].as_dict())
        accumulator = accumulator or OOFAccumulator(ensemble.head,
                                                    default_thresholds(ensemble.head),
                                                    min_component)
        _, val_ids = folds.split_ids(split, fold)
        loader = predict.make_loader(paths.train_images, val_ids, ensemble.input_scale,
                                     settings["batch_size"], settings["workers"], rles)
        for ids, probs, truth in predict.iterate_probabilities(
                ensemble, loader, context.device, settings["tta"], settings["amp"],
                settings["quiet"], desc=f"OOF fold {fold}"):
            accumulator.add(ids, probs, truth)
            for i in np.flatnonzero(truth.flatten(1).any(dim=1).cpu().numpy()):
                if len(examples) < n_overlays:
                    examples.append((ids[i], probs[i:i + 1].cpu(), truth[i].cpu().numpy()))
    return accumulator, examples, infos


def run_cv(run_dir: str | None, data_dir: str | None, fold_ids: list[int] | None = None,
           tta: str = "none", batch_size: int = 8, workers: int = 2,
           min_component: tuple[int, ...] = (0,) * N_CLASSES, n_overlays: int = 4,
           device: str = "auto", amp: str = "auto", quiet: bool = False) -> dict:
    """OOF predictions of every fold's best model, tuning, reports; returns the cv.json dict."""
    paths, run = resolve_data_dir(data_dir), resolve_run_dir(run_dir)
    if fold_ids is None:
        fold_ids = sorted(set(folds.read_folds(run.folds_csv)["fold"]))
    context = distributed.setup(device)
    settings = {"tta": tta, "batch_size": batch_size, "workers": workers, "amp": amp,
                "quiet": quiet}
    accumulator, examples, infos = _collect(run, paths, fold_ids, settings, min_component,
                                            n_overlays, context)
    counts, thresholds, head = accumulator.counts(), accumulator.thresholds, accumulator.head
    tuning = tune(counts)
    k_default = thresholds.index(None if head == "softmax" else 0.5)
    default = scores_at(counts, (k_default,) * N_CLASSES, (0,) * N_CLASSES)
    tuned = scores_at(counts, tuning.threshold_index, tuning.min_area)
    params = postprocess.PostProcess(head=head, min_area=tuning.min_area,
                                     threshold=[thresholds[k] for k in tuning.threshold_index],
                                     min_component=min_component)
    params.save(run.postprocess_json)
    report = {"folds": fold_ids, "n_images": len(accumulator.image_ids), "tta": tta,
              "default": default.as_dict(), "tuned": tuned.as_dict(),
              "postprocess": dict(params.__dict__), "models": infos,
              "grid": {"thresholds": list(thresholds), "min_areas": list(MIN_AREAS)},
              "code_version": code_version()}
    fileio.write_json(run.reports / "cv.json", report)
    reports.confusion(default.confusion, run.reports / "confusion_default.png", "default")
    reports.confusion(tuned.confusion, run.reports / "confusion_tuned.png", "tuned")
    reports.min_area_curves(tuning.grid, MIN_AREAS, thresholds, tuning.threshold_index,
                            run.reports / "min_area.png")
    if examples:
        reports.overlays([(image_id, images.read_image(paths.train_images / image_id), truth,
                           postprocess.class_masks(probs, params)[0].numpy())
                          for image_id, probs, truth in examples], run.reports / "overlays.png")
    return report
