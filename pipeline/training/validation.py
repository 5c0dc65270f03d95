"""Validation of one fold's model: loss, and the competition score both at the model's own
decision and at post-processing tuned on the fold's validation counts, over all ranks.

The tuned score is what ``cv`` would report for this epoch alone: the same counts
(``inference.oof.OOFAccumulator``) and the same search (``inference.tuning``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from pipeline import distributed
from pipeline.config import HEIGHT, WIDTH
from pipeline.data.dataset import to_model_input
from pipeline.inference import tuning
from pipeline.inference.oof import OOFAccumulator
from pipeline.models import forward
from pipeline.stages import stage


def _gather(local: np.ndarray, context: distributed.Context) -> np.ndarray:
    """The arrays of every rank, concatenated along the first axis."""
    return np.concatenate(distributed.gather(local, context), axis=0)


@torch.inference_mode()
def evaluate(model, loader, loss_fn, cfg, context: distributed.Context) -> dict:
    """``val_loss`` and the scores (``val_score`` and ``val_nonempty`` at the default decision,
    ``val_tuned`` and ``val_tuned_nonempty`` tuned, ``val_baseline`` all-empty, per class)."""
    model.eval()
    total_loss, n_images, accumulator = 0.0, 0, None
    for batch in tqdm(loader, desc="validate", leave=False, unit="batch",
                      disable=cfg.quiet or not context.is_main or None):
        if "image" not in batch:
            continue
        images = to_model_input(batch["image"], context.device, cfg.channels_last)
        masks = batch["masks"].to(context.device)
        with forward.autocast(cfg.amp, context.device), stage("forward"):
            logits, presence = forward.forward_padded(model, images)
        # The loss at the model's resolution, as in training; the score on the 256x1600 grid.
        with stage("loss"):
            small = F.interpolate(masks.float(), size=logits.shape[-2:], mode="nearest")
            total_loss += loss_fn(logits.float(), small, presence).item() * len(images)
        with stage("upsample"):
            logits = forward.upsample(logits, (HEIGHT, WIDTH))
        with stage("probabilities"):
            probs = forward.probabilities(logits, cfg.head)
        n_images += len(images)
        accumulator = accumulator or OOFAccumulator(cfg.head,
                                                    tuning.default_thresholds(cfg.head))
        accumulator.add(list(batch["image_id"]), probs.float(), masks,
                        None if presence is None else presence.float().sigmoid())
    thresholds = tuning.default_thresholds(cfg.head)
    counts = _gather(accumulator.counts() if accumulator else
                     np.zeros((0, len(thresholds), 4, 3), np.int64), context)
    present = accumulator.presence() if accumulator else None
    presence_all = None
    if cfg.gate:   # every rank's model has the gate, whether or not the rank had images
        presence_all = _gather(np.zeros((0, 4), np.float32) if present is None else present,
                               context)
    outcome = tuning.default_and_tuned(counts, thresholds, cfg.head, presence_all)
    loss = distributed.mean_across_ranks(total_loss / max(n_images, 1), n_images, context)
    default, tuned = outcome.default, outcome.tuned
    return {"val_loss": loss, "val_score": default.score, "val_nonempty": default.nonempty,
            "val_baseline": default.all_empty_baseline, "val_per_class": default.per_class,
            "val_tuned": tuned.score, "val_tuned_nonempty": tuned.nonempty,
            "val_tuned_per_class": tuned.per_class,
            "val_tuned_nonempty_per_class": [None if v != v else v   # JSON has no NaN
                                             for v in tuned.nonempty_per_class]}
