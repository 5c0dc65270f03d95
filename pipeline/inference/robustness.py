"""Out-of-fold scores under input shifts (``data.shifts``): every fold's best model on its own
validation images, each image shifted as it is read, scored at the run's tuned
post-processing (``postprocess.json`` of ``cv``) next to the same images' all-empty baseline.

A shift whose score falls below its all-empty baseline means the model, as tuned, does worse
there than predicting nothing at all.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path

from pipeline import distributed, fileio, plotting
from pipeline.config import N_CLASSES, RunPaths, code_version, resolve_data_dir
from pipeline.data import folds, shifts
from pipeline.inference import ensembles, oof, postprocess, tuning
from pipeline.inference.config import with_recorded
from pipeline.stages import stage

log = logging.getLogger(__name__)


def load_tuned(run: RunPaths) -> postprocess.PostProcess:
    """The run's tuned post-processing; a one-line error when ``cv`` has not written it."""
    if not run.postprocess_json.is_file():
        raise FileNotFoundError(f"{run.postprocess_json} does not exist: run `make cv` first "
                                "(robustness scores at the tuned post-processing)")
    return postprocess.PostProcess.load(run.postprocess_json)


def score_shift(accumulator: oof.OOFAccumulator, params: postprocess.PostProcess) -> dict:
    """Score, all-empty baseline, margin and non-empty Dice of one shift's OOF counts at
    ``params`` (its pixel thresholds are the accumulator's)."""
    presence = accumulator.presence()
    if accumulator.head != params.head:
        raise ValueError(f"postprocess.json is for the {params.head} head but the checkpoints "
                         f"have the {accumulator.head} head: rerun `make cv`")
    if params.gated and presence is None:
        raise ValueError("postprocess.json uses a presence gate but the models have none: "
                         "rerun `make cv` for these checkpoints")
    index = tuple(accumulator.thresholds.index(t) for t in params.threshold)
    scores = tuning.scores_at(accumulator.counts(), index, params.min_area, presence,
                              params.presence)
    return {"score": scores.score, "all_empty_baseline": scores.all_empty_baseline,
            "margin": scores.score - scores.all_empty_baseline,
            "below_baseline": scores.score < scores.all_empty_baseline,
            "nonempty": scores.nonempty, "per_class": scores.per_class,
            "nonempty_per_class": scores.nonempty_per_class, "n_images": scores.n_images}


def run_robustness(run_dir: str | None, data_dir: str | None, names: list[str] | None = None,
                   fold_ids: list[int] | None = None, requested: dict | None = None,
                   images_per_fold: int | None = None, accept: bool = False) -> dict:
    """Every shift's OOF scores at the tuned post-processing and the inference settings it was
    tuned with (``requested``: inference settings by name, None or absent for the recorded or
    default one); writes ``reports/robustness.png`` then ``reports/robustness.json`` and returns
    the JSON's dict. ``images_per_fold`` scores only the first validation images of each fold
    (a quicker, noisier look). ``accept``: use the tuned post-processing even for other
    checkpoints or settings (``--accept-postprocess``)."""
    if images_per_fold is not None and images_per_fold < 1:
        raise ValueError(f"--images-per-fold {images_per_fold}: pass 1 or more")
    paths, source = resolve_data_dir(data_dir), ensembles.resolve(run_dir)
    run = source.paths
    params = load_tuned(run)
    names = list(shifts.SHIFTS) if names is None else names
    if fold_ids is None:
        fold_ids = sorted(set(folds.read_folds(run.folds_csv)["fold"]))
    settings = with_recorded(requested or {}, params.inference, str(run.postprocess_json),
                             accept)
    context = distributed.setup(settings.device)
    thresholds = tuple(dict.fromkeys(params.threshold))   # only the tuned ones are counted
    results, loaded = [], {}
    for i, name in enumerate(names, 1):
        start = time.perf_counter()
        accumulator, _, _ = oof.collect(source, paths, fold_ids, settings, params.min_component, 0,
                                        context, shifts.SHIFTS[name], thresholds, name,
                                        images_per_fold, loaded, lines=False)
        if i == 1:   # the fold models are loaded: the post-processing must be theirs
            postprocess.check_models(params, {k: v for ensemble in loaded.values()
                                              for k, v in ensemble.named_digests().items()},
                                     str(run.postprocess_json), accept)
        result = {"name": name, **score_shift(accumulator, params),
                  "seconds": round(time.perf_counter() - start, 2)}
        results.append(result)
        log.info("shift %d/%d %s: score %.4f, all-empty %.4f, margin %+.4f (%d images, %.1f s)",
                 i, len(names), name, result["score"], result["all_empty_baseline"],
                 result["margin"], result["n_images"], result["seconds"])
    report = {"folds": fold_ids, "tta": settings.tta, "inference": settings.as_dict(),
              "images_per_fold": images_per_fold,
              "postprocess": asdict(params), "shifts": results,
              "below_baseline": [r["name"] for r in results if r["below_baseline"]],
              "code_version": code_version()}
    with stage("plots"):
        bars(results, run.reports / "robustness.png")
    fileio.write_json(run.reports / "robustness.json", report)
    return report


def format_table(report: dict) -> str:
    """One line per shift: score, all-empty baseline, margin, non-empty Dice, ok/BELOW."""
    header = f"{'shift':16}{'score':>9}{'all-empty':>11}{'margin':>9}{'non-empty':>11}"
    pp = report["postprocess"]
    gate = f"  presence {pp['presence']}" if any(p is not None for p in pp["presence"]) else ""
    first = report.get("images_per_fold")
    part = f" (first {first} images of each)" if first else ""
    lines = [f"OOF folds {report['folds']}{part}  TTA {report['tta']}  tuned thresholds "
             f"{pp['threshold']}  min_area {pp['min_area']}{gate}", header,
             "-" * (len(header) + 7)]
    for r in report["shifts"]:
        lines.append(f"{r['name']:16}{r['score']:>9.4f}{r['all_empty_baseline']:>11.4f}"
                     f"{r['margin']:>+9.4f}{r['nonempty']:>11.4f}  "
                     f"{'BELOW' if r['below_baseline'] else 'ok'}")
    return "\n".join(lines)


def bars(results: list[dict], path: Path) -> None:
    """Bars of the tuned score and the all-empty baseline per shift."""
    plt = plotting.pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(results) + 2), 3.6))
    x = range(len(results))
    colours = ["tab:red" if r["score"] < r["all_empty_baseline"] else "tab:blue"
               for r in results]
    ax.bar([i - 0.2 for i in x], [r["score"] for r in results], width=0.4, color=colours,
           label="score at the tuned post-processing (red: below all-empty)")
    ax.bar([i + 0.2 for i in x], [r["all_empty_baseline"] for r in results], width=0.4,
           label="all-empty baseline", color="lightgrey")
    low = min(min(r["score"], r["all_empty_baseline"]) for r in results)
    ax.set(ylim=(max(0.0, low - 0.05), 1.0), ylabel=f"OOF mean Dice ({N_CLASSES} classes)",
           title="out-of-fold score under input shifts")
    ax.set_xticks(list(x), [r["name"] for r in results], rotation=30, ha="right")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    plotting.save(fig, path)
