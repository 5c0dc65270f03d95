"""An epoch's files written in a crash-safe order, and a resume that repairs what a kill left.

Each write is atomic (temp file + rename); across files the order makes ``last.pt`` the commit
point of an epoch (rank 0):

1. ``last.pt``: the epoch's training state plus every log row so far and the best epoch;
2. ``best.pt``, when the epoch is the best validated one so far (the same state, no rows);
3. the logs (``logs/fold<k>.csv``, ``.json``) and the curves (``reports/curves_fold<k>.png``).

A kill before 1 leaves the previous epoch committed: ``--resume`` trains this epoch again. A
kill after 1 leaves ``best.pt`` or the logs behind ``last.pt``: ``restore`` rewrites them from
``last.pt``, so a resumed fold ends with the files of an uninterrupted one. A kill inside a
write leaves a temp file, removed by ``remove_temps`` when the fold runs again.
"""

from __future__ import annotations

from pathlib import Path

import torch

from pipeline import checkpoint, fileio
from pipeline.config import RunPaths
from pipeline.training import history


def fold_files(run: RunPaths, fold: int) -> list[Path]:
    """Every file that training one fold writes (the run's config.json included)."""
    fold_dir = run.fold_dir(fold)
    return [run.config_json, fold_dir / "last.pt", fold_dir / "best.pt",
            *history.log_paths(run.logs, fold), history.curves_path(run, fold)]


def remove_temps(run: RunPaths, fold: int) -> list[Path]:
    """Remove the temp files of the fold's files that a killed write left behind (the kept
    top-k weights, ``top/epochN.pt``, included)."""
    top = run.fold_dir(fold) / "top"
    kept = {top / (tmp.name[1:].split(".pt.")[0] + ".pt") for tmp in top.glob(".epoch*.pt.*.tmp")}
    return [tmp for path in [*fold_files(run, fold), *sorted(kept)]
            for tmp in fileio.remove_temps(path)]


def commit(run: RunPaths, fold: int, state: dict, rows: list[dict], best_epoch: int | None) -> None:
    """Write the epoch of ``state``: ``last.pt`` (with ``rows``), ``best.pt`` if it is the best
    epoch, then the logs and curves, in that order (see the module's docstring)."""
    fold_dir = run.fold_dir(fold)
    checkpoint.save(fold_dir / "last.pt", {**state, "history": rows, "best_epoch": best_epoch})
    if best_epoch == state["epoch"]:
        checkpoint.save(fold_dir / "best.pt", best_state(state))
    history.write(run, fold, rows)


def best_state(state: dict) -> dict:
    """A ``last.pt`` state as ``best.pt`` holds it: without the training-only weights of an
    EMA run (``model`` is already the validated average)."""
    return {k: v for k, v in state.items() if k not in ("train_model", "ema")}


def restore(run: RunPaths, fold: int, device: torch.device,
            repair: bool = True) -> tuple[dict, list[dict]] | None:
    """``(state, log rows)`` of the fold's ``last.pt``, or None when there is none; with
    ``repair`` (rank 0), ``best.pt`` and the logs are first rewritten to match it."""
    path = run.fold_dir(fold) / "last.pt"
    if not path.is_file():
        return None
    state = checkpoint.load(path, device)
    if "history" not in state:  # written before the rows rode in last.pt: trust the log
        return state, history.read(run.logs, fold)[:state["epoch"] + 1]
    rows, best_epoch = state.pop("history"), state.pop("best_epoch")
    if len(rows) != state["epoch"] + 1 or rows[-1]["epoch"] != state["epoch"]:
        raise ValueError(f"{path}: epoch {state['epoch']} but {len(rows)} log rows; the file "
                         "is not a last.pt of this pipeline: train without --resume")
    state["best_epoch"] = best_epoch
    if repair:
        repair(run, fold, state, rows)
    return state, rows


def repair(run: RunPaths, fold: int, state: dict, rows: list[dict]) -> None:
    """Rewrite ``best.pt`` (when ``last.pt`` is the best epoch) and the logs from the state
    and rows ``restore`` read, so they match ``last.pt``."""
    if "best_epoch" not in state:   # an old last.pt without its rows: the logs are the rows
        return
    best_epoch = state.pop("best_epoch")
    if best_epoch == state["epoch"]:
        checkpoint.save(run.fold_dir(fold) / "best.pt", best_state(state))
    history.write(run, fold, rows)
