"""The kernel's drift check: how often each class is predicted on the test images, against how
often the same post-processing predicted it out-of-fold (OOF). The failure it is built to catch
is a model that predicts (almost) nothing on images of a new camera or lighting.

The reference (``reference``) is a plain JSON-safe dict that rides with the weights
(``save``/``load``); ``figures`` of the test decisions are compared with it by ``check``.

**The factor (``FACTOR = 2``).** A class warns when its test share is over twice or under half
its OOF share. Sampling cannot move a share that far: with n test images and OOF share p the
test share spreads by ``sqrt(p (1 - p) / n)``. On Kaggle n = 1,801 (public test, the commit
run) or 5,506 (the full test set), and the real training shares per class are 7.1 / 2.0 / 41.0 /
6.4% (``../shared/REAL_DATA.md``): the spread is 8.5 / 16.5 / 2.8 / 9.0% of the share at 1,801
and 4.9 / 9.4 / 1.6 / 5.2% at 5,506, so halving is at least 3 standard deviations even for
class 2 at 1,801 (binomial chance of a false warning 1.4e-4, below 1e-9 for the others).
The real test set is not shifted that much either: the all-empty submission scored 0.8556 on
the public board vs 0.8589 on train, i.e. 14.4% vs 14.1% of (image, class) pairs hold a
defect, 2% more. A factor of 1.5 would be only 2 standard deviations for class 2 at 1,801;
3 would let a model lose 60% of a class's detections silently. A 2x change is a model
behaving differently on the new images, not noise.

**The floor (``PSEUDO_IMAGES = 3``).** Shares are compared as ``(share + f)`` with
``f = 3 / n_test``: three images' worth added to both sides. A class expected on λ test
images and predicted on none then warns only when ``λ > 3 (factor - 1) = 3``, where the chance
of seeing none by luck is below ``e^-3`` = 5%; 0 of 5 test images vs 20% OOF (λ = 1, chance
33%) and 1 of 5 vs 0% OOF do not warn. At Kaggle's n the floor is 0.05% of the images and
changes nothing.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from pipeline import fileio
from pipeline.config import CLASS_IDS, N_CLASSES

log = logging.getLogger(__name__)

FACTOR = 2.0
PSEUDO_IMAGES = 3.0
FIGURE_KEYS = ("n_images", "share", "median_area")
REFERENCE_KEYS = ("oof", "train_prior", "n_train")


def figures(present: np.ndarray, areas: np.ndarray) -> dict:
    """Per class of ``(N, 4)`` bool decisions and ``(N, 4)`` predicted areas: the share of
    images predicted positive and the median area over them (None where there is none)."""
    present, areas = np.asarray(present, dtype=bool), np.asarray(areas)
    if present.ndim != 2 or present.shape[1] != N_CLASSES or areas.shape != present.shape:
        raise ValueError(f"present and areas must both be (N, {N_CLASSES}), got "
                         f"{present.shape} and {areas.shape}")
    if len(present) == 0:
        raise ValueError("no images to take drift figures of: predict at least one image")
    medians = [float(np.median(areas[present[:, c], c])) if present[:, c].any() else None
               for c in range(N_CLASSES)]
    return {"n_images": int(len(present)),
            "share": [float(v) for v in present.mean(axis=0)], "median_area": medians}


def reference(oof_predicted: np.ndarray, oof_area: np.ndarray,
              train_present: np.ndarray) -> dict:
    """The reference of the check: ``figures`` of the ``(N, 4)`` post-processed OOF decisions
    and areas, and the share of ``(M, 4)`` training images holding each class (the prior)."""
    train_present = np.asarray(train_present, dtype=bool)
    if train_present.ndim != 2 or train_present.shape[1] != N_CLASSES or not len(train_present):
        raise ValueError(f"train_present must be (M, {N_CLASSES}) with M >= 1, got "
                         f"{train_present.shape}: one row of class flags per training image")
    return {"oof": figures(oof_predicted, oof_area),
            "train_prior": [float(v) for v in train_present.mean(axis=0)],
            "n_train": int(len(train_present))}


def save(path: Path, ref: dict) -> None:
    """Write a reference dict as JSON atomically."""
    fileio.write_json(path, ref)


def load(path: Path) -> dict:
    """A reference written by ``save``; ValueError naming the file for a bad one."""
    try:
        ref = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not a drift reference: {error}: rerun `make cv`") from None
    ok = isinstance(ref, dict) and set(ref) == set(REFERENCE_KEYS) and \
        isinstance(ref["oof"], dict) and set(ref["oof"]) == set(FIGURE_KEYS)
    if not ok:
        raise ValueError(f"{path} is not a drift reference: an object with keys "
                         f"{list(REFERENCE_KEYS)} (oof: {list(FIGURE_KEYS)}) was expected: "
                         "rerun `make cv`")
    return ref


def _percent(share: float) -> str:
    return f"{share:.1%}"


def check(test_figures: dict, reference: dict, factor: float = FACTOR,
          pseudo_images: float = PSEUDO_IMAGES) -> list[str]:
    """Warning lines, one per class whose test positive share is over ``factor`` times or under
    1/``factor`` of its OOF share (both shares plus ``pseudo_images / n_test``; see above)."""
    if factor <= 1:
        raise ValueError(f"factor must be > 1, got {factor}: e.g. {FACTOR}")
    n_test = test_figures["n_images"]
    floor = pseudo_images / n_test
    warnings = []
    for c in range(N_CLASSES):
        test, oof = test_figures["share"][c], reference["oof"]["share"][c]
        head = (f"class {CLASS_IDS[c]}: predicted on {_percent(test)} of the {n_test:,} test "
                f"images vs {_percent(oof)} out-of-fold")
        if test + floor < (oof + floor) / factor:
            hint = ("a model that predicts nothing on new images?" if test == 0 else
                    f"{oof / test:.1f}x fewer")
            warnings.append(f"{head} ({hint}): compare the test images with the training "
                            "images (camera, brightness) and the inference settings")
        elif test + floor > factor * (oof + floor):
            hint = f"{test / oof:.1f}x more" if oof > 0 else "never predicted out-of-fold"
            warnings.append(f"{head} ({hint}): false positives on new images? compare the "
                            "test images with the training images (camera, brightness)")
    for line in warnings:
        log.warning("drift: %s", line)
    return warnings


def _area(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def format_table(test_figures: dict, reference: dict) -> str:
    """A per-class table: test share and median area, OOF share and median area, training
    prior (the share of training images holding the class)."""
    oof = reference["oof"]
    lines = [f"test {test_figures['n_images']:,} images, OOF {oof['n_images']:,}, "
             f"train {reference['n_train']:,}",
             "class  test share  test median area  OOF share  OOF median area  train prior"]
    for c in range(N_CLASSES):
        lines.append(f"{CLASS_IDS[c]:5d}  {_percent(test_figures['share'][c]):>10s}  "
                     f"{_area(test_figures['median_area'][c]):>16s}  "
                     f"{_percent(oof['share'][c]):>9s}  "
                     f"{_area(oof['median_area'][c]):>15s}  "
                     f"{_percent(reference['train_prior'][c]):>11s}")
    return "\n".join(lines)
