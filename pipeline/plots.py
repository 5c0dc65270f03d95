"""Report pictures: defect-count confusion, score vs min_area, truth and prediction overlays."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline import fileio

CLASS_COLOURS = np.array([[255, 220, 0], [0, 200, 255], [255, 60, 60], [80, 255, 80]],
                         dtype=np.float32)  # RGB of classes 1..4


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: Path) -> None:
    """Save a figure as PNG atomically and close it."""
    with fileio.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    pyplot().close(fig)


def confusion(matrix: list[list[int]], path: Path, title: str) -> None:
    """Heat map of true (rows) vs predicted (columns) number of defect classes per image."""
    plt = pyplot()
    matrix = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, str(value), ha="center", va="center",
                color="white" if value > matrix.max() / 2 else "black")
    ax.set(xlabel="predicted defect classes", ylabel="true defect classes", title=title,
           xticks=range(matrix.shape[1]), yticks=range(matrix.shape[0]))
    fig.tight_layout()
    save(fig, path)


def min_area_curves(grid: np.ndarray, min_areas: tuple[int, ...], thresholds: tuple,
                    chosen_k: tuple[int, ...], path: Path) -> None:
    """Per class, OOF class score vs min_area at the chosen pixel threshold."""
    plt = pyplot()
    fig, axes = plt.subplots(1, grid.shape[2], figsize=(4 * grid.shape[2], 3.2), sharey=True)
    for c, ax in enumerate(axes):
        ax.plot(min_areas, grid[chosen_k[c], :, c], marker="o")
        label = thresholds[chosen_k[c]]
        ax.set(title=f"class {c + 1} (threshold {'argmax' if label is None else label})",
               xlabel="min_area (pixels)", xscale="symlog")
    axes[0].set_ylabel("OOF Dice of the class")
    fig.tight_layout()
    save(fig, path)


def overlay(image: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 image with ``(4, H, W)`` masks blended in their class colours."""
    out = image.astype(np.float32)
    for c in range(masks.shape[0]):
        on = masks[c].astype(bool)
        out[on] = 0.5 * out[on] + 0.5 * CLASS_COLOURS[c]
    return out.clip(0, 255).astype(np.uint8)


def overlays(examples: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]], path: Path) -> None:
    """Rows of (image, truth overlay, prediction overlay) for ``(id, image, truth, pred)``."""
    plt = pyplot()
    fig, axes = plt.subplots(len(examples), 3, figsize=(18, 1.3 * len(examples) + 0.6),
                             squeeze=False)
    for row, (image_id, image, truth, pred) in zip(axes, examples):
        for ax, picture, title in zip(row, (image, overlay(image, truth), overlay(image, pred)),
                                      (image_id, "truth", "prediction")):
            ax.imshow(picture)
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.suptitle("classes: 1 yellow, 2 cyan, 3 red, 4 green", fontsize=9)
    fig.tight_layout()
    save(fig, path)
