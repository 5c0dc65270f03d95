"""Pseudo-labels of test images: the 1st place's rule (keep a test image where the presence gate
and the segmentation agree, confidently, on every class), with its thresholds chosen on the
out-of-fold (OOF) predictions.

Per class c an image is a **confident positive** when its post-processed mask is non-empty and
its presence probability is ``>= hi[c]``, a **confident negative** when the mask is empty and the
presence is ``<= lo[c]``. An image is kept when every class is confident either way; its
pseudo-label is the predicted masks (empty for the negatives).

``hi[c]`` is the smallest value of ``HI_GRID`` at which the OOF confident positives are right
(truth holds class c) at least ``precision`` of the time; ``lo[c]`` the largest value of
``LO_GRID`` at which the OOF confident negatives are right (truth without class c) as often. A
grid point with no confident image has no precision and never qualifies. Where no grid value
reaches the target, ``hi[c]`` (resp. ``lo[c]``) is None: no image predicted positive (resp.
negative) for class c is ever kept, so the rule keeps no image at all where both are None.

The rule needs a gate: a model trained without ``--gate`` has no presence probabilities and
gets a ValueError.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import fileio
from pipeline.config import CLASS_IDS, N_CLASSES
from pipeline.inference import steps, tuning
from pipeline.inference.postprocess import PostProcess

log = logging.getLogger(__name__)

HI_GRID: tuple[float, ...] = tuple(np.round(np.arange(0.50, 0.995, 0.01), 2).tolist())
LO_GRID: tuple[float, ...] = tuple(np.round(np.arange(0.01, 0.505, 0.01), 2).tolist())
PSEUDO_HEADER = ["ImageId", "ClassId", "EncodedPixels"]
NO_GATE = ("pseudo-labels need a presence gate (the rule keeps images where gate and "
           "segmentation agree): train with --gate")


@dataclass(frozen=True)
class Rule:
    """Per class: the presence thresholds of confident positives (``hi``) and negatives
    (``lo``), None where the target precision is never reached, and their OOF figures."""

    hi: tuple[float | None, ...]
    lo: tuple[float | None, ...]
    precision: float                          # the target precision
    n_positive: tuple[int, ...]               # OOF confident positives at hi
    positive_precision: tuple[float | None, ...]
    n_negative: tuple[int, ...]               # OOF confident negatives at lo
    negative_precision: tuple[float | None, ...]
    n_oof: int                                # OOF images
    oof_kept: int                             # OOF images the rule keeps
    oof_kept_positive: tuple[int, ...]        # per class, the positives among them

    def as_dict(self) -> dict:
        """A JSON-safe dict (lists, None for a missing threshold or precision)."""
        return {key: list(value) if isinstance(value, tuple) else value
                for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict) -> "Rule":
        """The rule of ``as_dict``; ValueError naming missing or unknown keys."""
        names = [f.name for f in fields(cls)]
        if not isinstance(values, dict) or set(values) != set(names):
            got = sorted(values) if isinstance(values, dict) else type(values).__name__
            raise ValueError(f"a pseudo-label rule needs exactly the keys {names}, got {got}: "
                             "rewrite it with Rule.as_dict")
        return cls(**{key: tuple(v) if isinstance(v, list) else v for key, v in values.items()})


def _threshold_indices(thresholds: np.ndarray, params: PostProcess) -> list[int]:
    """The index in the ``(K,)`` candidate thresholds (NaN = argmax) of each class's tuned one."""
    indices = []
    for c, value in enumerate(params.threshold):
        hits = np.flatnonzero(np.isnan(thresholds) if value is None else
                              np.isclose(thresholds, value, rtol=0.0, atol=1e-6))
        if hits.size == 0:
            shown = "argmax" if value is None else f"{value:g}"
            raise ValueError(f"class {CLASS_IDS[c]}: threshold {shown} is not one of the OOF "
                             f"candidate thresholds {thresholds.tolist()}: rerun `make cv`")
        indices.append(int(hits[0]))
    return indices


def oof_decisions(counts: np.ndarray, thresholds: np.ndarray, presence: np.ndarray | None,
                  params: PostProcess) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(predicted (N, 4) bool, area (N, 4) int64, truth (N, 4) bool)`` of ``(N, K, 4, 3)``
    OOF counts under ``params`` (its threshold, min_area and gate), as ``tuning`` scores them;
    ``thresholds (K,)``: the candidates (NaN = argmax), ``presence (N, 4)`` or None."""
    counts, thresholds = np.asarray(counts), np.asarray(thresholds, dtype=float)
    if counts.ndim != 4 or counts.shape[2:] != (N_CLASSES, 3):
        raise ValueError(f"counts must be (N, K, {N_CLASSES}, 3), got {counts.shape}: pass the "
                         "'counts' array of reports/oof.npz")
    if thresholds.shape != (counts.shape[1],):
        raise ValueError(f"thresholds must be ({counts.shape[1]},) like counts' axis 1, got "
                         f"{thresholds.shape}: pass the 'thresholds' array of the same file")
    if presence is not None and np.shape(presence) != (counts.shape[0], N_CLASSES):
        raise ValueError(f"presence must be ({counts.shape[0]}, {N_CLASSES}), got "
                         f"{np.shape(presence)}: pass the 'presence' array of the same file")
    if params.gated and presence is None:
        raise ValueError("the post-processing uses a presence gate but the OOF file has no "
                         "presence values: rerun `make cv` for these checkpoints")
    chosen = counts[:, _threshold_indices(thresholds, params), np.arange(N_CLASSES), :]
    is_open = steps.PRESENCE.keep(None, presence, params.presence)
    _, area, true_area = tuning.apply_gates(chosen, np.asarray(params.min_area)[None, :],
                                            is_open)
    return area > 0, area.astype(np.int64), true_area > 0


def _need_gate(presence: np.ndarray | None) -> np.ndarray:
    if presence is None:
        raise ValueError(NO_GATE)
    return np.asarray(presence, dtype=float)


def _first_reaching(confident: np.ndarray, right: np.ndarray, target: float) -> tuple:
    """Per class, the first grid index whose precision reaches ``target`` (-1: none), and the
    ``(G, 4)`` counts and precisions; ``confident``, ``right``: ``(N, G, 4)`` bools."""
    n = confident.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = right.sum(axis=0) / n
    reached = precision >= target                     # NaN (no image) never reaches
    first = np.where(reached.any(axis=0), reached.argmax(axis=0), -1)
    return first, n, precision


def _at(first: np.ndarray, grid: np.ndarray, n: np.ndarray, precision: np.ndarray) -> tuple:
    """``(values, counts, precisions)`` per class at the chosen grid indices (-1: None)."""
    pick = [(None, 0, None) if g < 0 else
            (float(grid[g]), int(n[g, c]), float(precision[g, c])) for c, g in enumerate(first)]
    return tuple(tuple(column) for column in zip(*pick))


def choose_rule(presence: np.ndarray | None, predicted: np.ndarray, truth: np.ndarray,
                precision: float = 0.95, hi_grid: tuple[float, ...] = HI_GRID,
                lo_grid: tuple[float, ...] = LO_GRID) -> Rule:
    """The rule of ``(N, 4)`` OOF presence probabilities, post-processed decisions and truth:
    per class the smallest ``hi`` and the largest ``lo`` whose precision reaches the target."""
    presence = _need_gate(presence)
    predicted, truth = np.asarray(predicted, dtype=bool), np.asarray(truth, dtype=bool)
    if not presence.shape == predicted.shape == truth.shape == (len(presence), N_CLASSES):
        raise ValueError(f"presence, predicted and truth must all be (N, {N_CLASSES}), got "
                         f"{presence.shape}, {predicted.shape}, {truth.shape}")
    if not 0.0 < precision <= 1.0:
        raise ValueError(f"precision must be in (0, 1], got {precision}: e.g. 0.95")
    hi_grid, lo_grid = np.asarray(hi_grid, dtype=float), np.asarray(lo_grid, dtype=float)[::-1]
    positive = predicted[:, None] & (presence[:, None] >= hi_grid[None, :, None])
    first, n, share = _first_reaching(positive, positive & truth[:, None], precision)
    hi, n_positive, positive_precision = _at(first, hi_grid, n, share)
    negative = ~predicted[:, None] & (presence[:, None] <= lo_grid[None, :, None])  # largest first
    first, n, share = _first_reaching(negative, negative & ~truth[:, None], precision)
    lo, n_negative, negative_precision = _at(first, lo_grid, n, share)
    rule = Rule(hi, lo, float(precision), n_positive, positive_precision, n_negative,
                negative_precision, len(presence), 0, (0,) * N_CLASSES)
    kept = keep(rule, presence, predicted)
    rule = replace(rule, oof_kept=int(kept.sum()),
                   oof_kept_positive=tuple(int(v) for v in predicted[kept].sum(axis=0)))
    log.info("pseudo-label rule: hi %s, lo %s; keeps %d of %d OOF images", hi, lo,
             rule.oof_kept, rule.n_oof)
    return rule


def keep(rule: Rule, presence: np.ndarray | None, predicted: np.ndarray) -> np.ndarray:
    """``(N,)`` bool: the images of ``(N, 4)`` presence and decisions that every class holds
    confidently (positive: predicted and presence >= hi; negative: not and presence <= lo)."""
    presence, predicted = _need_gate(presence), np.asarray(predicted, dtype=bool)
    if presence.shape != predicted.shape or presence.shape[1:] != (N_CLASSES,):
        raise ValueError(f"presence and predicted must both be (N, {N_CLASSES}), got "
                         f"{presence.shape} and {predicted.shape}")
    hi = np.array([np.inf if v is None else v for v in rule.hi])
    lo = np.array([-np.inf if v is None else v for v in rule.lo])
    confident = np.where(predicted, presence >= hi, presence <= lo)
    return confident.all(axis=1)


def _cell(value: float | None, n: int) -> str:
    return "   -  (none)" if value is None else f"{value:6.1%} ({n})"


def format_report(rule: Rule, test_presence: np.ndarray | None = None,
                  test_predicted: np.ndarray | None = None) -> str:
    """A per-class table of the rule and its OOF figures, and with ``(M, 4)`` test presence
    and decisions the test images kept and the positives among them."""
    with_test = test_predicted is not None
    if with_test:
        kept = keep(rule, test_presence, test_predicted)
        test_positive = np.asarray(test_predicted, dtype=bool)[kept].sum(axis=0)
    lines = [f"pseudo-label rule (target precision {rule.precision:.0%}): OOF keeps "
             f"{rule.oof_kept} of {rule.n_oof} images"
             + (f"; test keeps {int(kept.sum())} of {len(kept)}" if with_test else ""),
             "class    hi    lo  OOF precision + (n)  OOF precision - (n)  OOF kept +"
             + ("  test kept +" if with_test else "")]
    for c in range(N_CLASSES):
        hi, lo = (("  none" if v is None else f"{v:6.2f}") for v in (rule.hi[c], rule.lo[c]))
        lines.append(f"{CLASS_IDS[c]:5d}{hi}{lo}  "
                     f"{_cell(rule.positive_precision[c], rule.n_positive[c]):>19s}  "
                     f"{_cell(rule.negative_precision[c], rule.n_negative[c]):>19s}  "
                     f"{rule.oof_kept_positive[c]:10d}"
                     + (f"  {int(test_positive[c]):11d}" if with_test else ""))
    return "\n".join(lines)


def write_pseudo_csv(path: Path, image_ids: list[str], rles_by_image: dict) -> None:
    """Write ``ImageId,ClassId,EncodedPixels`` atomically: every image of ``image_ids`` with its
    4 class rows ('' = no defect) from ``rles_by_image[image_id]``, sorted by image then class;
    an empty ``image_ids`` writes the header only (the caller warns)."""
    image_ids = [str(i) for i in image_ids]
    twice = [i for i, n in Counter(image_ids).items() if n > 1]
    if twice:
        raise ValueError(f"image {twice[0]} is listed twice in the pseudo-labels: keep one entry")
    rows = []
    for image_id in sorted(image_ids):
        rles = rles_by_image.get(image_id)
        if rles is None or len(rles) != N_CLASSES:
            raise ValueError(f"image {image_id}: pseudo-labels need {N_CLASSES} RLE strings "
                             f"(classes 1..4, '' for none), got {rles!r}")
        rows += [(image_id, class_id, rle or "") for class_id, rle in zip(CLASS_IDS, rles)]
    table = pd.DataFrame(rows, columns=PSEUDO_HEADER)
    fileio.write_text(path, table.to_csv(index=False, lineterminator="\n"))
    log.info("wrote pseudo-labels of %d images to %s", len(image_ids), path)
