"""Which attached folders the kernel reads: the competition's data and the weights dataset.

Kaggle mounts a kernel's inputs under ``/kaggle/input`` in one of two layouts: the competition
at ``<root>/<slug>`` or ``<root>/competitions/<slug>``, a dataset at ``<root>/<slug>`` or
``<root>/datasets/<owner>/<slug>``. Other folders may sit beside them (another competition, an
older weights dataset), so each input is found by its identity, never by the order of names:

- the competition: the folder at one of its mount paths; failing that, the one folder whose
  ``sample_submission.csv`` reads as a sample of this competition and lists exactly the images
  of its ``test_images/``;
- the weights: the dataset the kernel was built for (``kernel --weights-dataset``) at one of its
  mount paths, holding ``postprocess.json``; a kernel built before it recorded the dataset takes
  the one folder that holds ``postprocess.json``.

More than one candidate, or none, is a ``KernelInputError`` listing what was found.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.config import COMPETITION

SAMPLE_FILE, POSTPROCESS_FILE = "sample_submission.csv", "postprocess.json"
MAX_DEPTH = 4


class KernelInputError(FileNotFoundError):
    """An input of the kernel is missing or ambiguous."""


def holders(root: Path, marker: str, max_depth: int = MAX_DEPTH) -> list[Path]:
    """Every folder under ``root`` (down to ``max_depth``) holding the file ``marker``."""
    found = {p.parent for depth in range(max_depth + 1)
             for p in root.glob("/".join(["*"] * depth + [marker])) if p.is_file()}
    return sorted(found)


def _listing(folders: list[Path]) -> str:
    return ", ".join(str(f) for f in folders) if folders else "none"


def _one(candidates: list[Path], what: str, fix: str) -> Path:
    if len(candidates) > 1:
        raise KernelInputError(f"{len(candidates)} folders could be {what}: "
                               f"{_listing(candidates)}; {fix}")
    return candidates[0]


def _sample_matches_images(folder: Path) -> bool:
    """Whether the folder's sample file is a sample of this competition (either format, 4
    classes) listing exactly the images of its ``test_images/``."""
    from pipeline.data.images import list_images
    from pipeline.inference.submission import read_sample

    try:
        sample = read_sample(folder / SAMPLE_FILE)
        present = list_images(folder / "test_images")
    except (OSError, ValueError):
        return False
    return bool(present) and set(sample.image_ids) == set(present)


def competition_dir(root: Path) -> Path:
    """The competition's data folder under ``root`` (see the module's docstring)."""
    candidates = holders(root, SAMPLE_FILE)
    named = [root / COMPETITION, root / "competitions" / COMPETITION]
    by_name = [folder for folder in named if folder in candidates]
    if by_name:
        return _one(by_name, f"the {COMPETITION} competition",
                    "detach all but one copy of the competition's data")
    matching = [folder for folder in candidates if _sample_matches_images(folder)]
    if not matching:
        raise KernelInputError(
            f"the {COMPETITION} competition's data is not attached: none of the folders under "
            f"{root} holding {SAMPLE_FILE} ({_listing(candidates)}) is mounted as {named[0]} or "
            f"{named[1]} or lists its test_images/: add the competition as a data source")
    return _one(matching, f"the {COMPETITION} competition's data (each {SAMPLE_FILE} lists its "
                "test_images/)", "detach the others, or attach the competition itself")


def weights_dir(root: Path, dataset: str | None) -> Path:
    """The weights folder under ``root`` of ``dataset`` (``owner/slug``, as the kernel was
    built for), or with None the one folder holding ``postprocess.json``."""
    candidates = holders(root, POSTPROCESS_FILE)
    if dataset is None:
        if not candidates:
            raise KernelInputError(f"no folder under {root} holds {POSTPROCESS_FILE}: attach "
                                   "the weights dataset (`make upload-weights`)")
        return _one(candidates, "the weights dataset", "rebuild the kernel (`make kernel`), "
                    "which names its weights dataset, or detach the others")
    owner, slug = dataset.split("/", 1)
    mounts = [root / slug, root / "datasets" / owner / slug]
    found = [folder for folder in mounts if (folder / POSTPROCESS_FILE).is_file()]
    if not found:
        raise KernelInputError(
            f"the weights dataset {dataset} is not attached: no {POSTPROCESS_FILE} in "
            f"{mounts[0]} or {mounts[1]} (folders holding one: {_listing(candidates)}); add "
            f"{dataset} as a data source, or rebuild the kernel for the attached one "
            "(`python -m pipeline kernel --weights-dataset OWNER/SLUG`)")
    return _one(found, f"the weights dataset {dataset}", "detach all but one copy of it")
