"""The loaders of one fold: its training and validation datasets, and a loader whose order
and augmentation depend only on (seed, epoch, rank)."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, DistributedSampler, Subset

from pipeline import distributed
from pipeline.config import resolve_data_dir, resolve_run_dir
from pipeline.data import folds, labels, sampling
from pipeline.data.dataset import SteelDataset, Transform, collate
from pipeline.training.config import TrainConfig


def fold_datasets(cfg: TrainConfig, fold: int) -> tuple[SteelDataset, SteelDataset]:
    """Training (cropped, flipped) and validation (full image) datasets of one fold."""
    train_t = Transform(scale=cfg.scale, crop=cfg.crop, flips=cfg.augment != "none",
                        augment=cfg.augment, crop_focus=cfg.crop_focus)  # checked first
    val_t = Transform(scale=cfg.scale)
    paths, run = resolve_data_dir(cfg.data_dir), resolve_run_dir(cfg.run_dir)
    table, image_ids = labels.load_train(paths)
    split = folds.read_folds(run.folds_csv, image_ids)
    train_ids, val_ids = folds.split_ids(split, fold)
    if cfg.limit_images:
        train_ids = train_ids[:cfg.limit_images]
        val_ids = val_ids[:max(1, cfg.limit_images // 4)]
    rles = labels.rle_table(table, image_ids)
    return (SteelDataset(paths.train_images, train_ids, rles, train_t,
                         skip_bad_images=cfg.skip_bad_images),
            SteelDataset(paths.train_images, val_ids, rles, val_t, full_masks=True,
                         skip_bad_images=cfg.skip_bad_images))


def make_loader(dataset, cfg: TrainConfig, context: distributed.Context, epoch: int,
                train: bool) -> DataLoader:
    """A loader whose order and augmentation depend only on (seed, epoch, rank)."""
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
    generator = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    return DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler,
                      num_workers=cfg.workers, collate_fn=collate, generator=generator,
                      pin_memory=context.device.type == "cuda",
                      drop_last=train and len(dataset) >= cfg.batch_size * context.world_size)
