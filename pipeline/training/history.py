"""Per-fold training logs (CSV + JSON) and training-curve pictures."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from pipeline import fileio, plotting
from pipeline.config import RunPaths


def log_paths(logs: Path, fold: int) -> tuple[Path, Path]:
    """The CSV and JSON log of one fold."""
    return Path(logs) / f"fold{fold}.csv", Path(logs) / f"fold{fold}.json"


def read(logs: Path, fold: int) -> list[dict]:
    """The rows logged so far for a fold ([] when none)."""
    path = log_paths(logs, fold)[1]
    return json.loads(path.read_text()) if path.is_file() else []


def write(run: RunPaths, fold: int, rows: list[dict]) -> None:
    """Write the fold's log as CSV and JSON and redraw its curves, all atomically."""
    csv_path, json_path = log_paths(run.logs, fold)
    fileio.write_json(json_path, rows)
    table = pd.DataFrame(rows)
    lists = [c for c in table if table[c].map(lambda v: isinstance(v, list)).any()]
    table = table.drop(columns=lists)   # per-class lists stay in the JSON log
    with fileio.atomic_path(csv_path) as tmp:
        table.to_csv(tmp, index=False)
    plot(rows, curves_path(run, fold), title=f"fold {fold}")


def curves_path(run: RunPaths, fold: int) -> Path:
    """The picture of the fold's training curves."""
    return run.reports / f"curves_fold{fold}.png"


def plot(rows: list[dict], path: Path, title: str) -> None:
    """Loss (train, validation) and validation score per epoch, as a PNG."""
    plt = plotting.pyplot()
    # Epochs skipped by --val-every have no validation columns: they plot as gaps.
    table = pd.DataFrame(rows).reindex(columns=["epoch", "train_loss", "val_loss", "val_score",
                                                "val_tuned", "val_baseline", "val_nonempty"])
    fig, (ax_loss, ax_score) = plt.subplots(1, 2, figsize=(10, 3.5))
    ax_loss.plot(table["epoch"], table["train_loss"], marker="o", label="train")
    ax_loss.plot(table["epoch"], table["val_loss"], marker="o", label="validation")
    ax_loss.set(xlabel="epoch", ylabel="loss", title=f"{title}: loss")
    ax_loss.legend()
    ax_score.plot(table["epoch"], table["val_score"], marker="o", label="score")
    ax_score.plot(table["epoch"], table["val_tuned"], marker="o", label="score, tuned")
    ax_score.plot(table["epoch"], table["val_baseline"], linestyle="--", label="all-empty")
    ax_score.plot(table["epoch"], table["val_nonempty"], marker=".", label="non-empty Dice")
    ax_score.set(xlabel="epoch", ylabel="Dice", title=f"{title}: validation")
    ax_score.legend()
    fig.tight_layout()
    plotting.save(fig, path)
