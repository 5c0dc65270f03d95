"""Summary of a dataset: image counts, defect-free share, rows per class, classes per image."""

from __future__ import annotations

import pandas as pd

from pipeline.config import CLASS_IDS, DataPaths


def describe(labels: pd.DataFrame, image_ids: list[str], data: DataPaths) -> str:
    """A short human-readable report of the training set."""
    per_class = labels["ClassId"].value_counts().reindex(CLASS_IDS, fill_value=0)
    classes_per_image = labels.groupby("ImageId").size().value_counts().sort_index()
    n_defect = labels["ImageId"].nunique()
    lines = [
        f"data dir        {data.root}",
        f"train images    {len(image_ids)}",
        f"with a defect   {n_defect} ({n_defect / max(len(image_ids), 1):.1%})",
        f"defect-free     {len(image_ids) - n_defect}",
        "rows per class  " + "  ".join(f"{c}: {n}" for c, n in per_class.items()),
        "classes/image   " + "  ".join(f"{k}: {n}" for k, n in classes_per_image.items()),
    ]
    if data.test_images.is_dir():
        lines.append(f"test images     {sum(1 for _ in data.test_images.glob('*.jpg'))}")
    return "\n".join(lines)
