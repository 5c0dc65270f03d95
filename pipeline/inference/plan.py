"""``plan-kernel``: for each choice of an ensemble's members x flip TTA, the kernel's estimated
run time on the whole test set and the choice's out-of-fold score, and which choices fit the
kernel's time limit.

Time of a choice = start-up (loading its models) + images x (sum over its models of flips /
that model's measured image passes per second + the per-image decode, post-processing and RLE
time). Rates are measured here, on this machine (``measure``); a ``make bench-gpu`` JSON, where
given, adds a GPU estimate per architecture (measured at 256x1600 on its default encoder,
scaled by 1 / input_scale^2 for a model fed at another scale).

The OOF score of a choice is cv's tuned score of that choice's out-of-fold probabilities, every
choice scored on the same images: each member's fold model runs once per flip and the choices
combine those passes (in the order ``predict.ensemble_probabilities`` does, so the full choice
at cv's TTA reproduces cv's probabilities).
"""

from __future__ import annotations

import itertools
import logging
import statistics
import time
from dataclasses import dataclass

import torch

from pipeline import distributed
from pipeline.data import folds, labels
from pipeline.data.dataset import to_model_input
from pipeline.data.images import list_images
from pipeline.inference import ensembles, oof, postprocess, predict, tuning
from pipeline.inference.config import TTA_MODES, InferenceConfig

log = logging.getLogger(__name__)

KAGGLE_TEST_IMAGES = 5506


@dataclass(frozen=True)
class Rate:
    """A member's measured speed: image passes/s of one model (median of rounds, and the
    range), seconds to load one model; the GPU estimate where a bench-gpu file has it."""

    member: str
    n_models: int
    passes_per_s: float
    spread: tuple[float, float]
    load_s: float
    gpu_passes_per_s: float | None = None


def choice_seconds(rates: list[Rate], tta: str, n_images: int, overhead_s: float,
                   gpu: bool = False) -> float:
    """The kernel's estimated seconds for ``n_images`` with the members of ``rates`` at
    ``tta``: start-up (loading every model) + per image every model's flips at its rate +
    ``overhead_s`` per image (decode, post-processing, RLE)."""
    flips = len(TTA_MODES[tta])
    per_image = sum(r.n_models * flips / (r.gpu_passes_per_s if gpu else r.passes_per_s)
                    for r in rates)
    return sum(r.n_models * r.load_s for r in rates) + n_images * (per_image + overhead_s)


def measure(source: ensembles.Source, images: torch.Tensor, settings: InferenceConfig,
            device: torch.device, rounds: int = 3) -> list[Rate]:
    """Each member's rate: one of its models timed on ``images`` ``(B, 3, h, w)`` float (at the
    largest input scale), one untimed pass, then ``rounds`` timed ones."""
    rates = []
    for member, (path, _) in zip(source.members, source.fold_models(0)):
        start = time.perf_counter()
        ensemble = predict.load_models([path], device, settings)
        load_s = time.perf_counter() - start
        model, info = ensemble.runners[0], ensemble.infos[0]
        inputs = predict.model_input(images, info)
        seconds = []
        for i in range(rounds + 1):
            start = time.perf_counter()
            predict.pass_probabilities(model, info, inputs, (), settings.amp)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i:
                seconds.append(time.perf_counter() - start)
        n = len(member.run.find_checkpoints())   # a run is its own only member
        rates.append(Rate(member.name, n, len(images) / statistics.median(seconds),
                          (len(images) / max(seconds), len(images) / min(seconds)), load_s))
    return rates


def with_gpu(rates: list[Rate], source: ensembles.Source, bench: dict | None) -> list[Rate]:
    """The rates with the GPU estimate of a bench-gpu JSON (``models``: rows with ``model`` and
    ``predict_images_per_s`` at its ``height`` x ``width``), where it has the architecture."""
    if not bench:
        return rates
    by_model = {row["model"]: row.get("predict_images_per_s") for row in bench["models"]}
    updated = []
    for rate, (path, _) in zip(rates, source.fold_models(0)):
        info = predict.load_models([path], torch.device("cpu")).infos[0]
        full = by_model.get(info.name)
        scale_area = (bench["height"] * bench["width"]) / (256 * 1600)
        gpu = None if not full else full * scale_area / info.input_scale ** 2
        updated.append(Rate(**{**rate.__dict__, "gpu_passes_per_s": gpu}))
    return updated


def choices(source: ensembles.Source) -> list[tuple[tuple[int, ...], str]]:
    """Every non-empty subset of the members (by index) x every TTA mode."""
    indices = range(len(source.members))
    subsets = [s for k in indices for s in itertools.combinations(indices, k + 1)]
    return [(subset, tta) for subset in subsets for tta in TTA_MODES]


def _combine(outputs: dict, subset: tuple[int, ...], tta: str, weights: list[float],
             gated: list[bool]):
    """The choice's probabilities and presence from the passes ``outputs[(member, dims)]``,
    summed in ``ensemble_probabilities``' order."""
    total, present, gated_weight = None, None, 0.0
    for m in subset:
        for dims in TTA_MODES[tta]:
            probs, presence = outputs[(m, dims)]
            probs = probs.clone() if weights[m] == 1.0 else probs * weights[m]
            total = probs if total is None else total.add_(probs)
            if presence is not None:
                presence = presence.clone() if weights[m] == 1.0 else presence * weights[m]
                present = presence if present is None else present.add_(presence)
        gated_weight += weights[m] if gated[m] else 0.0
    n_flips = len(TTA_MODES[tta])
    total = total.div_(sum(weights[m] for m in subset) * n_flips)
    return total, None if present is None else present.div_(gated_weight * n_flips)


def oof_scores(source: ensembles.Source, paths, settings: InferenceConfig,
               limit: int | None, min_component: tuple[int, ...]) -> dict:
    """``{(subset, tta): (default, tuned) metrics.Scores}`` of every choice on the first
    ``limit`` validation images of each fold (all with None)."""
    context = distributed.setup(settings.device)
    table, image_ids = labels.load_train(paths)
    split = folds.read_folds(source.folds_csv, image_ids)
    rles = labels.rle_table(table, image_ids)
    wanted = choices(source)
    accumulators: dict = {}
    for fold in sorted(set(split["fold"])):
        members = [predict.load_models([p], context.device, settings)
                   for p, _ in source.fold_models(fold)]
        weights = [w for _, w in source.fold_models(fold)]
        gated = [m.gated for m in members]
        scale = max(m.input_scale for m in members)
        val_ids = folds.split_ids(split, fold)[1][:limit]
        loader = predict.make_loader(paths.train_images, val_ids, scale, settings, rles)
        for batch in loader:
            images = to_model_input(batch["image"], context.device)
            outputs = {(m, dims): predict.pass_probabilities(
                model.runners[0], model.infos[0], predict.model_input(images, model.infos[0]),
                dims, settings.amp) for m, model in enumerate(members)
                for dims in TTA_MODES["hvflip"]}
            for subset, tta in wanted:
                probs, presence = _combine(outputs, subset, tta, weights, gated)
                head = "softmax" if all(members[m].head == "softmax" for m in subset) \
                    else "sigmoid"
                accumulator = accumulators.setdefault((subset, tta), oof.OOFAccumulator(
                    head, tuning.default_thresholds(head), min_component))
                accumulator.add(batch["image_id"], probs, batch["masks"], presence)
        log.info("plan: fold %d scored for %d choices (%d images)", fold, len(wanted),
                 len(val_ids))
    return {key: _scores(acc) for key, acc in accumulators.items()}


def _scores(accumulator: oof.OOFAccumulator):
    outcome = tuning.default_and_tuned(accumulator.counts(), accumulator.thresholds,
                                       accumulator.head, accumulator.presence())
    return outcome.default, outcome.tuned


def overhead_per_image(params: postprocess.PostProcess, n: int = 4) -> float:
    """Seconds per image of the post-processing and RLE of 256x1600 probabilities (the part of
    the kernel's time outside the model passes and the decode)."""
    from pipeline.data import rle

    probs = torch.rand(n, 4, 256, 1600)
    presence = torch.rand(n, 4) if params.gated else None
    start = time.perf_counter()
    for masks in postprocess.class_masks(probs, params, presence).numpy():
        [rle.encode(mask) for mask in masks]
    return (time.perf_counter() - start) / n


def plan_kernel(run_dir: str | None, data_dir: str | None, settings: InferenceConfig,
                n_images: int = KAGGLE_TEST_IMAGES, limit_s: float = 3600.0,
                margin_s: float = 300.0, images_per_fold: int | None = None,
                gpu_bench: dict | None = None) -> dict:
    """Measure, estimate and score every choice; returns (and writes as
    ``reports/kernel-plan.json``) the plan: rates, per choice its passes per image, estimated
    seconds (CPU here; GPU where ``gpu_bench`` has the architectures), OOF scores, fit."""
    from pipeline import fileio
    from pipeline.config import code_version, resolve_data_dir

    if n_images < 1 or limit_s <= margin_s or margin_s < 0:
        raise ValueError(f"--n-images {n_images}, --limit {limit_s:g}, --margin {margin_s:g}: "
                         "need at least one image and 0 <= margin < limit")
    source, paths = ensembles.resolve(run_dir), resolve_data_dir(data_dir)
    tuned = source.paths.postprocess_json
    params = postprocess.PostProcess.load(tuned) if tuned.is_file() else postprocess.PostProcess()
    context = distributed.setup(settings.device)
    test_ids = list_images(paths.test_images)[:settings.batch_size]
    if not test_ids:
        raise FileNotFoundError(f"no test image in {paths.test_images}: the rates are measured "
                                "on test images")
    scale = max(predict.load_models([p], torch.device("cpu")).input_scale
                for p, _ in source.fold_models(0))
    start = time.perf_counter()
    batch = next(iter(predict.make_loader(paths.test_images, test_ids, scale, settings)))
    decode_s = (time.perf_counter() - start) / len(test_ids)
    images = to_model_input(batch["image"], context.device)
    rates = with_gpu(measure(source, images, settings, context.device), source, gpu_bench)
    overhead = decode_s + overhead_per_image(params)
    scores = oof_scores(source, paths, settings, images_per_fold, params.min_component)
    budget, gpu = limit_s - margin_s, all(r.gpu_passes_per_s for r in rates)
    rows = []
    for (subset, tta), (default, tuned_scores) in scores.items():
        chosen = [rates[m] for m in subset]
        cpu_s = choice_seconds(chosen, tta, n_images, overhead)
        gpu_s = choice_seconds(chosen, tta, n_images, overhead, gpu=True) if gpu else None
        rows.append({"members": [rates[m].member for m in subset], "tta": tta,
                     "passes_per_image": sum(r.n_models for r in chosen) * len(TTA_MODES[tta]),
                     "cpu_seconds": cpu_s, "gpu_seconds": gpu_s,
                     "oof_default": default.score, "oof_tuned": tuned_scores.score,
                     "fits": (gpu_s if gpu else cpu_s) <= budget})
    plan = {"source": str(source.root), "n_images": n_images, "limit_s": limit_s,
            "margin_s": margin_s, "fit_on": "gpu (bench-gpu figures)" if gpu else "cpu (here)",
            "overhead_s_per_image": overhead, "rates": [r.__dict__ for r in rates],
            "images_per_fold": images_per_fold, "choices": rows, "code_version": code_version()}
    fileio.write_json(source.paths.reports / "kernel-plan.json", plan)
    return plan


def format_plan(plan: dict) -> str:
    """The rates, then one line per choice, best OOF score first, fitting ones marked."""
    lines = [f"{r['member']}: {r['passes_per_s']:.2f} image passes/s here "
             f"({r['spread'][0]:.2f}-{r['spread'][1]:.2f}), {r['n_models']} model(s), load "
             f"{r['load_s']:.1f} s"
             + (f"; GPU estimate {r['gpu_passes_per_s']:.1f}/s" if r["gpu_passes_per_s"] else "")
             for r in plan["rates"]]
    lines.append(f"{plan['n_images']:,} images, limit {plan['limit_s']:.0f} s - margin "
                 f"{plan['margin_s']:.0f} s, fit judged on {plan['fit_on']}; "
                 f"{plan['overhead_s_per_image'] * 1000:.0f} ms/image decode + post-processing")
    lines.append(f"{'members':40}{'tta':>7}{'passes':>8}{'CPU s':>10}{'GPU s':>9}"
                 f"{'OOF def.':>10}{'OOF tuned':>10}  fits")
    for row in sorted(plan["choices"], key=lambda r: -r["oof_tuned"]):
        gpu = "-" if row["gpu_seconds"] is None else f"{row['gpu_seconds']:.0f}"
        lines.append(f"{'+'.join(row['members'])[:39]:40}{row['tta']:>7}"
                     f"{row['passes_per_image']:>8}{row['cpu_seconds']:>10.0f}{gpu:>9}"
                     f"{row['oof_default']:>10.4f}{row['oof_tuned']:>10.4f}  "
                     f"{'yes' if row['fits'] else 'NO'}")
    return "\n".join(lines)
