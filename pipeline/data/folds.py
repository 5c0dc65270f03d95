"""Stratified k-fold split of the training images on each image's set of defect classes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from sklearn.model_selection import StratifiedKFold

from pipeline import fileio
from pipeline.config import CLASS_IDS
from pipeline.data.labels import read_table

RARE = "rare"


def class_sets(labels: pd.DataFrame, image_ids: list[str]) -> pd.Series:
    """Each image's defect classes as a key: '0' (defect-free), '3', '1+3', ..."""
    joined = (labels.sort_values("ClassId").groupby("ImageId")["ClassId"]
              .agg(lambda c: "+".join(map(str, c))))
    return joined.astype(object).reindex(image_ids, fill_value="0").rename("classes")


def strata(keys: pd.Series, n_folds: int) -> pd.Series:
    """Keys with fewer than n_folds images merged into 'rare' (then into the largest if tiny)."""
    counts = keys.value_counts()
    merged = keys.where(keys.map(counts) >= n_folds, RARE)
    if 0 < (merged == RARE).sum() < n_folds:
        merged = merged.replace(RARE, merged[merged != RARE].value_counts().idxmax()
                                if (merged != RARE).any() else RARE)
    return merged


def make_folds(labels: pd.DataFrame, image_ids: list[str], n_folds: int = 5,
               seed: int = 0) -> pd.DataFrame:
    """``ImageId, fold, classes`` for every image, stratified on its set of defect classes."""
    if n_folds < 2:
        raise ValueError(f"--n-folds must be at least 2, got {n_folds}")
    if len(image_ids) < n_folds:
        raise ValueError(f"{len(image_ids)} images cannot make {n_folds} folds: "
                         "lower --n-folds or add images")
    keys = class_sets(labels, image_ids)
    splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    folds = pd.Series(-1, index=keys.index, name="fold")
    for fold, (_, val_index) in enumerate(splitter.split(keys.index, strata(keys, n_folds))):
        folds.iloc[val_index] = fold
    return pd.DataFrame({"ImageId": keys.index, "fold": folds.to_numpy(),
                         "classes": keys.to_numpy()})


def fold_class_counts(folds: pd.DataFrame) -> pd.DataFrame:
    """Per fold: images, defect-free images and images holding each class."""
    table = pd.DataFrame({"fold": folds["fold"], "images": 1,
                          "defect_free": (folds["classes"] == "0").astype(int)})
    sets = folds["classes"].str.split("+")
    for class_id in CLASS_IDS:
        table[f"class_{class_id}"] = sets.map(lambda s, c=str(class_id): c in s).astype(int)
    return table.groupby("fold").sum()


def split_ids(folds: pd.DataFrame, fold: int) -> tuple[list[str], list[str]]:
    """Sorted ``(training ids, validation ids)`` of one fold; ValueError for an unknown fold."""
    known = sorted(set(folds["fold"]))
    if fold not in known:
        raise ValueError(f"--fold {fold} is not in folds.csv (folds {known})")
    in_fold = folds["fold"] == fold
    return sorted(folds.loc[~in_fold, "ImageId"]), sorted(folds.loc[in_fold, "ImageId"])


def write_folds(folds: pd.DataFrame, path: Path) -> None:
    """Write folds.csv atomically."""
    with fileio.atomic_path(path) as tmp:
        folds.to_csv(tmp, index=False)


def read_folds(path: Path, image_ids: list[str] | None = None) -> pd.DataFrame:
    """Read folds.csv, checked in full: columns ImageId and fold, every image once, folds
    numbered 0..k-1 (k >= 2); with image_ids, it must cover exactly those images."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run `make folds` first")
    folds = read_table(path, "folds file")
    fix = "rerun `make folds`"
    missing = [c for c in ("ImageId", "fold") if c not in folds.columns]
    if missing:
        raise ValueError(f"{path}: no column {missing[0]} (columns {list(folds.columns)}): {fix}")
    problems = [(folds["ImageId"] == "", "has no ImageId"),
                (folds["ImageId"].duplicated(keep="first"), "repeats an ImageId"),
                (~folds["fold"].str.fullmatch(r"\d{1,6}"), "has a fold that is not a number >= 0")]
    for bad, what in problems:
        if bad.any():
            index = bad.idxmax()
            raise ValueError(f"{path}:{index + 2}: the row {what} "
                             f"({folds.loc[index, 'ImageId']!r}, fold {folds.loc[index, 'fold']!r})"
                             f": {fix}")
    folds = folds.assign(fold=folds["fold"].astype("int64")).reset_index(drop=True)
    numbers = sorted(set(folds["fold"]))
    if numbers != list(range(len(numbers))) or len(numbers) < 2:
        raise ValueError(f"{path}: folds {numbers}, expected 0..k-1 with k >= 2: {fix}")
    if image_ids is not None and set(folds["ImageId"]) != set(image_ids):
        extra = sorted(set(folds["ImageId"]) - set(image_ids))[:3]
        missing = sorted(set(image_ids) - set(folds["ImageId"]))[:3]
        raise ValueError(f"{path} does not match the training images (in folds only: {extra}, "
                         f"images without a fold: {missing}): {fix}")
    return folds
