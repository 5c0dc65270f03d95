"""``pseudo-label``: a run's or an ensemble's confident test predictions as a train.csv-format
file (``pseudo``'s rule, its thresholds chosen on the out-of-fold predictions of ``cv``).

Writes the pseudo-label CSV and, beside it, ``<name>.json``: the rule, its OOF precision per
class, how many test images were kept per class and, where the data has ``test_truth.csv``
(synthetic sets), the pseudo-labels' own Dice against it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from pipeline import distributed, fileio, metrics
from pipeline.config import CLASS_IDS, code_version, resolve_data_dir
from pipeline.data import labels, rle
from pipeline.inference import ensembles, oof, postprocess, predict, pseudo, submission
from pipeline.inference.config import InferenceConfig, with_recorded
from pipeline.inference.robustness import load_tuned

log = logging.getLogger(__name__)


def oof_rule(source: ensembles.Source, params: postprocess.PostProcess,
             precision: float) -> pseudo.Rule:
    """The rule's thresholds from the source's ``reports/oof.npz`` under its tuned ``params``."""
    arrays = oof.load_oof(source.paths.reports / "oof.npz")
    thresholds = np.array([np.nan if t is None else t for t in arrays["thresholds"]])
    predicted, _, truth = pseudo.oof_decisions(arrays["counts"], thresholds,
                                               arrays["presence"], params)
    return pseudo.choose_rule(arrays["presence"], predicted, truth, precision)


def label_test_images(run_dir: str | None, data_dir: str | None, out: Path,
                      precision: float = 0.95, requested: dict | None = None,
                      accept: bool = False) -> dict:
    """Predict the test images, keep the confident ones, write ``out`` and its report; returns
    the report (also written as ``out`` with the suffix ``.json``). ``accept``: use the tuned
    post-processing even for other checkpoints or settings (``--accept-postprocess``)."""
    if not 0.0 < precision <= 1.0:
        raise ValueError(f"--precision {precision} must be in (0, 1], e.g. 0.95")
    source, paths = ensembles.resolve(run_dir), resolve_data_dir(data_dir)
    params = load_tuned(source.paths)
    rule = oof_rule(source, params, precision)
    settings = with_recorded(requested or {}, params.inference,
                             str(source.paths.postprocess_json), accept)
    sample = submission.read_sample(paths.sample_submission)
    submission.check_test_images(paths.test_images, sample.image_ids, sample.path)
    truth = labels.read_labels(paths.test_truth) if paths.test_truth.is_file() else None
    decided = _test_decisions(source, paths, sample.image_ids, params, settings, truth, accept)
    kept = pseudo.keep(rule, decided["presence"], decided["predicted"])
    ids = [i for i, k in zip(sample.image_ids, kept) if k]
    report = {"source": str(source.root), "members": [m.name for m in source.members],
              "rule": rule.as_dict(), "n_test": len(sample.image_ids), "n_kept": len(ids),
              "kept_positive": decided["predicted"][kept].sum(axis=0).tolist(),
              "inference": settings.as_dict(), "code_version": code_version()}
    if truth is not None:
        report["truth"] = _truth_scores(decided["counts"][kept])
    if not ids:
        log.warning("no test image passed the rule (target precision %g): the file lists none",
                    precision)
    pseudo.write_pseudo_csv(out, ids, {i: decided["rles"][i] for i in ids})
    fileio.write_json(out.with_suffix(".json"), report)
    report["table"] = pseudo.format_report(rule, decided["presence"], decided["predicted"])
    return report


def _test_decisions(source: ensembles.Source, paths, image_ids: list[str],
                    params: postprocess.PostProcess, settings: InferenceConfig,
                    truth, accept: bool = False) -> dict:
    """Per test image: presence (N, 4), post-processed decision (N, 4), RLEs and, with
    ``truth``, the (N, 4, 3) pair counts against it."""
    context = distributed.setup(settings.device)
    models = source.all_models()
    ensemble = predict.load_models([p for p, _ in models], context.device, settings,
                                   [w for _, w in models])
    if not ensemble.gated:
        raise ValueError(pseudo.NO_GATE)
    postprocess.check_models(params, ensemble.named_digests(),
                             str(source.paths.postprocess_json), accept)
    rles = None if truth is None else labels.rle_table(truth, image_ids)
    loader = predict.make_loader(paths.test_images, image_ids, ensemble.input_scale, settings,
                                 rles)
    presence, predicted, counts, by_image = [], [], [], {}
    for batch in predict.iterate_probabilities(ensemble, loader, context.device, settings,
                                               desc="pseudo-label"):
        masks = postprocess.class_masks(batch.probs, params, batch.presence)
        presence.append(batch.presence.float().cpu().numpy())
        predicted.append(masks.flatten(2).any(dim=2).cpu().numpy())
        if batch.masks is not None:
            counts.append(torch.stack(metrics.pair_counts(masks, batch.masks.bool()),
                                      dim=-1).cpu().numpy())
        for image_id, image_masks in zip(batch.image_ids, masks.cpu().numpy()):
            by_image[image_id] = [rle.encode(mask) for mask in image_masks]
    return {"presence": np.concatenate(presence), "predicted": np.concatenate(predicted),
            "counts": np.concatenate(counts) if counts else None, "rles": by_image}


def _truth_scores(counts: np.ndarray) -> dict:
    """The kept pseudo-labels against the test truth: mean Dice over their (image, class)
    pairs, per class, and the share of images whose every class's presence is right."""
    if not len(counts):
        return {"dice": None, "per_class": [None] * len(CLASS_IDS), "presence_right": None}
    dice = metrics.dice_from_counts(*np.moveaxis(counts, -1, 0))
    right = ((counts[..., 1] > 0) == (counts[..., 2] > 0)).all(axis=1)
    return {"dice": float(dice.mean()), "per_class": dice.mean(axis=0).tolist(),
            "presence_right": float(right.mean())}
