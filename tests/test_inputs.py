"""The kernel finds its inputs by identity: decoys beside them, in both Kaggle layouts."""

import shutil
from pathlib import Path

import pytest

from pipeline.config import COMPETITION
from pipeline.kaggle.inputs import KernelInputError, competition_dir, weights_dir

# Kaggle's mount paths over the years: (competition, weights dataset me/severstal-weights).
LAYOUTS = {"old": (COMPETITION, "severstal-weights"),
           "new": (f"competitions/{COMPETITION}", "datasets/me/severstal-weights")}


def data_folder(folder: Path, real_sample: Path, n_images: int) -> Path:
    """A competition-like folder: ``n_images`` real test images and a sample listing them."""
    images = folder / "test_images"
    images.mkdir(parents=True)
    names = sorted(p.name for p in (real_sample / "train_images").iterdir())[:n_images]
    for name in names:
        shutil.copy(real_sample / "train_images" / name, images / name)
    rows = "".join(f"{name},1 1,0\n" for name in names)
    (folder / "sample_submission.csv").write_text(f"ImageId,EncodedPixels,ClassId\n{rows}")
    return folder


def weights_folder(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "postprocess.json").write_text("{}")
    (folder / "fold0.pt").write_bytes(b"")
    return folder


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_competition_and_weights_are_found_beside_decoys_that_sort_first(
        tmp_path, real_sample, layout):
    root = tmp_path / "input"
    competition, weights = (root / part for part in LAYOUTS[layout])
    data_folder(competition, real_sample, 5)
    weights_folder(weights)
    # An old copy of the data (its sample matches its own images), another competition's
    # sample, an older weights dataset: each sorts before the real ones.
    data_folder(root / "aaa-old-copy", real_sample, 2)
    (root / "a-other-competition").mkdir()
    (root / "a-other-competition" / "sample_submission.csv").write_text("id,target\n1,0\n")
    weights_folder(root / "aaa-old-weights")
    assert competition_dir(root) == competition
    assert weights_dir(root, "me/severstal-weights") == weights


def test_without_its_mount_path_the_competition_is_the_sample_that_lists_its_images(
        tmp_path, real_sample):
    root = tmp_path / "input"
    copy = data_folder(root / "zz-data", real_sample, 3)
    other = data_folder(root / "aa-data", real_sample, 3)
    (other / "sample_submission.csv").write_text("ImageId,EncodedPixels,ClassId\nx.jpg,,0\n")
    assert competition_dir(root) == copy
    data_folder(root / "mm-data", real_sample, 2)  # a second folder that fits: ambiguous
    with pytest.raises(KernelInputError, match="2 folders could be") as error:
        competition_dir(root)
    assert str(root / "mm-data") in str(error.value) and str(copy) in str(error.value)


def test_missing_or_ambiguous_inputs_are_one_line_errors_listing_the_candidates(tmp_path):
    root = tmp_path / "input"
    weights_folder(root / "old-weights")
    with pytest.raises(KernelInputError, match="the weights dataset me/severstal-weights is "
                       "not attached") as error:
        weights_dir(root, "me/severstal-weights")
    assert str(root / "old-weights") in str(error.value) and "\n" not in str(error.value)
    weights_folder(root / "severstal-weights")
    weights_folder(root / "datasets" / "me" / "severstal-weights")
    with pytest.raises(KernelInputError, match="2 folders could be the weights dataset"):
        weights_dir(root, "me/severstal-weights")
    # A kernel that names no dataset takes the only folder with postprocess.json, or refuses.
    with pytest.raises(KernelInputError, match="3 folders could be the weights dataset"):
        weights_dir(root, None)
    with pytest.raises(KernelInputError, match="competition's data is not attached"):
        competition_dir(root)
