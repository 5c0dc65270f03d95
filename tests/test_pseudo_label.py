"""``pseudo-label`` end to end: a gated run's confident test images -> the file train reads."""

import json

import numpy as np
import pandas as pd
import pytest

from helpers import TINY_TRAIN, run_cli
from pipeline.inference import pseudo

INFER = ["--workers", "0", "--batch-size", "4", "--quiet"]


@pytest.fixture(scope="module")
def gated(tmp_path_factory):
    """(data, run): a tiny gated sigmoid run with cv."""
    root = tmp_path_factory.mktemp("pseudo")
    data, run = root / "data", root / "run"
    assert run_cli("synth", "--out", data, "--n-train", 12, "--n-test", 8, "--seed", 4,
                   "--workers", 1, "--quiet") == 0
    assert run_cli("folds", "--data-dir", data, "--run-dir", run, "--n-folds", 2) == 0
    assert run_cli("train", "--data-dir", data, "--run-dir", run, "--epochs", 1, "--max-steps",
                   3, "--head", "sigmoid", "--loss", "bce", "--gate", *TINY_TRAIN) == 0
    assert run_cli("cv", "--data-dir", data, "--run-dir", run, *INFER) == 0
    return data, run


def test_pseudo_labels_follow_the_oof_rule_and_train_reads_them(gated, tmp_path, capsys):
    data, run = gated
    out = tmp_path / "pseudo.csv"
    # precision 0.5: a tiny model keeps some images (mostly its confident negatives)
    assert run_cli("pseudo-label", "--data-dir", data, "--run-dir", run, "--out", out,
                   "--precision", 0.5, *INFER) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.with_suffix(".json").read_text())
    rows = pd.read_csv(out, keep_default_na=False)
    kept = sorted(set(rows["ImageId"]))
    assert report["n_test"] == 8 and report["n_kept"] == len(kept) > 0
    assert (rows.groupby("ImageId")["ClassId"].apply(list) == [[1, 2, 3, 4]] * len(kept)).all()
    test_ids = set(pd.read_csv(data / "sample_submission.csv")["ImageId"].str.split("_").str[0])
    assert set(kept) <= test_ids
    # the rule is the one chosen on the OOF arrays of cv, as the library chooses it
    rule = pseudo.Rule.from_dict(report["rule"])
    arrays = np.load(run / "reports" / "oof.npz")
    assert rule.n_oof == len(arrays["image_ids"]) and rule.precision == 0.5
    assert "pseudo-label rule (target precision 50%)" in printed
    # synthetic test images have truth: the pseudo-labels' own Dice is reported
    assert 0.0 <= report["truth"]["dice"] <= 1.0 and "pseudo-label Dice" in printed
    # train reads the file as it is written
    (tmp_path / "with").mkdir()
    (tmp_path / "with" / "folds.csv").write_bytes((run / "folds.csv").read_bytes())
    assert run_cli("train", "--data-dir", data, "--run-dir", tmp_path / "with", "--epochs", 1,
                   "--max-steps", 1, "--fold", 0, "--pseudo", out, "--pseudo-share", 0.5,
                   *TINY_TRAIN) == 0
    saved = json.loads((tmp_path / "with" / "config.json").read_text())
    assert saved["pseudo"] == str(out) and saved["pseudo_share"] == 0.5


def test_a_run_without_a_gate_or_without_cv_is_refused(tiny_run_copy, gated, tmp_path, capsys):
    data, run = tiny_run_copy   # FCN32 softmax, no gate, no cv
    out = tmp_path / "p.csv"
    assert run_cli("pseudo-label", "--data-dir", data, "--run-dir", run, "--out", out,
                   *INFER) == 1
    assert "run `make cv` first" in capsys.readouterr().err
    assert run_cli("cv", "--data-dir", data, "--run-dir", run, *INFER) == 0
    capsys.readouterr()
    assert run_cli("pseudo-label", "--data-dir", data, "--run-dir", run, "--out", out,
                   *INFER) == 1
    assert "pseudo-labels need a presence gate" in capsys.readouterr().err
    assert run_cli("pseudo-label", "--data-dir", gated[0], "--run-dir", gated[1], "--out", out,
                   "--precision", 1.5, *INFER) == 1
    assert "--precision 1.5 must be in (0, 1]" in capsys.readouterr().err
    assert not out.exists()
