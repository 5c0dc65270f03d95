"""Where the out-of-fold score is lost, and how far the tuned post-processing can be trusted.

**Breakdown.** Per class, the Dice deficit (1 - the class's mean Dice over the OOF images) is
split exactly into: false positives (a mask predicted on an image without that defect: each
costs the whole pair, 1), missed defects (an empty prediction on a defect: 1 each) and partial
overlap (both non-empty: 1 - Dice), each divided by the number of images, so the three sum to
the deficit.

**Gallery.** The images whose pairs cost most (sum over classes of 1 - Dice), truth beside
prediction, each predicted by its own fold's model(s).

**Stability.** Per fold: the post-processing tuned on that fold's images alone, its score there,
and the score there of the values tuned on every fold; a percentile bootstrap interval of the
tuned score (images resampled with replacement, scored at the tuned values, not re-tuned), so
a sharp optimum shows before the leaderboard does.
"""

from __future__ import annotations

import numpy as np

from pipeline import metrics
from pipeline.config import CLASS_IDS, N_CLASSES
from pipeline.inference import steps, tuning

BOOTSTRAP_ROUNDS = 1000
BOOTSTRAP_LEVEL = 0.95
GALLERY_SIZE = 6


def chosen_counts(counts: np.ndarray, threshold_index: tuple[int, ...],
                  min_area: tuple[int, ...], presence: np.ndarray | None,
                  gate: tuple[float | None, ...]) -> tuple[np.ndarray, ...]:
    """``(intersection, pred_area, true_area)``, each ``(N, 4)``, of ``(N, K, 4, 3)`` OOF counts
    at one (threshold index, min_area, presence threshold) per class, as ``tuning`` scores."""
    chosen = counts[:, list(threshold_index), np.arange(N_CLASSES), :]
    is_open = steps.PRESENCE.keep(None, presence, gate)
    return tuning.apply_gates(chosen, np.asarray(min_area)[None, :], is_open)


def split_deficit(intersection: np.ndarray, pred_area: np.ndarray,
                  true_area: np.ndarray) -> dict:
    """Per class: score, deficit and its false-positive, missed and partial parts (and their
    pair counts) of ``(N, 4)`` pair counts."""
    dice = metrics.dice_from_counts(intersection, pred_area, true_area)
    n = len(dice)
    false_positive = (true_area == 0) & (pred_area > 0)
    missed = (true_area > 0) & (pred_area == 0)
    partial = (true_area > 0) & (pred_area > 0)
    rows = []
    for c in range(N_CLASSES):
        rows.append({"class_id": CLASS_IDS[c], "score": float(dice[:, c].mean()),
                     "deficit": float((1.0 - dice[:, c]).sum() / n),
                     "false_positive": float(false_positive[:, c].sum() / n),
                     "missed": float(missed[:, c].sum() / n),
                     "partial": float((1.0 - dice[partial[:, c], c]).sum() / n),
                     "n_false_positive": int(false_positive[:, c].sum()),
                     "n_missed": int(missed[:, c].sum()), "n_partial": int(partial[:, c].sum())})
    return {"per_class": rows, "n_images": int(n)}


def costliest(intersection: np.ndarray, pred_area: np.ndarray, true_area: np.ndarray,
              image_ids: list[str], k: int = GALLERY_SIZE) -> list[dict]:
    """The ``k`` images whose pairs cost most (sum over classes of 1 - Dice), costliest first;
    images that cost nothing are left out."""
    cost = (1.0 - metrics.dice_from_counts(intersection, pred_area, true_area)).sum(axis=1)
    order = np.argsort(-cost, kind="stable")[:k]
    return [{"image_id": image_ids[i], "cost": float(cost[i])} for i in order if cost[i] > 0]


def bootstrap(intersection: np.ndarray, pred_area: np.ndarray, true_area: np.ndarray,
              rounds: int = BOOTSTRAP_ROUNDS, level: float = BOOTSTRAP_LEVEL,
              seed: int = 0) -> dict:
    """A percentile interval of the competition score over images resampled with
    replacement, the post-processing fixed."""
    per_image = metrics.dice_from_counts(intersection, pred_area, true_area).mean(axis=1)
    rng = np.random.default_rng(seed)
    means = per_image[rng.integers(0, len(per_image), (rounds, len(per_image)))].mean(axis=1)
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return {"level": level, "n": rounds, "low": float(low), "high": float(high),
            "tuned": float(per_image.mean())}


def per_fold(counts: np.ndarray, thresholds: tuple, head: str, presence: np.ndarray | None,
             fold_of: np.ndarray, chosen: tuning.Tuning) -> list[dict]:
    """Per fold: the values tuned on its images alone, their score there, and the score there
    of the values tuned on all folds (``chosen``)."""
    rows = []
    for fold in sorted(set(fold_of.tolist())):
        mask = fold_of == fold
        fold_presence = None if presence is None else presence[mask]
        outcome = tuning.default_and_tuned(counts[mask], thresholds, head, fold_presence)
        at_chosen = metrics.summarize(*chosen_counts(
            counts[mask], chosen.threshold_index, chosen.min_area, fold_presence,
            chosen.presence))
        own = outcome.chosen
        rows.append({"fold": int(fold), "n_images": int(mask.sum()),
                     "threshold": [thresholds[k] for k in own.threshold_index],
                     "min_area": list(own.min_area), "presence": list(own.presence),
                     "tuned_score": outcome.tuned.score, "score_at_chosen": at_chosen.score})
    return rows


def format_breakdown(report: dict) -> str:
    """Per-class lines of where the score is lost, the per-fold tuning and the interval."""
    lines = ["where the tuned score is lost (share of the class's pairs: false positives on "
             "images without the defect, missed defects, partial overlap):"]
    for row in report["breakdown"]["per_class"]:
        lines.append(f"  class {row['class_id']}: score {row['score']:.4f}, deficit "
                     f"{row['deficit']:.4f} = false positives {row['false_positive']:.4f} "
                     f"({row['n_false_positive']}) + missed {row['missed']:.4f} "
                     f"({row['n_missed']}) + partial {row['partial']:.4f} ({row['n_partial']})")
    stability = report["stability"]
    for row in stability["per_fold"]:
        lines.append(f"  fold {row['fold']} ({row['n_images']} images): tuned alone "
                     f"{row['tuned_score']:.4f} at thresholds {row['threshold']} min_area "
                     f"{row['min_area']}; at the values tuned on all folds "
                     f"{row['score_at_chosen']:.4f}")
    interval = stability["bootstrap"]
    lines.append(f"  tuned score {interval['tuned']:.4f}, {interval['level']:.0%} bootstrap "
                 f"interval {interval['low']:.4f}-{interval['high']:.4f} ({interval['n']} "
                 "resamples of the images)")
    return "\n".join(lines)


def draw_gallery(path, gallery: list[dict], loaded: dict, image_dir, rles, params,
                 settings, device) -> bool:
    """The gallery picture: each image's truth beside its prediction by its own fold's
    model(s) (``loaded``: fold -> ``predict.Ensemble``); False when there is nothing to draw."""
    from pipeline.data import images
    from pipeline.inference import postprocess, predict, reports

    rows = []
    for entry in gallery:
        ensemble = loaded.get(entry["fold"])
        if ensemble is None:
            continue
        loader = predict.make_loader(image_dir, [entry["image_id"]], ensemble.input_scale,
                                     settings.replace(quiet=True), rles)
        for batch in predict.iterate_probabilities(ensemble, loader, device, settings.replace(
                quiet=True), line=False):
            pred = postprocess.class_masks(batch.probs, params, batch.presence)[0]
            rows.append((f"{entry['image_id']} (cost {entry['cost']:.2f})",
                         images.read_image(image_dir / entry["image_id"]),
                         batch.masks[0].cpu().numpy(), pred.cpu().numpy()))
    if rows:
        reports.overlays(rows, path)
    return bool(rows)
