"""What ``--run-dir`` names: one run, or an ensemble folder of several runs (``ensemble``).

An ensemble folder holds ``ensemble.json`` (its members' run folders, relative to it, and their
weights), a copy of the members' common ``folds.csv``, and, after ``cv``, its own
``postprocess.json`` and ``reports/``. Out of fold, fold k of the ensemble is the weighted
average of every member's fold-k model (each image is predicted only by models that did not
train on it); on the test set it is every member's fold models, a member's weight shared
equally by its folds. How members of different heads and gates combine: ``predict.Ensemble``.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

from pipeline import fileio
from pipeline.config import RunPaths, code_version, resolve_run_dir
from pipeline.data import folds

log = logging.getLogger(__name__)

ENSEMBLE_FILE = "ensemble.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Member:
    """One run of an ensemble: its name (its folder's, made unique), paths and weight."""

    name: str
    run: RunPaths
    weight: float


@dataclass(frozen=True)
class Source:
    """What a ``--run-dir`` names: a run (one member of weight 1) or an ensemble of runs;
    ``paths``: where its folds.csv, reports and postprocess.json live."""

    paths: RunPaths
    members: tuple[Member, ...]
    is_ensemble: bool = False

    @property
    def root(self) -> Path:
        return self.paths.root

    @property
    def folds_csv(self) -> Path:
        return self.paths.folds_csv

    def fold_models(self, fold: int) -> list[tuple[Path, float]]:
        """``(checkpoint, weight)`` of the models that predict fold ``fold``'s images out of
        fold: every member's fold-``fold`` best.pt."""
        return [(member.run.fold_dir(fold) / "best.pt", member.weight)
                for member in self.members]

    def all_models(self) -> list[tuple[Path, float]]:
        """``(checkpoint, weight)`` of every model that predicts the test set, member by member
        in fold order; a member's weight is shared equally by its folds."""
        return [(path, weight) for _, path, weight in self.member_models()]

    def member_models(self) -> list[tuple[Member, Path, float]]:
        """``all_models`` with the member of each model."""
        if not self.is_ensemble:
            return [(self.members[0], path, 1.0) for path in self.paths.find_checkpoints()]
        found = []
        for member in self.members:
            paths = member.run.find_checkpoints()
            if not paths:
                raise FileNotFoundError(f"ensemble member {member.name}: no checkpoint "
                                        f"{member.run.checkpoints}/fold*/best.pt: train it")
            found += [(member, path, member.weight / len(paths)) for path in paths]
        return found

    def describe(self, names_only: bool = False) -> str:
        """'run X' or 'ensemble X of a (weight 2), b (weight 1)' (``names_only``: the folders'
        names rather than their paths, for what leaves the machine)."""
        root = self.root.name if names_only else self.root
        if not self.is_ensemble:
            return f"run {root}"
        return f"ensemble {root} of " + ", ".join(
            f"{m.name} (weight {m.weight:g})" for m in self.members)


def resolve(run_dir: str | os.PathLike | None) -> Source:
    """The run or ensemble that ``--run-dir`` (or its default) names."""
    paths = resolve_run_dir(run_dir)
    if (paths.root / ENSEMBLE_FILE).is_file():
        return load(paths.root)
    return Source(paths, (Member(paths.root.name, paths, 1.0),))


def load(root: Path) -> Source:
    """The ensemble described by ``root/ensemble.json``; one-line errors naming the file."""
    path = Path(root) / ENSEMBLE_FILE
    try:
        values = json.loads(path.read_text())
        members = values["members"]
        names = [m["name"] for m in members]
        runs = [RunPaths(Path(os.path.normpath(Path(root) / m["run_dir"]))) for m in members]
        weights = [float(m["weight"]) for m in members]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path} is not an ensemble description ({error!r}): write it again "
                         "with `python -m pipeline ensemble`") from None
    if values.get("version", 1) > FORMAT_VERSION:
        raise ValueError(f"{path}: format version {values['version']} is newer than this "
                         f"pipeline's ({FORMAT_VERSION}): update the pipeline")
    check_weights(weights, len(runs), str(path))
    return Source(RunPaths(Path(root)), tuple(map(Member, names, runs, weights)), True)


def check_weights(weights: list[float], n_members: int, where: str = "--weights") -> None:
    """One finite weight >= 0 per member, summing to a positive number."""
    if len(weights) != n_members:
        raise ValueError(f"{where}: {len(weights)} weight(s) for {n_members} member(s): give "
                         "one per --run-dir")
    if not all(math.isfinite(w) and w >= 0 for w in weights) or not sum(weights) > 0:
        raise ValueError(f"{where}: weights {','.join(f'{w:g}' for w in weights)} must be "
                         "finite, >= 0 and sum to a positive number, e.g. 2,1")


def check_same_folds(runs: list[RunPaths]) -> None:
    """Every run's folds.csv assigns every image to the same fold as the first's."""
    first = folds.read_folds(runs[0].folds_csv).set_index("ImageId")["fold"]
    for run in runs[1:]:
        other = folds.read_folds(run.folds_csv).set_index("ImageId")["fold"]
        images = sorted(set(first.index) ^ set(other.index))
        moved = sorted(i for i in set(first.index) & set(other.index) if first[i] != other[i])
        if images or moved:
            example = (f"{images[0]} is in one only" if images else
                       f"{moved[0]}: fold {first[moved[0]]} vs {other[moved[0]]}")
            raise ValueError(
                f"members with different folds: {run.folds_csv} and {runs[0].folds_csv} differ "
                f"on {len(images) + len(moved)} image(s) (e.g. {example}): out-of-fold "
                "predictions need one split; train the members on one folds.csv (copy it into "
                "each run folder before `train`)")


def _check_member(run: RunPaths, out: Path) -> None:
    if not run.root.is_dir():
        raise FileNotFoundError(f"--run-dir {run.root} does not exist")
    if (run.root / ENSEMBLE_FILE).is_file():
        raise ValueError(f"--run-dir {run.root} is an ensemble: pass its members' run folders")
    if run.root.resolve() == out.resolve():
        raise ValueError(f"--out {out} is also a member: write the ensemble to its own folder")
    if not (run.reports / "cv.json").is_file():
        raise FileNotFoundError(f"ensemble member {run.root} has no cv ({run.reports}/cv.json "
                                f"is missing): run `python -m pipeline cv --run-dir {run.root}`"
                                " first")
    if not run.find_checkpoints():
        raise FileNotFoundError(f"ensemble member {run.root} has no {run.checkpoints}/fold*/"
                                "best.pt: train it first")


def create(run_dirs: list[str], weights: list[float] | None, out: str) -> Source:
    """Check the members and write the ensemble folder ``out`` (ensemble.json, folds.csv); a
    previous ensemble there with other members loses its cv results (they were for others)."""
    out_dir = Path(out)
    if len(run_dirs) < 2:
        raise ValueError("an ensemble needs at least two --run-dir members")
    runs = [RunPaths(Path(d)) for d in run_dirs]
    if len({r.root.resolve() for r in runs}) < len(runs):
        raise ValueError("a --run-dir is given twice: give each member once (--weights "
                         "weighs them)")
    weights = [1.0] * len(runs) if weights is None else list(weights)
    check_weights(weights, len(runs))
    if out_dir.exists() and not (out_dir / ENSEMBLE_FILE).is_file() and any(out_dir.iterdir()):
        raise ValueError(f"--out {out_dir} exists and is not an ensemble folder: choose a new "
                         "or empty folder")
    for run in runs:
        _check_member(run, out_dir)
    check_same_folds(runs)
    names = _unique([r.root.resolve().name for r in runs])
    description = {"version": FORMAT_VERSION, "code_version": code_version(), "members": [
        {"name": name, "run_dir": os.path.relpath(run.root.resolve(), out_dir.resolve()),
         "weight": weight} for name, run, weight in zip(names, runs, weights)]}
    previous = out_dir / ENSEMBLE_FILE
    if previous.is_file() and json.loads(previous.read_text()).get("members") \
            != description["members"]:
        reports = RunPaths(out_dir).reports
        for stale in (RunPaths(out_dir).postprocess_json, reports / "cv.json",
                      reports / "oof.npz"):
            if stale.is_file():
                stale.unlink()
                log.info("removed %s: it was tuned for other members", stale)
    fileio.write_bytes(RunPaths(out_dir).folds_csv, runs[0].folds_csv.read_bytes())
    fileio.write_json(previous, description)
    return load(out_dir)


def _unique(names: list[str]) -> list[str]:
    """The names, a repeated one suffixed with its position (-2, -3, ...)."""
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name}-{seen[name]}")
    return unique
