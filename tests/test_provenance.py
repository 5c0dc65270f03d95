"""Every artefact knows what it belongs to: checkpoints their training images, postprocess.json
its checkpoints and inference settings, model_info its version."""

import pandas as pd
import torch

from helpers import run_cli

from pipeline import checkpoint
from pipeline.inference.postprocess import PostProcess
from pipeline.kaggle.weights import stage_weights
from pipeline.inference import ensembles


def error_line(err: str) -> str:
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def test_a_checkpoint_records_its_training_images_and_cv_refuses_to_score_them(
        tiny_run_copy, capsys):
    data, run = tiny_run_copy
    table = pd.read_csv(run / "folds.csv")
    state = checkpoint.load(run / "checkpoints" / "fold0" / "best.pt")
    assert state["trained_on"] == {"fold": 0, "image_ids": sorted(
        table.loc[table["fold"] != 0, "ImageId"])}
    # Two of fold 0's training images moved into its validation fold after training.
    moved = table.index[table["fold"] == 1][:2]
    table.loc[moved, "fold"] = 0
    table.to_csv(run / "folds.csv", index=False)
    capsys.readouterr()
    assert run_cli("cv", "--data-dir", data, "--run-dir", run, "--workers", 0, "--quiet") == 1
    line = error_line(capsys.readouterr().err)
    n_val = int((table["fold"] == 0).sum())
    assert f"fold0/best.pt was trained on 2 of the {n_val} images of fold 0's validation set" \
        f" (e.g. {sorted(table.loc[moved, 'ImageId'])[0]})" in line
    assert not (run / "postprocess.json").exists() and not (run / "reports" / "cv.json").exists()


def test_postprocess_json_is_refused_for_checkpoints_it_was_not_tuned_for(
        tiny_run_copy, tmp_path, capsys, caplog):
    data, run = tiny_run_copy
    assert run_cli("cv", "--data-dir", data, "--run-dir", run, "--workers", 0, "--quiet") == 0
    params = PostProcess.load(run / "postprocess.json")
    digests = [checkpoint.digest(checkpoint.load(run / "checkpoints" / f"fold{k}" / "best.pt")
                                 ["model"]) for k in (0, 1)]
    assert params.checkpoints == tuple(sorted(digests))
    predict = ["predict", "--data-dir", data, "--run-dir", run, "--workers", 0, "--quiet"]
    assert run_cli(*predict, "--out", tmp_path / "tuned.csv") == 0
    # fold 1 retrained after cv (here: its weights changed), the old postprocess.json stays.
    best = run / "checkpoints" / "fold1" / "best.pt"
    state = checkpoint.load(best)
    name = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][name] = state["model"][name] + 0.01
    torch.save(state, best)
    capsys.readouterr()
    assert run_cli(*predict, "--out", tmp_path / "stale.csv") == 1
    line = error_line(capsys.readouterr().err)
    assert f"{run / 'postprocess.json'} was tuned for other checkpoints: 1 of the 2 model(s) " \
        f"loaded (e.g. {best}, digest {checkpoint.digest(state['model'])})" in line
    assert "--accept-postprocess" in line and not (tmp_path / "stale.csv").exists()
    # Staging it for Kaggle is refused the same way, before anything is uploaded.
    try:
        stage_weights(ensembles.resolve(run), None, "me/w", "Weights w", tmp_path / "staged")
        raise AssertionError("staged")
    except ValueError as error:
        assert "was tuned for other checkpoints" in str(error)
    # The user who means it says so; the kernel then accepts it too (models.json records it).
    caplog.clear()
    assert run_cli(*predict, "--out", tmp_path / "accepted.csv", "--accept-postprocess") == 0
    assert "was tuned for other checkpoints" in caplog.text
    stage_weights(ensembles.resolve(run), None, "me/w", "Weights w", tmp_path / "staged",
                  accept=True)
    assert '"accept_postprocess": true' in (tmp_path / "staged" / "models.json").read_text()


def test_a_checkpoint_with_model_info_keys_of_a_newer_version_is_refused(
        tiny_run_copy, tmp_path, capsys):
    data, run = tiny_run_copy
    best = run / "checkpoints" / "fold0" / "best.pt"
    state = checkpoint.load(best)
    state["model_info"]["attention"] = "scse"
    state["code_version"] = "9.0.0"
    torch.save(state, best)
    capsys.readouterr()
    assert run_cli("predict", "--data-dir", data, "--run-dir", run, "--workers", 0, "--quiet",
                   "--out", tmp_path / "s.csv") == 1
    line = error_line(capsys.readouterr().err)
    assert f"{best}: model_info holds 'attention', unknown to this version" in line
    assert "written by pipeline 9.0.0" in line and not (tmp_path / "s.csv").exists()
