"""CV reports: the text tables (one run, several runs) and the pictures (defect-count
confusion, score vs min_area, truth and prediction overlays)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline import plotting
from pipeline.config import N_CLASSES

CLASS_COLOURS = np.array([[255, 220, 0], [0, 200, 255], [255, 60, 60], [80, 255, 80]],
                         dtype=np.float32)  # RGB of classes 1..4


def confusion(matrix: list[list[int]], path: Path, title: str) -> None:
    """Heat map of true (rows) vs predicted (columns) number of defect classes per image."""
    plt = plotting.pyplot()
    matrix = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, str(value), ha="center", va="center",
                color="white" if value > matrix.max() / 2 else "black")
    ax.set(xlabel="predicted defect classes", ylabel="true defect classes", title=title,
           xticks=range(matrix.shape[1]), yticks=range(matrix.shape[0]))
    fig.tight_layout()
    plotting.save(fig, path)


def min_area_curves(curves: np.ndarray, min_areas: tuple[int, ...], params, path: Path) -> None:
    """Per class, OOF class score vs min_area (``curves`` ``(M, 4)``) at the chosen pixel
    threshold and presence gate of ``params``."""
    plt = plotting.pyplot()
    fig, axes = plt.subplots(1, curves.shape[1], figsize=(4 * curves.shape[1], 3.2), sharey=True)
    for c, ax in enumerate(axes):
        ax.plot(min_areas, curves[:, c], marker="o")
        threshold, gate = params.threshold[c], params.presence[c]
        title = f"class {c + 1} (threshold {'argmax' if threshold is None else threshold}"
        ax.set(title=title + ("" if gate is None else f", gate {gate}") + ")",
               xlabel="min_area (pixels)", xscale="symlog")
    axes[0].set_ylabel("OOF Dice of the class")
    fig.tight_layout()
    plotting.save(fig, path)


def overlay(image: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 image with ``(4, H, W)`` masks blended in their class colours."""
    out = image.astype(np.float32)
    for c in range(masks.shape[0]):
        on = masks[c].astype(bool)
        out[on] = 0.5 * out[on] + 0.5 * CLASS_COLOURS[c]
    return out.clip(0, 255).astype(np.uint8)


def overlays(examples: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]], path: Path) -> None:
    """Rows of (image, truth overlay, prediction overlay) for ``(id, image, truth, pred)``."""
    plt = plotting.pyplot()
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
    plotting.save(fig, path)


def format_report(report: dict) -> str:
    """The CV table: default vs tuned post-processing."""
    default, tuned = report["default"], report["tuned"]
    lines = [f"OOF images: {report['n_images']}  folds: {report['folds']}  TTA: {report['tta']}",
             f"{'':28}{'default':>10}{'tuned':>10}",
             f"{'competition score':28}{default['score']:>10.4f}{tuned['score']:>10.4f}",
             f"{'all-empty baseline':28}{default['all_empty_baseline']:>10.4f}"
             f"{tuned['all_empty_baseline']:>10.4f}",
             f"{'Dice on non-empty pairs':28}{default['nonempty']:>10.4f}"
             f"{tuned['nonempty']:>10.4f}"]
    for c in range(N_CLASSES):
        lines.append(f"{f'class {c + 1}, all pairs':28}{default['per_class'][c]:>10.4f}"
                     f"{tuned['per_class'][c]:>10.4f}")
    for c in range(N_CLASSES):
        lines.append(f"{f'class {c + 1}, non-empty pairs':28}"
                     f"{default['nonempty_per_class'][c]:>10.4f}"
                     f"{tuned['nonempty_per_class'][c]:>10.4f}")
    pp = report["postprocess"]
    gate = f"  presence {pp['presence']}" if any(p is not None for p in pp["presence"]) else ""
    lines.append(f"tuned thresholds {pp['threshold']}  min_area {pp['min_area']}{gate}")
    lines.append("confusion (rows: true number of defect classes, columns: predicted), tuned:")
    lines.extend("  " + " ".join(f"{v:5d}" for v in row) for row in tuned["confusion"])
    if "breakdown" in report:
        from pipeline.inference import breakdown

        lines.append(breakdown.format_breakdown(report))
    return "\n".join(lines)


def compare_runs(reports: dict[str, dict]) -> str:
    """Side-by-side table of several runs' cv.json: score, non-empty Dice, confusion."""
    width = max([16, *(len(name) + 2 for name in reports)])
    header = (f"{'run':{width}}{'score':>8}{'score':>8}{'non-empty':>11}{'non-empty':>11}"
              f"{'all-empty':>11}")
    lines = [header, f"{'':{width}}{'default':>8}{'tuned':>8}{'Dice def.':>11}"
             f"{'Dice tuned':>11}{'baseline':>11}", "-" * len(header)]
    for name, report in reports.items():
        d, t = report["default"], report["tuned"]
        lines.append(f"{name:{width}}{d['score']:>8.4f}{t['score']:>8.4f}{d['nonempty']:>11.4f}"
                     f"{t['nonempty']:>11.4f}{d['all_empty_baseline']:>11.4f}")
    for name, report in reports.items():
        for which in ("default", "tuned"):
            lines.append(f"{name} confusion ({which}; rows true, columns predicted number of "
                         "defect classes):")
            lines.extend("  " + " ".join(f"{v:5d}" for v in row)
                         for row in report[which]["confusion"])
    return "\n".join(lines)
