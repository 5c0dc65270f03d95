"""submission.csv in the format of the given sample file: writing, validating, scoring.

Original format (``ImageId_ClassId,EncodedPixels``): exactly the sample's rows in its order,
EncodedPixels empty where no defect. Current format (``ImageId,EncodedPixels,ClassId``): in the
order of the sample's images, one row per predicted (image, class 1..4) mask, classes ascending;
an image with no predicted defect keeps the sample's ClassId-0 row, so every image appears.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import fileio, metrics
from pipeline.config import CLASS_IDS
from pipeline.data import images as image_files
from pipeline.data import labels, rle

CURRENT = ["ImageId", "EncodedPixels", "ClassId"]
ORIGINAL = ["ImageId_ClassId", "EncodedPixels"]


@dataclass(frozen=True)
class Sample:
    """A sample submission: its format, rows and image ids in order."""

    path: Path
    format: str          # "current" or "original"
    table: pd.DataFrame
    image_ids: list[str]


def read_sample(path: Path) -> Sample:
    """Read sample_submission.csv in either format, checked in full; ValueError naming the file
    and line: current format one ClassId-0 row per image, original format the 4 rows
    ``<image>_1..4`` of every image, no duplicates, no unknown classes."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"sample submission {path} does not exist")
    table = labels.read_table(path, "sample submission")
    if list(table.columns) == CURRENT:
        image_ids, class_ids, expected = table["ImageId"], table["ClassId"], ["0"]
        malformed = image_ids != image_ids
    elif list(table.columns) == ORIGINAL:
        parts = table["ImageId_ClassId"].str.rpartition("_")
        image_ids, class_ids, expected = parts[0], parts[2], [str(c) for c in CLASS_IDS]
        malformed = parts[1] != "_"
    else:
        raise ValueError(f"{path}: header {list(table.columns)} is neither {CURRENT} (current) "
                         f"nor {ORIGINAL} (original)")
    if table.empty:
        raise ValueError(f"sample submission {path} has a header but no rows")
    checks = [(malformed, "is not '<image>_<class>'"), (image_ids == "", "has no image id"),
              (~class_ids.isin(expected), f"has a class other than {', '.join(expected)}"),
              (pd.concat([image_ids, class_ids], axis=1).duplicated(), "repeats an earlier row")]
    for bad, what in checks:
        if bad.any():
            index = bad.idxmax()
            raise ValueError(f"{path}:{index + 2}: the row {table.iloc[:, 0].loc[index]!r} "
                             f"{what}: use the competition's sample_submission.csv")
    counts = image_ids.value_counts()
    incomplete = counts[counts != len(expected)]
    if len(incomplete):
        raise ValueError(f"{path}: image {incomplete.index[0]} has {incomplete.iloc[0]} rows, "
                         f"expected {len(expected)} (classes {', '.join(expected)}): use the "
                         "competition's sample_submission.csv")
    fmt = "current" if len(expected) == 1 else "original"
    return Sample(Path(path), fmt, table.reset_index(drop=True),
                  list(dict.fromkeys(image_ids)))


def build(sample: Sample, predictions: dict[str, list[str]]) -> pd.DataFrame:
    """Submission rows for ``{image_id: [rle class 1..4]}`` in the sample's format and order."""
    missing = [i for i in sample.image_ids if i not in predictions]
    if missing:
        raise ValueError(f"no prediction for {len(missing)} image(s) of {sample.path} "
                         f"(e.g. {missing[0]})")
    if sample.format == "original":
        keys = sample.table["ImageId_ClassId"].str.rpartition("_")
        values = [predictions[i][int(c) - 1] for i, c in zip(keys[0], keys[2])]
        return pd.DataFrame({"ImageId_ClassId": sample.table["ImageId_ClassId"],
                             "EncodedPixels": values})
    background = sample.table.drop_duplicates("ImageId").set_index("ImageId")
    rows = []
    for image_id in sample.image_ids:
        found = [(image_id, encoded, str(c))
                 for c, encoded in zip(CLASS_IDS, predictions[image_id]) if encoded]
        rows.extend(found or [(image_id, background.loc[image_id, "EncodedPixels"],
                               background.loc[image_id, "ClassId"])])
    return pd.DataFrame(rows, columns=CURRENT)


def write(table: pd.DataFrame, path: Path, sample: Sample | None = None) -> pd.DataFrame | None:
    """Write submission rows atomically; with ``sample``, validate the temp file first, so an
    invalid submission never replaces the file at ``path``. Returns the validated table."""
    with fileio.atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)
        return None if sample is None else validate(tmp, sample, shown_as=path)


def validate(path: Path, sample: Sample, shown_as: Path | None = None) -> pd.DataFrame:
    """Check a submission against its sample; returns it, or raises listing every problem.
    Messages name ``shown_as`` (the final name of a temp file being checked) if given."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"submission {path} does not exist: run `make predict`")
    table = labels.read_table(path, "submission").reset_index(drop=True)
    expected = CURRENT if sample.format == "current" else ORIGINAL
    kept = "" if shown_as is None else " (not written: the previous file, if any, is kept)"
    path = shown_as or path
    if list(table.columns) != expected:
        raise ValueError(f"{path}: columns {list(table.columns)}, expected {expected} "
                         f"(the format of {sample.path})")
    problems = (_problems_current(table, sample) if sample.format == "current"
                else _problems_original(table, sample))
    for index, encoded in table["EncodedPixels"].items():
        if not encoded:
            continue
        try:
            rle.parse(encoded)
        except ValueError as error:
            problems.append(f"line {index + 2}: {error}")
    if problems:
        shown = "\n  ".join(problems[:10])
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise ValueError(f"{path} is not a valid submission for {sample.path}{kept}:\n  "
                         f"{shown}{more}")
    return table


def _problems_original(table: pd.DataFrame, sample: Sample) -> list[str]:
    if len(table) != len(sample.table):
        return [f"{len(table)} rows, the sample has {len(sample.table)}"]
    differs = np.flatnonzero(table["ImageId_ClassId"].to_numpy()
                             != sample.table["ImageId_ClassId"].to_numpy())
    return [f"line {i + 2}: {table['ImageId_ClassId'].iloc[i]!r}, the sample has "
            f"{sample.table['ImageId_ClassId'].iloc[i]!r} (same rows, same order)"
            for i in differs[:5]]


def _problems_current(table: pd.DataFrame, sample: Sample) -> list[str]:
    problems = []
    present = set(table["ImageId"])
    unknown = sorted(present - set(sample.image_ids))
    if unknown:
        problems.append(f"{len(unknown)} image(s) not in the sample, e.g. {unknown[0]}")
    absent = [i for i in sample.image_ids if i not in present]
    if absent:
        problems.append(f"{len(absent)} sample image(s) missing, e.g. {absent[0]}")
    order = list(dict.fromkeys(table["ImageId"]))
    if not problems and order != sample.image_ids:
        first = next(i for i, (a, b) in enumerate(zip(order, sample.image_ids)) if a != b)
        problems.append(f"images out of the sample's order from {order[first]!r}")
    bad_class = ~table["ClassId"].isin(["0", *map(str, CLASS_IDS)])
    for i in np.flatnonzero(bad_class.to_numpy())[:5]:
        problems.append(f"line {i + 2}: ClassId {table['ClassId'].iloc[i]!r} is not 0..4")
    if not bad_class.any():
        grouped = table.groupby("ImageId", sort=False)["ClassId"].agg(list)
        for image_id, classes in grouped.items():
            if "0" in classes and len(classes) > 1:
                problems.append(f"{image_id}: a ClassId-0 row beside defect rows")
            elif classes != sorted(classes, key=int) or len(set(classes)) != len(classes):
                problems.append(f"{image_id}: classes {classes} not unique and ascending")
    return problems


def to_predictions(table: pd.DataFrame, sample: Sample) -> dict[str, list[str]]:
    """``{image_id: [rle class 1..4]}`` of a valid submission (ClassId-0 rows are empty)."""
    out = {image_id: [""] * len(CLASS_IDS) for image_id in sample.image_ids}
    if sample.format == "original":
        keys = table["ImageId_ClassId"].str.rpartition("_")
        pairs = zip(keys[0], keys[2].astype(int), table["EncodedPixels"])
    else:
        pairs = zip(table["ImageId"], table["ClassId"].astype(int), table["EncodedPixels"])
    for image_id, class_id, encoded in pairs:
        if class_id in CLASS_IDS:
            out[image_id][class_id - 1] = encoded
    return out


def score(predictions: dict[str, list[str]], truth: pd.DataFrame) -> metrics.Scores:
    """Competition scores of predictions against canonical labels (e.g. test_truth.csv)."""
    truth_rles = {i: [""] * len(CLASS_IDS) for i in predictions}
    for image_id, class_id, encoded in truth[["ImageId", "ClassId", "EncodedPixels"]].itertuples(
            index=False):
        if image_id in truth_rles:
            truth_rles[image_id][class_id - 1] = encoded
    counts = np.zeros((3, len(predictions), len(CLASS_IDS)), dtype=np.int64)
    for n, image_id in enumerate(predictions):
        for c in range(len(CLASS_IDS)):
            pred = rle.decode(predictions[image_id][c])
            true = rle.decode(truth_rles[image_id][c])
            counts[:, n, c] = (np.count_nonzero(pred & true), np.count_nonzero(pred),
                               np.count_nonzero(true))
    return metrics.summarize(*counts)


def check_test_images(image_dir: Path, sample_ids: list[str], sample_path: Path) -> None:
    """Refuse a test directory whose images differ from the sample submission's ids."""
    present = set(image_files.list_images(image_dir))
    missing, extra = sorted(set(sample_ids) - present), sorted(present - set(sample_ids))
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} image(s) of {sample_path} are not in {image_dir} (e.g. "
            f"{', '.join(missing[:3])}): the test images and the sample file do not match")
    if extra:
        raise ValueError(f"{image_dir} holds {len(extra)} image(s) not in {sample_path} (e.g. "
                         f"{', '.join(extra[:3])}): use the sample file of this test set")
