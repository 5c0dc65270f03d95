"""What the packed kernel runs on Kaggle: find the inputs, predict, write submission.csv.

Inputs are found under ``$KAGGLE_INPUT_ROOT`` (default ``/kaggle/input``): the competition data
is the directory holding ``sample_submission.csv`` (the mount path has changed over the years),
the weights dataset the one holding ``postprocess.json`` and ``*.pt`` files. The submission goes
to ``$KAGGLE_WORKING_ROOT/submission.csv`` (default ``/kaggle/working``). The predict code path
and post-processing are the same as ``python -m pipeline predict``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

INPUT_ROOT_ENV, WORKING_ROOT_ENV = "KAGGLE_INPUT_ROOT", "KAGGLE_WORKING_ROOT"


def find_dir(root: Path, marker: str, max_depth: int = 4) -> Path:
    """The shallowest directory under root holding ``marker`` (a file name or glob)."""
    for depth in range(max_depth + 1):
        found = sorted(p.parent for p in root.glob("/".join(["*"] * depth + [marker])))
        if found:
            return found[0]
    raise FileNotFoundError(f"no directory under {root} holds {marker}: attach the "
                            "competition data and the weights dataset to the kernel")


def main(started: float | None = None, inference: dict | None = None) -> int:
    """Predict the competition's test set with the attached weights; 0 on success.

    ``started``: the script's start (``time.time()``), for the start-up overhead it reports;
    ``inference``: the inference settings chosen at ``make kernel`` (batch size, workers,
    precision, compile); TTA and decode are those recorded in the weights' postprocess.json.
    """
    import torch

    import pipeline
    from pipeline import console, distributed
    from pipeline.inference import postprocess, predict, submission
    from pipeline.inference.config import with_recorded

    console.setup()

    started = time.time() if started is None else started
    input_root = Path(os.environ.get(INPUT_ROOT_ENV, "/kaggle/input"))
    working = Path(os.environ.get(WORKING_ROOT_ENV, "/kaggle/working"))
    data_dir = find_dir(input_root, "sample_submission.csv")
    weights_dir = find_dir(input_root, "postprocess.json")
    checkpoints = sorted(weights_dir.glob("*.pt"))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    params = postprocess.PostProcess.load(weights_dir / "postprocess.json")
    settings = with_recorded({**(inference or {}), "device": device,
                              "quiet": not sys.stderr.isatty()}, params.inference,
                             str(weights_dir / "postprocess.json"))
    print(f"pipeline {pipeline.__version__} from {Path(pipeline.__file__).parent}")
    print(f"data {data_dir}, weights {weights_dir} ({len(checkpoints)} checkpoints), {device}")
    print(f"inference: {settings.describe()} (recorded by cv), batch size {settings.batch_size}, "
          f"workers {settings.n_workers}, amp {settings.amp}, compile "
          f"{'on' if settings.compile else 'off'}")
    sample = submission.read_sample(data_dir / "sample_submission.csv")
    predict.check_test_images(data_dir / "test_images", sample.image_ids, sample.path)
    context = distributed.setup(device)
    ensemble = predict.load_models(checkpoints, context.device, settings)
    print(f"start-up {time.time() - started:.2f} s (bootstrap, imports, {len(ensemble)} models "
          f"loaded{', compiled at the first batch' if settings.compile else ''}); predicting "
          f"{len(sample.image_ids)} images")
    out = working / "submission.csv"
    _, table = predict.write_submission(ensemble, data_dir / "test_images", sample, params,
                                        context, out, settings)
    print(f"wrote {out}: {len(table)} rows in {time.time() - started:.1f} s")
    return 0
