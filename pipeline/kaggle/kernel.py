"""What the packed kernel runs on Kaggle: find the inputs, predict, write submission.csv.

Inputs are found under ``$KAGGLE_INPUT_ROOT`` (default ``/kaggle/input``) by their identity
(``kaggle.inputs``): the competition by its mount path or its sample file matching its test
images, the weights by the dataset the kernel was built for. The submission goes to
``$KAGGLE_WORKING_ROOT/submission.csv`` (default ``/kaggle/working``). The predict code path
and post-processing are the same as ``python -m pipeline predict``, but for one choice: an
unreadable test image is predicted defect-free and counted, so that one bad file never costs
the whole submission. A failure is one line on stderr with the fix, and exit status 1.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)

INPUT_ROOT_ENV, WORKING_ROOT_ENV = "KAGGLE_INPUT_ROOT", "KAGGLE_WORKING_ROOT"
MODELS_FILE = "models.json"   # the staged models and their weights, in averaging order
DRIFT_FILE = "drift.json"     # the out-of-fold figures the kernel compares its predictions with


def staged_models(weights_dir: Path) -> tuple[list[Path], list[float] | None]:
    """The checkpoints and weights of ``models.json`` in its order (the order ``predict``
    averages in), or, for a dataset staged before it existed, every ``*.pt`` with equal
    weights."""
    listed = weights_dir / MODELS_FILE
    if not listed.is_file():
        return sorted(weights_dir.glob("*.pt")), None
    try:
        models = json.loads(listed.read_text())["models"]
        paths = [weights_dir / entry["file"] for entry in models]
        weights = [float(entry["weight"]) for entry in models]
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{listed} is not a list of models ({error!r}): stage the weights "
                         "again (`make upload-weights`)") from None
    missing = [path.name for path in paths if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"{listed} lists {', '.join(missing)}, not in {weights_dir}: "
                                "stage the weights again (`make upload-weights`)")
    return paths, weights


def main(started: float | None = None, inference: dict | None = None,
         description: str | None = None, weights_dataset: str | None = None) -> int:
    """Predict the competition's test set with the attached weights; 0 on success, 1 with a
    one-line error on stderr.

    ``started``: the script's start (``time.time()``), for the start-up overhead it reports;
    ``inference``: the inference settings chosen at ``make kernel`` (batch size, workers,
    precision, compile); TTA and decode are those recorded in the weights' postprocess.json;
    ``description``: what ``make kernel`` was built for (a run, or an ensemble's members);
    ``weights_dataset``: the dataset (``owner/slug``) whose weights it predicts with.
    """
    from pipeline import console

    console.setup()
    try:
        return _run(started, inference, description, weights_dataset)
    except (OSError, ValueError, RuntimeError, FloatingPointError) as error:
        log.error("%s", error)
        return 1


def _run(started: float | None, inference: dict | None, description: str | None,
         weights_dataset: str | None) -> int:
    import torch

    import pipeline
    from pipeline import distributed
    from pipeline.inference import postprocess, predict, submission
    from pipeline.inference.config import with_recorded
    from pipeline.kaggle import inputs

    started = time.time() if started is None else started
    input_root = Path(os.environ.get(INPUT_ROOT_ENV, "/kaggle/input"))
    working = Path(os.environ.get(WORKING_ROOT_ENV, "/kaggle/working"))
    data_dir = inputs.competition_dir(input_root)
    weights_dir = inputs.weights_dir(input_root, weights_dataset)
    checkpoints, weights = staged_models(weights_dir)
    if not checkpoints:
        raise FileNotFoundError(f"the weights folder {weights_dir} holds no checkpoint (*.pt): "
                                "stage the weights again (`make upload-weights`)")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    params = postprocess.PostProcess.load(weights_dir / "postprocess.json")
    settings = with_recorded({**(inference or {}), "device": device,
                              "quiet": not sys.stderr.isatty()}, params.inference,
                             str(weights_dir / "postprocess.json"))
    print(f"pipeline {pipeline.__version__} from {Path(pipeline.__file__).parent}")
    print(f"data {data_dir}, weights {weights_dir} ({len(checkpoints)} checkpoints), {device}")
    if description:
        print(f"built for {description}")
    print(f"inference: {settings.describe()} (recorded by cv), batch size {settings.batch_size}, "
          f"workers {settings.n_workers}, amp {settings.amp}, compile "
          f"{'on' if settings.compile else 'off'}")
    sample = submission.read_sample(data_dir / "sample_submission.csv")
    submission.check_test_images(data_dir / "test_images", sample.image_ids, sample.path)
    context = distributed.setup(device)
    ensemble = predict.load_models(checkpoints, context.device, settings, weights)
    postprocess.check_models(params, ensemble.named_digests(),
                             str(weights_dir / "postprocess.json"), _accepted(weights_dir),
                             fix="or stage them together again (`make cv upload-weights`)")
    print(f"start-up {time.time() - started:.2f} s (bootstrap, imports, {len(ensemble)} models "
          f"loaded{', compiled at the first batch' if settings.compile else ''}); predicting "
          f"{len(sample.image_ids)} images")
    out = working / "submission.csv"
    rles, table = predict.write_submission(ensemble, data_dir / "test_images", sample, params,
                                           context, out, settings, skip_bad_images=True)
    print(f"wrote {out}: {len(table)} rows in {time.time() - started:.1f} s")
    _report_passes(ensemble, checkpoints)
    _check_drift(rles, weights_dir / DRIFT_FILE)
    return 0


def _accepted(weights_dir: Path) -> bool:
    """Whether ``upload-weights --accept-postprocess`` staged post-processing tuned for other
    checkpoints on purpose (recorded in ``models.json``)."""
    listed = weights_dir / MODELS_FILE
    return listed.is_file() and json.loads(listed.read_text()).get("accept_postprocess") is True


def _report_passes(ensemble, checkpoints: list[Path]) -> None:
    """Per model, the measured time of its passes (what `plan-kernel` estimates from)."""
    for index, path in enumerate(checkpoints):
        seconds, passes = ensemble.clock.get(index, (0.0, 0))
        if passes:
            print(f"model {path.name}: {passes} image passes in {seconds:.1f} s, "
                  f"{passes / seconds:.2f} image passes/s (first batch included)")


def _check_drift(rles: dict[str, list[str]], reference_path: Path) -> None:
    """Per class, the test images' positive share and median area beside the out-of-fold
    ones and the training prior; a warning per class off by more than the factor."""
    import numpy as np

    from pipeline.data import rle
    from pipeline.inference import drift

    if not reference_path.is_file():
        print(f"drift check skipped: {reference_path.name} is not in the weights dataset "
              "(rerun `make cv` and `make upload-weights`)")
        return
    areas = np.array([[rle.area(r) for r in image_rles] for image_rles in rles.values()])
    figures = drift.figures(areas > 0, areas)
    reference = drift.load(reference_path)
    print(drift.format_table(figures, reference))
    warnings = drift.check(figures, reference)
    print(f"drift check: {len(warnings)} class(es) off by more than {drift.FACTOR:g}x "
          "from out-of-fold" + (" (warnings above)" if warnings else ""))
