"""The competition's CSV formats -> one canonical table of labels; the masks of an image."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

from pipeline.config import CLASS_IDS, HEIGHT, N_CLASSES, WIDTH, DataPaths
from pipeline.data import rle
from pipeline.data.images import list_images

LABEL_COLUMNS = ["ImageId", "ClassId", "EncodedPixels"]
CURRENT_HEADER = ["ImageId", "ClassId", "EncodedPixels"]
ORIGINAL_HEADER = ["ImageId_ClassId", "EncodedPixels"]


def _line(index: int) -> int:
    """The 1-based file line of a data row of ``read_table`` (the header is line 1)."""
    return int(index) + 2


def read_table(path: Path, what: str = "CSV file") -> pd.DataFrame:
    """A CSV file's rows as strings, blank lines dropped but counted: a row's index ``i`` is
    the file's line ``i + 2``. ValueError naming the file for an empty or unparsable one."""
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, skip_blank_lines=False)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{what} {path} is empty: it needs a header line") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        reason = " ".join(str(error).split())
        raise ValueError(f"{what} {path} is not a readable CSV file ({reason})") from None
    return table[~(table == "").all(axis=1)]


def read_labels(path: Path) -> pd.DataFrame:
    """Canonical labels ``ImageId, ClassId, EncodedPixels`` of a train.csv in either format.

    Keeps only non-empty rows (defect-free images are listed by ``list_images``), sorted by
    image then class. Raises ValueError naming the file and line for a malformed header, an
    unknown ClassId, a duplicate (image, class) row or an invalid RLE string.
    """
    table = read_table(path, "labels file")
    header = list(table.columns)
    if header == CURRENT_HEADER:
        image_ids, class_ids = table["ImageId"], table["ClassId"]
    elif header == ORIGINAL_HEADER:
        parts = table["ImageId_ClassId"].str.rpartition("_")
        bad = parts[1] != "_"
        if bad.any():
            index = bad.idxmax()
            raise ValueError(f"{path}:{_line(index)}: ImageId_ClassId "
                             f"{table['ImageId_ClassId'].loc[index]!r} is not '<image>_<class>'")
        image_ids, class_ids = parts[0], parts[2]
    else:
        raise ValueError(f"{path}: malformed header {header}; expected {CURRENT_HEADER} "
                         f"(current format) or {ORIGINAL_HEADER} (original format)")
    labels = pd.DataFrame({"ImageId": image_ids.str.strip(), "ClassId": class_ids.str.strip(),
                           "EncodedPixels": table["EncodedPixels"].str.strip()})
    unknown = ~labels["ClassId"].isin([str(c) for c in CLASS_IDS])
    if unknown.any():
        index = unknown.idxmax()
        raise ValueError(f"{path}:{_line(index)}: unknown ClassId "
                         f"{labels['ClassId'].loc[index]!r}; valid ones are {list(CLASS_IDS)}")
    labels["ClassId"] = labels["ClassId"].astype(int)
    duplicated = labels.duplicated(["ImageId", "ClassId"], keep=False)
    if duplicated.any():
        lines = [_line(i) for i in labels.index[duplicated][:2]]
        row = labels.loc[lines[0] - 2]
        raise ValueError(f"{path}: lines {lines[0]} and {lines[1]} both label image "
                         f"{row['ImageId']} class {row['ClassId']}; keep one row per pair")
    labels = labels[labels["EncodedPixels"] != ""]
    for index, encoded in labels["EncodedPixels"].items():
        try:
            rle.parse(encoded)
        except ValueError as error:
            raise ValueError(f"{path}:{_line(index)}: {error}") from None
    return labels.sort_values(["ImageId", "ClassId"]).reset_index(drop=True)


def load_train(data: DataPaths) -> tuple[pd.DataFrame, list[str]]:
    """Labels of train.csv and every training image id, defect-free ones included.

    Raises FileNotFoundError naming the row whose image is missing from train_images/.
    """
    labels = read_labels(data.train_csv)
    image_ids = list_images(data.train_images)
    missing = ~labels["ImageId"].isin(set(image_ids))
    if missing.any():
        row = labels[missing].iloc[0]
        raise FileNotFoundError(
            f"{data.train_csv}: image {row['ImageId']} (class {row['ClassId']}) has no file "
            f"{data.train_images / row['ImageId']}; {int(missing.sum())} labelled image(s) "
            "missing: re-download the data or remove their rows")
    return labels, image_ids


def rle_table(labels: pd.DataFrame, image_ids: list[str]) -> pd.DataFrame:
    """One row per image id, columns 1..4 holding the class RLE ('' where there is none)."""
    wide = labels.pivot(index="ImageId", columns="ClassId", values="EncodedPixels")
    wide = wide.reindex(index=image_ids, columns=list(CLASS_IDS), fill_value="")
    wide = wide.astype(object).where(wide.notna(), "")
    wide.columns.name = None
    return wide


def masks_from_rles(rles: list[str], shape: tuple[int, int] = (HEIGHT, WIDTH)) -> np.ndarray:
    """The ``(4, H, W)`` uint8 C-contiguous masks of an image from its 4 class RLE strings."""
    if len(rles) != N_CLASSES:
        raise ValueError(f"expected {N_CLASSES} RLE strings (classes 1..4), got {len(rles)}")
    masks = np.empty((N_CLASSES, *shape), dtype=np.uint8)
    for plane, encoded in zip(masks, rles):
        # decode gives a view of a column-major buffer: OpenCV's transpose makes it row-major
        # 10x faster than numpy's strided copy.
        cv2.transpose(rle.decode(encoded, shape).T, plane)
    return masks


def label_map(masks: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """The single-label map 0..4 of ``(..., 4, H, W)`` 0/1 masks (0 = background).

    Where classes overlap the highest class id wins (class 4 over 3 over 2 over 1), so a
    pixel gets exactly one label; real labels overlap on well under 0.1% of defect pixels.
    A numpy array gives an ``(..., H, W)`` uint8 array, a tensor an int64 tensor (the target
    of cross-entropy) on the same device.
    """
    tensor = torch.as_tensor(masks)
    class_ids = torch.arange(1, tensor.shape[-3] + 1, dtype=torch.uint8, device=tensor.device)
    labels = (tensor.bool() * class_ids.view(-1, 1, 1)).amax(dim=-3)
    return labels.numpy() if isinstance(masks, np.ndarray) else labels.long()
