"""A fold's datasets and loaders with pseudo-labels: test images mixed into training at a
share, never into validation; bad pseudo-label files refused in one line."""

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from helpers import run_cli

from pipeline import distributed
from pipeline.data import synthetic
from pipeline.training.config import TrainConfig
from pipeline.training.loaders import PseudoMixed, fold_datasets, make_loader

SMALL = dict(scale=0.25, crop=None, batch_size=4, workers=0, quiet=True)
TINY = ["--encoder-weights", "none", "--scale", "0.25", "--crop", "64x96", "--batch-size", "4",
        "--workers", "0", "--background-prior", "0.95", "--quiet"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """12 synthetic training and 6 test images, with 2 folds in ``data/run``."""
    root = tmp_path_factory.mktemp("pseudo")
    synthetic.write_dataset(root, n_train=12, n_test=6, seed=4, quiet=True, workers=1)
    assert run_cli("folds", "--data-dir", root, "--run-dir", root / "run", "--n-folds", 2) == 0
    return root


def pseudo_candidates(data: Path) -> list[str]:
    """The ids of the synthetic set's test images."""
    return sorted(p.name for p in (data / "test_images").glob("*.jpg"))


def write_pseudo(path: Path, data: Path, ids: list[str]) -> Path:
    """The agreed pseudo-label file of ``ids``: all 4 class rows each, RLEs from test_truth."""
    truth = pd.read_csv(data / "test_truth.csv", dtype=str, keep_default_na=False)
    found = {(r.ImageId, int(r.ClassId)): r.EncodedPixels for r in truth.itertuples()}
    rows = [(i, c, found.get((i, c), "")) for i in ids for c in range(1, 5)]
    pd.DataFrame(rows, columns=["ImageId", "ClassId", "EncodedPixels"]).to_csv(path, index=False)
    return path


def config(data: Path, pseudo: Path, **values) -> TrainConfig:
    return TrainConfig(data_dir=str(data), run_dir=str(data / "run"), pseudo=str(pseudo),
                       **{**SMALL, **values})


def drawn_ids(loader) -> list[str]:
    """The image id of every draw of a training loader's epoch (no image is read)."""
    parts = loader.dataset.datasets
    ids = [i for part in parts for i in part.image_ids]
    return [ids[index] for index in loader.sampler]


@pytest.mark.parametrize("sampler", ["uniform", "balanced"])
def test_pseudo_images_are_drawn_in_training_and_never_validated(data, tmp_path, sampler):
    pseudo_ids = pseudo_candidates(data)[:4]
    cfg = config(data, write_pseudo(tmp_path / "pseudo.csv", data, pseudo_ids),
                 pseudo_share=0.5, sampler=sampler)
    context = distributed.Context()
    for fold in (0, 1):
        train_set, val_set = fold_datasets(cfg, fold)
        assert isinstance(train_set, PseudoMixed)
        assert train_set.pseudo.image_ids == pseudo_ids
        assert train_set.pseudo.image_dir == data / "test_images"
        validated = [i for batch in make_loader(val_set, cfg, context, 0, False)
                     for i in batch["image_id"]]
        assert validated and not set(validated) & set(pseudo_ids)
        assert set(validated) <= {p.name for p in (data / "train_images").iterdir()}
        drawn = [i for epoch in range(3)
                 for i in drawn_ids(make_loader(train_set, cfg, context, epoch, True))]
        assert set(drawn) & set(pseudo_ids) and set(drawn) - set(pseudo_ids)
        assert not set(drawn) & set(validated)
        assert len(make_loader(train_set, cfg, context, 0, True).sampler) == len(train_set.real)


def test_pseudo_items_carry_the_files_masks(data, tmp_path):
    ids = pseudo_candidates(data)
    labelled = set(pd.read_csv(data / "test_truth.csv")["ImageId"])
    assert set(ids) - labelled and set(ids) & labelled   # both kinds to check
    cfg = config(data, write_pseudo(tmp_path / "pseudo.csv", data, ids))
    train_set, _ = fold_datasets(cfg, 0)
    assert train_set.share == 0.2   # the default share of --pseudo alone
    assert train_set.pseudo.image_ids == ids   # defect-free ones too
    for k, image_id in enumerate(ids):
        assert bool(train_set.pseudo[k]["masks"].any()) == (image_id in labelled), image_id


def test_limit_images_limits_the_real_images_only(data, tmp_path):
    cfg = config(data, write_pseudo(tmp_path / "pseudo.csv", data, pseudo_candidates(data)),
                 limit_images=3)
    train_set, _ = fold_datasets(cfg, 0)
    assert len(train_set) == len(train_set.real) == 3 and len(train_set.pseudo) == 6
    assert len(make_loader(train_set, cfg, distributed.Context(), 0, True).sampler) == 3


def rewrite(path: Path, edit) -> Path:
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    edit(table).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("case, words", [
    ("not-test", r"pseudo.csv:6: image 0000dead0.jpg is not a test image in \S+test_images: "
                 r"pseudo-labels are made on the test images; .* \(1 such image\(s\)\)"),
    ("train", r"pseudo.csv:2: image \w+\.jpg is a training image in \S+train_images: "
              r"pseudo-labels are for test images only; remove its rows \(1 such image"),
    ("header", r"--pseudo \S+pseudo.csv: header ImageId,EncodedPixels; expected "
               r"ImageId,ClassId,EncodedPixels"),
    ("short", r"--pseudo \S+pseudo.csv: image \w+\.jpg has 3 class row\(s\), not 4 "
              r"\(1 such image\(s\)\)"),
    ("missing", r"--pseudo \S+nowhere.csv does not exist: pass the CSV that"),
    ("empty", r"--pseudo \S+pseudo.csv lists no image"),
])
def test_bad_pseudo_files_are_refused_in_one_line(data, tmp_path, case, words):
    path = write_pseudo(tmp_path / "pseudo.csv", data, pseudo_candidates(data)[:2])
    train_id = sorted(p.name for p in (data / "train_images").iterdir())[0]
    edits = {"not-test": lambda t: t.assign(ImageId=[*t["ImageId"][:4], *["0000dead0.jpg"] * 4]),
             "train": lambda t: t.assign(ImageId=[train_id] * 4 + list(t["ImageId"][4:])),
             "header": lambda t: t.drop(columns="ClassId"),
             "short": lambda t: t.iloc[1:], "empty": lambda t: t.iloc[:0]}
    if case == "missing":
        path = tmp_path / "nowhere.csv"
    elif case in edits:
        rewrite(path, edits[case])
    error = FileNotFoundError if case == "missing" else ValueError
    with pytest.raises(error, match=words) as caught:
        fold_datasets(config(data, path), 0)
    assert "\n" not in str(caught.value)


def test_the_cli_names_the_file_and_the_id_in_one_line(data, tmp_path, capsys):
    path = write_pseudo(tmp_path / "pseudo.csv", data, ["0000dead0.jpg"])
    run = tmp_path / "run"
    assert run_cli("folds", "--data-dir", data, "--run-dir", run, "--n-folds", 2) == 0
    assert run_cli("train", "--data-dir", data, "--run-dir", run, "--fold", "0",
                   "--pseudo", path, *TINY) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert re.search(r"pseudo.csv:2: image 0000dead0.jpg is not a test image in", err)
    assert not (run / "config.json").exists()


def test_train_with_pseudo_labels_records_them(data, tmp_path, capsys):
    path = write_pseudo(tmp_path / "pseudo.csv", data, pseudo_candidates(data)[:3])
    run = tmp_path / "run"
    assert run_cli("folds", "--data-dir", data, "--run-dir", run, "--n-folds", 2) == 0
    assert run_cli("train", "--data-dir", data, "--run-dir", run, "--fold", "0", "--epochs", 1,
                   "--max-steps", 2, "--pseudo", path, "--pseudo-share", 0.3, *TINY) == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["pseudo"] == str(path) and saved["pseudo_share"] == 0.3
    assert "fold 0: 3 pseudo-labelled test images mixed in at share 0.3" in \
        capsys.readouterr().err
    assert (run / "checkpoints" / "fold0" / "best.pt").is_file()
