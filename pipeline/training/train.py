"""Training of one fold: loaders, train_one_epoch, evaluate, checkpoints, logs and curves."""

from __future__ import annotations

import contextlib
import logging
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Subset
from tqdm import tqdm

from pipeline import distributed, fileio, metrics
from pipeline.config import HEIGHT, WIDTH, RunPaths, code_version, resolve_data_dir, \
    resolve_run_dir
from pipeline.data import folds, labels
from pipeline.data.dataset import SteelDataset, Transform, collate, to_model_input
from pipeline.models import forward
from pipeline.models.losses import build_loss
from pipeline.models.registry import build_model, model_info
from pipeline.stages import stage
from pipeline.training import lock
from pipeline.training.config import TrainConfig, resume_conflicts
from pipeline.training.optimizers import build_optimizer
from pipeline.training import resume as resume_files

log = logging.getLogger(__name__)


def fold_datasets(cfg: TrainConfig, fold: int) -> tuple[SteelDataset, SteelDataset]:
    """Training (cropped, flipped) and validation (full image) datasets of one fold."""
    train_t = Transform(scale=cfg.scale, crop=cfg.crop, flips=cfg.augment != "none",
                        augment=cfg.augment)  # checked before the data
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


def train_one_epoch(model, loader, loss_fn, optimizer, scheduler, scaler, cfg: TrainConfig,
                    context: distributed.Context, epoch: int, step_budget: int | None) -> dict:
    """One pass over the loader; returns mean loss, images/s and skipped images."""
    model.train()
    total_loss, n_images, n_skipped, steps, start = 0.0, 0, 0, 0, time.perf_counter()
    bar = tqdm(loader, desc=f"epoch {epoch}", leave=False, unit="batch",
               disable=cfg.quiet or not context.is_main or None)
    for batch in bar:
        n_skipped += batch["n_skipped"]
        if "image" not in batch:
            continue
        images = to_model_input(batch["image"], context.device, cfg.channels_last)
        masks = batch["masks"].to(context.device, non_blocking=True)
        with forward.autocast(cfg.amp, context.device):
            with stage("forward"):
                logits, presence = forward.forward_padded(model, images)
            with stage("loss"):
                loss = loss_fn(logits, masks, presence)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"loss became {loss.item()} at epoch {epoch}, step {steps}: nothing was saved "
                "for this epoch; lower --lr, try --amp none, or check the data")
        with stage("optimizer"):
            optimizer.zero_grad(set_to_none=True)
        with stage("backward"):
            scaler.scale(loss).backward()
        with stage("optimizer"):
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
        steps += 1
        total_loss += loss.item() * len(images)
        n_images += len(images)
        bar.set_postfix(loss=f"{loss.item():.4f}",
                        img_s=f"{n_images / (time.perf_counter() - start):.1f}")
        if step_budget is not None and steps >= step_budget:
            break
    seconds = time.perf_counter() - start
    mean_loss = distributed.mean_across_ranks(total_loss / max(n_images, 1), n_images, context)
    images_total = sum(distributed.gather(n_images, context))
    return {"train_loss": mean_loss, "images_per_s": images_total / seconds, "steps": steps,
            "skipped": sum(distributed.gather(n_skipped, context)), "seconds": seconds}


@torch.inference_mode()
def evaluate(model, loader, loss_fn, cfg: TrainConfig, context: distributed.Context) -> dict:
    """Validation loss and competition score at default thresholds, over all ranks."""
    model.eval()
    counts, total_loss, n_images = [], 0.0, 0
    for batch in tqdm(loader, desc="validate", leave=False, unit="batch",
                      disable=cfg.quiet or not context.is_main or None):
        if "image" not in batch:
            continue
        images = to_model_input(batch["image"], context.device, cfg.channels_last)
        masks = batch["masks"].to(context.device)
        with forward.autocast(cfg.amp, context.device), stage("forward"):
            logits, presence = forward.forward_padded(model, images)
        # The loss at the model's resolution, as in training; the score on the 256x1600 grid.
        with stage("loss"):
            small = F.interpolate(masks.float(), size=logits.shape[-2:], mode="nearest")
            total_loss += loss_fn(logits.float(), small, presence).item() * len(images)
        with stage("upsample"):
            logits = forward.upsample(logits, (HEIGHT, WIDTH))
        with stage("probabilities"):
            probs = forward.probabilities(logits, cfg.head)
        n_images += len(images)
        with stage("postprocess"):
            pred = forward.default_masks(probs, cfg.head, presence)
        with stage("metric"):
            counts.append(torch.stack(metrics.pair_counts(pred, masks)).cpu().numpy())
    local = np.concatenate(counts, axis=1) if counts else np.zeros((3, 0, 4), dtype=np.int64)
    merged = np.concatenate(distributed.gather(local, context), axis=1)
    scores = metrics.summarize(*merged)
    loss = distributed.mean_across_ranks(total_loss / max(n_images, 1), n_images, context)
    return {"val_loss": loss, "val_score": scores.score, "val_nonempty": scores.nonempty,
            "val_baseline": scores.all_empty_baseline, "val_per_class": scores.per_class}


def make_loader(dataset, cfg: TrainConfig, context: distributed.Context, epoch: int,
                train: bool) -> DataLoader:
    """A loader whose order and augmentation depend only on (seed, epoch, rank)."""
    if train:
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


def _load_state(state: dict, model, optimizer, scheduler, scaler) -> None:
    """Put a ``last.pt`` state into the training objects."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])


def train_fold(cfg: TrainConfig, fold: int, resume: bool = False,
               context: distributed.Context | None = None) -> dict:
    """Train one fold; keeps ``best.pt`` (by validation score) and ``last.pt``; returns best.

    Rank 0 holds the fold's lock (``lock.fold_lock``) while it trains: a second process on the
    same run and fold is refused.
    """
    context = context or distributed.setup(cfg.device)
    run = resolve_run_dir(cfg.run_dir)
    held = lock.fold_lock(run.fold_dir(fold)) if context.is_main else contextlib.nullcontext()
    with held:
        return _train_fold(cfg, fold, run, resume, context)


def _start(cfg: TrainConfig, fold: int, run: RunPaths, objects: tuple, resume: bool,
           context: distributed.Context) -> tuple[int, list[dict]]:
    """The first epoch and the log rows so far; on rank 0 also clears the temp files of killed
    writes and writes the run's config.json (the fold passed its checks)."""
    if context.is_main:
        for tmp in resume_files.remove_temps(run, fold):
            log.warning("removed %s, left by an interrupted write", tmp)
    restored = resume_files.restore(run, fold, context.device, repair=False) if resume else None
    if restored is not None:   # nothing is written before the saved settings are checked
        conflicts = resume_conflicts(restored[0].get("config", {}), cfg)
        if conflicts:
            raise ValueError(f"--resume: {run.fold_dir(fold) / 'last.pt'} was trained with "
                             f"other settings: {'; '.join(conflicts)}: pass the saved values "
                             f"(--config {run.config_json}) or train into a new --run-dir")
        if context.is_main:
            resume_files.repair(run, fold, *restored)
    if context.is_main:
        fileio.write_json(run.config_json, cfg.as_dict())
    if not resume:
        return 0, []
    if restored is None:
        log.warning("--resume: %s does not exist; fold %d starts at epoch 0",
                    run.fold_dir(fold) / "last.pt", fold)
        return 0, []
    state, rows = restored
    _load_state(state, *objects)
    return state["epoch"] + 1, rows


def _train_fold(cfg: TrainConfig, fold: int, run: RunPaths, resume: bool,
                context: distributed.Context) -> dict:
    # Refuse a bad loss/head pair before reading the data.
    loss_fn = build_loss(cfg.loss, cfg.head, cfg.class_weights,
                         cls_weight=cfg.cls_weight if cfg.gate else None)
    train_set, val_set = fold_datasets(cfg, fold)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, head=cfg.head, encoder=cfg.encoder,
                        encoder_weights=cfg.encoder_weights,
                        background_prior=cfg.background_prior, input_scale=cfg.scale,
                        gate=cfg.gate).to(context.device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    per_epoch = max(1, len(train_set) // (cfg.batch_size * context.world_size))
    # The schedule spans every epoch; --max-steps only stops the run early (smoke runs).
    optimizer, scheduler = build_optimizer(cfg, model, per_epoch * cfg.epochs)
    scaler = torch.amp.GradScaler(
        "cuda", enabled=forward.amp_dtype(cfg.amp, context.device) == torch.float16)
    start_epoch, rows = _start(cfg, fold, run, (model, optimizer, scheduler, scaler), resume,
                               context)
    net = DistributedDataParallel(model) if context.distributed else model
    validated = [row for row in rows if "val_score" in row]
    best = max(validated, key=lambda row: row["val_score"], default=None)
    steps_done = sum(row["steps"] for row in rows)
    for epoch in tqdm(range(start_epoch, cfg.epochs), desc=f"fold {fold}", unit="epoch",
                      disable=cfg.quiet or not context.is_main or None):
        if cfg.max_steps and steps_done >= cfg.max_steps:
            break
        torch.manual_seed(cfg.seed * 100_003 + epoch)
        budget = cfg.max_steps - steps_done if cfg.max_steps else None
        row = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"]}
        row.update(train_one_epoch(net, make_loader(train_set, cfg, context, epoch, True),
                                   loss_fn, optimizer, scheduler, scaler, cfg, context, epoch,
                                   budget))
        steps_done += row["steps"]
        last = epoch == cfg.epochs - 1 or bool(cfg.max_steps and steps_done >= cfg.max_steps)
        if last or (epoch + 1) % cfg.val_every == 0:
            row.update(evaluate(net, make_loader(val_set, cfg, context, epoch, False), loss_fn,
                                cfg, context))
        rows.append(row)
        if "val_score" in row and (best is None or row["val_score"] > best["val_score"]):
            best = row
        if context.is_main:
            with stage("checkpoint"):
                resume_files.commit(run, fold, _state(model, optimizer, scheduler, scaler, cfg,
                                                      fold, row), rows, best and best["epoch"])
            log.info("%s", epoch_line(fold, cfg.epochs, row))
            if row["skipped"]:
                log.warning("skipped %d unreadable image(s) in epoch %d", row["skipped"], epoch)
        distributed.barrier(context)
    return best or {}


def epoch_line(fold: int, epochs: int, row: dict) -> str:
    """One epoch as one log line, so a redirected log shows that training goes on."""
    line = (f"fold {fold} epoch {row['epoch'] + 1}/{epochs}: loss {row['train_loss']:.4f}, "
            f"{row['images_per_s']:.1f} images/s, {row['seconds']:.0f} s")
    if "val_score" in row:
        line += (f"; validation score {row['val_score']:.4f} (all-empty "
                 f"{row['val_baseline']:.4f}, non-empty Dice {row['val_nonempty']:.4f})")
    return line


def _state(model, optimizer, scheduler, scaler, cfg: TrainConfig, fold: int, row: dict) -> dict:
    """The checkpoint dict of the epoch that ``row`` logs."""
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
            "epoch": row["epoch"], "fold": fold, "config": cfg.as_dict(), "metrics": row,
            "model_info": model_info(model).as_dict(), "code_version": code_version()}


def train_folds(cfg: TrainConfig, fold_ids: list[int], resume: bool = False) -> list[dict]:
    """Train each listed fold in turn; returns the best row of each."""
    context = distributed.setup(cfg.device)  # one process group for every fold
    try:
        return [train_fold(cfg, fold, resume=resume, context=context) for fold in fold_ids]
    finally:
        distributed.teardown(context)
