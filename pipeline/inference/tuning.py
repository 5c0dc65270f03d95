"""The search of per-class post-processing on out-of-fold counts: presence threshold (gated
models), pixel threshold and ``min_area``, scored exactly from ``(N, K, 4, 3)`` counts.

A class whose predicted area is below min_area, or whose presence probability is below the
presence threshold, is empty: its Dice is then 1 if the truth is empty and 0 otherwise, so
every grid point is scored without touching a pixel again.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline import metrics
from pipeline.config import N_CLASSES
from pipeline.inference import steps

SOFTMAX_THRESHOLDS: tuple[float | None, ...] = (None, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
SIGMOID_THRESHOLDS: tuple[float | None, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
MIN_AREAS: tuple[int, ...] = (0, 100, 200, 300, 500, 800, 1000, 1500, 2000, 3000, 4000, 6000,
                              8000, 12000, 16000, 24000)
PRESENCE: tuple[float | None, ...] = (None, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


def default_thresholds(head: str) -> tuple[float | None, ...]:
    """The pixel-threshold grid of a head (None = argmax for softmax)."""
    return SOFTMAX_THRESHOLDS if head == "softmax" else SIGMOID_THRESHOLDS


def apply_gates(counts: np.ndarray, min_area: object,
                gate: np.ndarray | bool = True) -> tuple[np.ndarray, ...]:
    """``(intersection, pred_area, true_area)`` after emptying the classes below ``min_area``
    or closed by the presence ``gate``; both broadcast against ``counts[..., 0]``."""
    intersection, pred_area, true_area = np.moveaxis(counts, -1, 0)
    keep = steps.MIN_AREA.keep(pred_area, None, min_area) & gate
    return np.where(keep, intersection, 0), np.where(keep, pred_area, 0), true_area


def score_grid(counts: np.ndarray, min_areas: tuple[int, ...] = MIN_AREAS,
               presence: np.ndarray | None = None,
               gates: tuple[float | None, ...] = (None,)) -> np.ndarray:
    """``(G, K, M, 4)`` mean Dice per class for every (presence threshold g, pixel threshold k,
    min_area m); ``presence``: ``(N, 4)`` probabilities of a gated model."""
    areas = np.asarray(min_areas)[None, None, :, None]             # (1, 1, M, 1)
    expanded = counts[:, :, None, :, :]                            # (N, K, 1, 4, 3)
    grid = np.empty((len(gates), counts.shape[1], len(min_areas), N_CLASSES))
    for g, threshold in enumerate(gates):
        is_open = steps.PRESENCE.keep(None, presence, (threshold,) * N_CLASSES)
        is_open = is_open if isinstance(is_open, bool) else is_open[:, None, None, :]
        grid[g] = metrics.dice_from_counts(*apply_gates(expanded, areas, is_open)).mean(axis=0)
    return grid


@dataclass(frozen=True)
class Tuning:
    """Chosen values per class and the grid they were chosen from."""

    presence: tuple[float | None, ...]
    threshold_index: tuple[int, ...]
    min_area: tuple[int, ...]
    grid: np.ndarray          # (G, K, M, 4) class scores

    def curves(self, min_areas: tuple[int, ...] = MIN_AREAS,
               gates: tuple[float | None, ...] = (None,)) -> np.ndarray:
        """``(M, 4)``: each class's score vs min_area at its chosen gate and threshold."""
        rows = [self.grid[gates.index(self.presence[c]), self.threshold_index[c], :, c]
                for c in range(N_CLASSES)]
        return np.stack(rows, axis=1)


def tune(counts: np.ndarray, min_areas: tuple[int, ...] = MIN_AREAS,
         presence: np.ndarray | None = None,
         gates: tuple[float | None, ...] = (None,)) -> Tuning:
    """Per class, the (presence, threshold, min_area) of the best OOF score (classes are
    separable); ties go to the earliest grid point (no gate, lower threshold, smaller area)."""
    grid = score_grid(counts, min_areas, presence, gates)
    best = [np.unravel_index(np.argmax(grid[..., c]), grid.shape[:3]) for c in range(N_CLASSES)]
    return Tuning(tuple(gates[g] for g, _, _ in best), tuple(int(k) for _, k, _ in best),
                  tuple(int(min_areas[m]) for _, _, m in best), grid)


def scores_at(counts: np.ndarray, threshold_index: tuple[int, ...], min_area: tuple[int, ...],
              presence: np.ndarray | None = None,
              gate: tuple[float | None, ...] = (None,) * N_CLASSES) -> metrics.Scores:
    """Scores of the OOF set with one (threshold index, min_area, presence threshold) per class."""
    chosen = counts[:, list(threshold_index), np.arange(N_CLASSES), :]   # (N, 4, 3)
    is_open = steps.PRESENCE.keep(None, presence, gate)
    return metrics.summarize(*apply_gates(chosen, np.asarray(min_area)[None, :], is_open))


@dataclass(frozen=True)
class Outcome:
    """The default and the tuned scores of one set of counts, and the tuning chosen."""

    chosen: Tuning
    gates: tuple[float | None, ...]
    default: metrics.Scores
    tuned: metrics.Scores


def default_and_tuned(counts: np.ndarray, thresholds: tuple[float | None, ...], head: str,
                      presence: np.ndarray | None = None) -> Outcome:
    """Score ``(N, K, 4, 3)`` counts at the model's own decision (argmax or 0.5, a gate's 0.5,
    no min_area) and at the per-class post-processing tuned on them."""
    gates = PRESENCE if presence is not None else (None,)
    chosen = tune(counts, MIN_AREAS, presence, gates)
    k_default = thresholds.index(None if head == "softmax" else 0.5)
    gate_default = (None if presence is None else 0.5,) * N_CLASSES
    default = scores_at(counts, (k_default,) * N_CLASSES, (0,) * N_CLASSES, presence,
                        gate_default)
    tuned = scores_at(counts, chosen.threshold_index, chosen.min_area, presence, chosen.presence)
    return Outcome(chosen, gates, default, tuned)
