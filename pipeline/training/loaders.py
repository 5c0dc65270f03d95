"""The loaders of one fold: its training and validation datasets, pseudo-labelled test images
mixed into training (``--pseudo``), and a loader whose order and augmentation depend only on
(seed, epoch, rank)."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import torch
from torch.utils.data import ConcatDataset, DistributedSampler, Subset

from pipeline import distributed
from pipeline.config import CLASS_IDS, DataPaths, resolve_data_dir, resolve_run_dir
from pipeline.data import folds, labels, sampling
from pipeline.data.dataset import SteelDataset, Transform, collate
from pipeline.data.images import list_images
from pipeline.data.workers import DataLoader
from pipeline.training.config import TrainConfig

log = logging.getLogger(__name__)


class PseudoMixed:
    """A fold's training images (``real``) with pseudo-labelled test images (``pseudo``) drawn
    at ``share``: ``make_loader`` samples ``ConcatDataset([real, pseudo])`` with a
    ``sampling.MixedSampler``. Its length, ``rles`` and ``image_ids`` are the real images'
    (an epoch is as long as without pseudo-labels; the sampler's groups are real ones)."""

    def __init__(self, real: SteelDataset, pseudo: SteelDataset, share: float):
        self.real, self.pseudo, self.share = real, pseudo, share

    @property
    def rles(self) -> pd.DataFrame:
        return self.real.rles

    @property
    def image_ids(self) -> list[str]:
        return self.real.image_ids

    def __len__(self) -> int:
        return len(self.real)


def read_pseudo(path: Path, data: DataPaths,
                train_ids: list[str]) -> tuple[list[str], pd.DataFrame]:
    """The image ids of a pseudo-label CSV (every image it lists, defect-free ones included)
    and their RLE table; one-line errors naming the file, a line and the fix for a missing
    file, another header, an image with missing class rows, a training image or an id that
    is not in ``data.test_images``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--pseudo {path} does not exist: pass the CSV that "
                                "`python -m pipeline pseudo-label` writes")
    table = labels.read_table(path, "pseudo-label file")
    if list(table.columns) != labels.CURRENT_HEADER:
        raise ValueError(f"--pseudo {path}: header {','.join(map(str, table.columns))}; "
                         f"expected {','.join(labels.CURRENT_HEADER)} (every class row of each "
                         "kept test image, an empty EncodedPixels where there is no defect)")
    ids = table["ImageId"].str.strip()
    if ids.empty:
        raise ValueError(f"--pseudo {path} lists no image: pass a file with pseudo-labels, or "
                         "leave --pseudo out")
    _refuse(path, ids, ids.isin(set(train_ids)),
            f"is a training image in {data.train_images}: pseudo-labels are for test images "
            "only; remove its rows")
    _refuse(path, ids, ~ids.isin(set(list_images(data.test_images))),
            f"is not a test image in {data.test_images}: pseudo-labels are made on the test "
            "images; use the data dir they were made for")
    found = labels.read_labels(path)   # checks class ids, duplicates and RLE strings
    image_ids = sorted(set(ids))
    counts = table["ClassId"].str.strip().groupby(ids).nunique()
    short = counts[counts < len(CLASS_IDS)]
    if len(short):
        raise ValueError(f"--pseudo {path}: image {short.index[0]} has {short.iloc[0]} class "
                         f"row(s), not {len(CLASS_IDS)} ({len(short)} such image(s)): list "
                         "every class 1..4 of each image, EncodedPixels empty where none")
    return image_ids, labels.rle_table(found, image_ids)


def _refuse(path: Path, ids: pd.Series, bad: pd.Series, why: str) -> None:
    """ValueError naming the file line of the first ``bad`` id, ``why`` and how many."""
    if bad.any():
        first = bad.idxmax()   # read_table's index i is the file's line i + 2
        raise ValueError(f"{path}:{int(first) + 2}: image {ids.loc[first]} {why} "
                         f"({ids[bad].nunique()} such image(s))")


def fold_datasets(cfg: TrainConfig,
                  fold: int) -> tuple[SteelDataset | PseudoMixed, SteelDataset]:
    """Training (cropped, flipped; with ``cfg.pseudo`` a ``PseudoMixed``) and validation
    (full image, the fold's real images only) datasets of one fold."""
    train_t = Transform(scale=cfg.scale, crop=cfg.crop, flips=cfg.augment != "none",
                        augment=cfg.augment, crop_focus=cfg.crop_focus)  # checked first
    val_t = Transform(scale=cfg.scale)
    paths, run = resolve_data_dir(cfg.data_dir), resolve_run_dir(cfg.run_dir)
    table, image_ids = labels.load_train(paths)
    pseudo = read_pseudo(Path(cfg.pseudo), paths, image_ids) if cfg.pseudo else None
    split = folds.read_folds(run.folds_csv, image_ids)
    train_ids, val_ids = folds.split_ids(split, fold)
    if cfg.limit_images:   # the real images only: the pseudo ones are all kept
        train_ids = train_ids[:cfg.limit_images]
        val_ids = val_ids[:max(1, cfg.limit_images // 4)]
    rles = labels.rle_table(table, image_ids)
    train_set = SteelDataset(paths.train_images, train_ids, rles, train_t,
                             skip_bad_images=cfg.skip_bad_images)
    val_set = SteelDataset(paths.train_images, val_ids, rles, val_t, full_masks=True,
                           skip_bad_images=cfg.skip_bad_images)
    if pseudo is None:
        return train_set, val_set
    if distributed.is_main_process():
        log.info("fold %d: %d pseudo-labelled test images mixed in at share %s", fold,
                 len(pseudo[0]), cfg.pseudo_share)
    return PseudoMixed(train_set, SteelDataset(paths.test_images, *pseudo, train_t,
                                               skip_bad_images=cfg.skip_bad_images),
                       cfg.pseudo_share), val_set


def make_loader(dataset, cfg: TrainConfig, context: distributed.Context, epoch: int,
                train: bool) -> DataLoader:
    """A loader whose order and augmentation depend only on (seed, epoch, rank); a
    ``PseudoMixed`` training set mixes its pseudo images in at its share."""
    mixed = dataset if isinstance(dataset, PseudoMixed) else None
    dataset = dataset.real if mixed is not None else dataset
    drop_last = train and len(dataset) >= cfg.batch_size * context.world_size
    if train and cfg.sampler == "balanced":
        sampler = sampling.BalancedSampler(
            sampling.presence_table(dataset.rles, dataset.image_ids), cfg.sample_shares,
            seed=cfg.seed, rank=context.rank, world_size=context.world_size, warn=False)
        sampler.set_epoch(epoch)
    elif train:
        sampler = DistributedSampler(dataset, num_replicas=context.world_size,
                                     rank=context.rank, shuffle=True, seed=cfg.seed,
                                     drop_last=context.distributed)
        sampler.set_epoch(epoch)
    else:
        dataset, sampler = Subset(dataset, range(context.rank, len(dataset),
                                                 context.world_size)), None
    if train and mixed is not None:
        sampler = sampling.MixedSampler(sampler, len(mixed.real), len(mixed.pseudo),
                                        mixed.share, seed=cfg.seed, rank=context.rank,
                                        world_size=context.world_size)
        sampler.set_epoch(epoch)
        dataset = ConcatDataset([mixed.real, mixed.pseudo])
    generator = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    return DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler,
                      num_workers=cfg.workers, collate_fn=collate, generator=generator,
                      pin_memory=context.device.type == "cuda", drop_last=drop_last)
