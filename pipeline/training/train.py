"""Training of one fold: train_one_epoch, validation, EMA, checkpoints, logs and curves."""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from pipeline import checkpoint, distributed, fileio
from pipeline.config import RunPaths, code_version, resolve_run_dir
from pipeline.data import sampling
from pipeline.data.dataset import SteelDataset, to_model_input
from pipeline.models import forward
from pipeline.models.losses import build_loss
from pipeline.models.registry import build_model, model_info
from pipeline.stages import stage
from pipeline.training import averaging, lock, selection, tensorboard
from pipeline.training.loaders import fold_datasets, make_loader
from pipeline.training.config import TrainConfig, resume_conflicts
from pipeline.training.optimizers import build_optimizer
from pipeline.training import resume as resume_files
from pipeline.training.validation import evaluate

log = logging.getLogger(__name__)


def train_one_epoch(model, loader, loss_fn, optimizer, scheduler, scaler, cfg: TrainConfig,
                    context: distributed.Context, epoch: int, step_budget: int | None,
                    ema=None, on_step=None) -> dict:
    """One pass over the loader; returns mean loss, images/s and skipped images. ``ema`` (an
    ``averaging.ema_model``) is updated after every optimizer step; ``on_step(loss, lr, k)``
    gets the batch loss and learning rate of the epoch's k-th step (k from 1) after it."""
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
            lr = optimizer.param_groups[0]["lr"]   # this step's; the scheduler moves it next
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            if ema is not None:
                ema.update_parameters(getattr(model, "module", model))
        steps += 1
        if on_step is not None:
            on_step(loss.item(), lr, steps)
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


def _load_state(state: dict, model, optimizer, scheduler, scaler, ema) -> None:
    """Put a ``last.pt`` state into the training objects."""
    model.load_state_dict(state.get("train_model", state["model"]))
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    if ema is not None:
        ema.load_state_dict(state["ema"])


def train_fold(cfg: TrainConfig, fold: int, resume: bool = False,
               context: distributed.Context | None = None) -> dict:
    """Train one fold; keeps ``best.pt`` (the validated epoch ``cfg.select`` ranks first, or
    the average of the top ``cfg.average_top_k``) and ``last.pt``; returns best's log row.

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
    loss_fn = build_loss(cfg.loss, cfg.head, cfg.class_weights, pos_weight=cfg.pos_weight,
                         dice_weight=cfg.dice_weight, pixel_weight=cfg.pixel_weight,
                         focal_gamma=cfg.focal_gamma,
                         cls_weight=cfg.cls_weight if cfg.gate else None)
    train_set, val_set = fold_datasets(cfg, fold)
    _check_focus(cfg, train_set, fold)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, head=cfg.head, encoder=cfg.encoder,
                        encoder_weights=cfg.encoder_weights,
                        background_prior=cfg.background_prior, input_scale=cfg.scale,
                        gate=cfg.gate).to(context.device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    ema = None if cfg.ema_decay is None else averaging.ema_model(model, cfg.ema_decay)
    per_epoch = max(1, len(train_set) // (cfg.batch_size * context.world_size))
    # The schedule spans every epoch; --max-steps only stops the run early (smoke runs).
    optimizer, scheduler = build_optimizer(cfg, model, per_epoch * cfg.epochs)
    scaler = torch.amp.GradScaler(
        "cuda", enabled=forward.amp_dtype(cfg.amp, context.device) == torch.float16)
    start_epoch, rows = _start(cfg, fold, run, (model, optimizer, scheduler, scaler, ema),
                               resume, context)
    net = DistributedDataParallel(model) if context.distributed else model
    validated = net if ema is None else ema.module    # the model that is scored and saved
    steps_done = sum(row["steps"] for row in rows)
    board = tensorboard.for_fold(cfg, run, fold, steps_done, context, val_set)
    for epoch in tqdm(range(start_epoch, cfg.epochs), desc=f"fold {fold}", unit="epoch",
                      disable=cfg.quiet or not context.is_main or None):
        if cfg.max_steps and steps_done >= cfg.max_steps:
            break
        torch.manual_seed(cfg.seed * 100_003 + epoch)
        budget = cfg.max_steps - steps_done if cfg.max_steps else None
        row = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"]}
        row.update(train_one_epoch(net, make_loader(train_set, cfg, context, epoch, True),
                                   loss_fn, optimizer, scheduler, scaler, cfg, context, epoch,
                                   budget, ema, board.on_step(steps_done)))
        steps_done += row["steps"]
        last = epoch == cfg.epochs - 1 or bool(cfg.max_steps and steps_done >= cfg.max_steps)
        if last or (epoch + 1) % cfg.val_every == 0:
            row.update(evaluate(validated, make_loader(val_set, cfg, context, epoch, False),
                                loss_fn, cfg, context))
        rows.append(row)
        best = selection.best_row(rows, cfg.select)
        if context.is_main:
            board.epoch(row, steps_done, validated)   # flushed before the epoch's commit
            with stage("checkpoint"):
                _commit(cfg, fold, run, rows, best,
                        _state(model, optimizer, scheduler, scaler, cfg, fold, row, ema,
                               train_set.image_ids))
            log.info("%s", epoch_line(fold, cfg.epochs, row))
            if row["skipped"]:
                log.warning("skipped %d unreadable image(s) in epoch %d", row["skipped"], epoch)
        distributed.barrier(context)
    board.close()
    best = selection.best_row(rows, cfg.select)
    if cfg.average_top_k > 1 and best is not None:
        return _average_top(cfg, fold, run, rows, validated, val_set, loss_fn, context)
    return best or {}


def _commit(cfg: TrainConfig, fold: int, run: RunPaths, rows: list[dict], best: dict | None,
            state: dict) -> None:
    """The epoch's commit point (``last.pt``, logs); with ``--average-top-k`` its weights are
    kept before it and the epochs it displaced from the top k are removed only after it.
    Diverged weights or a NaN validation loss stop training here: nothing of the epoch is
    saved, so no such checkpoint ever becomes ``best.pt`` or ``last.pt``."""
    bad = checkpoint.non_finite(state["model"])
    if bad or not math.isfinite(rows[-1].get("val_loss", 0.0)):
        what = f"weight {bad} holds NaN or infinite values" if bad else "the validation loss " \
            f"is {rows[-1]['val_loss']}"
        raise FloatingPointError(f"fold {fold} epoch {rows[-1]['epoch']}: {what} (training "
                                 "diverged): nothing was saved for this epoch; lower --lr")
    if cfg.average_top_k == 1:
        resume_files.commit(run, fold, state, rows, best and best["epoch"])
        return
    top = selection.top_epochs(rows, cfg.select, cfg.average_top_k)
    if "val_loss" in rows[-1]:
        averaging.save_top(run.fold_dir(fold), rows[-1]["epoch"], state["model"], top)
    resume_files.commit(run, fold, state, rows, best and best["epoch"])
    averaging.prune_top(run.fold_dir(fold), top)


def _check_focus(cfg: TrainConfig, train_set: SteelDataset, fold: int) -> None:
    """Warn when --crop-focus or --sampler balanced has no defect to work with (the
    documented fallback: random crops, shares spread over the groups that exist)."""
    present = sampling.presence_table(train_set.rles, train_set.image_ids)
    if cfg.crop_focus > 0 and not present.any():
        log.warning("--crop-focus %s: the training images of fold %d hold no defect; every "
                    "crop is placed at random", cfg.crop_focus, fold)
    empty = (sampling.empty_groups(sampling.group_members(present), cfg.sample_shares)
             if cfg.sampler == "balanced" else [])
    if empty:
        log.warning("--sampler balanced: no training image of fold %d in %s; their shares go "
                    "to the other groups", fold, ", ".join(empty))


def _average_top(cfg: TrainConfig, fold: int, run: RunPaths, rows: list[dict], validated,
                 val_set: SteelDataset, loss_fn, context: distributed.Context) -> dict:
    """``best.pt`` <- the mean of the top-k validated epochs' weights, validated once more."""
    top = selection.top_epochs(rows, cfg.select, cfg.average_top_k)
    if context.is_main:   # a run killed after its last commit resumes straight to here
        averaging.prune_top(run.fold_dir(fold), top)
    distributed.barrier(context)   # rank 0 wrote the last of the kept weights
    averaged = copy.deepcopy(getattr(validated, "module", validated))
    averaged.load_state_dict(averaging.average_states(averaging.load_top(run.fold_dir(fold),
                                                                         top)))
    row = {"epoch": top[0], "averaged_epochs": top}
    row.update(evaluate(averaged, make_loader(val_set, cfg, context, cfg.epochs, False),
                        loss_fn, cfg, context))
    if context.is_main:
        best = resume_files.best_state(checkpoint.load(run.fold_dir(fold) / "last.pt"))
        for key in ("history", "best_epoch", "optimizer", "scheduler", "scaler"):
            best.pop(key, None)
        checkpoint.save(run.fold_dir(fold) / "best.pt", {
            **best, "model": averaged.state_dict(), "epoch": top[0], "metrics": row})
        log.info("fold %d: best.pt averages epochs %s: validation score %.4f, tuned %.4f "
                 "(all-empty %.4f)", fold, ", ".join(str(e + 1) for e in top),
                 row["val_score"], row["val_tuned"], row["val_baseline"])
    distributed.barrier(context)
    return row


def epoch_line(fold: int, epochs: int, row: dict) -> str:
    """One epoch as one log line, so a redirected log shows that training goes on."""
    line = (f"fold {fold} epoch {row['epoch'] + 1}/{epochs}: loss {row['train_loss']:.4f}, "
            f"{row['images_per_s']:.1f} images/s, {row['seconds']:.0f} s")
    if "val_score" in row:
        line += (f"; validation score {row['val_score']:.4f}, tuned {row['val_tuned']:.4f} "
                 f"(all-empty {row['val_baseline']:.4f}, non-empty Dice "
                 f"{row['val_nonempty']:.4f}, tuned {row['val_tuned_nonempty']:.4f})")
    return line


def _state(model, optimizer, scheduler, scaler, cfg: TrainConfig, fold: int, row: dict,
           ema=None, train_ids: list[str] = ()) -> dict:
    """The checkpoint dict of the epoch that ``row`` logs: ``model`` holds the weights that
    are validated (the EMA's, with ``--ema-decay``; then ``train_model`` and ``ema`` hold the
    training weights and the average's state, for --resume); ``trained_on`` the fold and the
    ids of the labelled images it trains on (pseudo-labelled test images aside), which ``cv``
    checks against the images it scores."""
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
             "epoch": row["epoch"], "fold": fold, "config": cfg.as_dict(), "metrics": row,
             "model_info": model_info(model).as_dict(), "code_version": code_version(),
             "trained_on": {"fold": fold, "image_ids": sorted(train_ids)}}
    if ema is not None:
        state.update(train_model=state["model"], ema=ema.state_dict(),
                     model=ema.module.state_dict())
    return state


def train_folds(cfg: TrainConfig, fold_ids: list[int], resume: bool = False) -> list[dict]:
    """Train each listed fold in turn; returns the best row of each."""
    context = distributed.setup(cfg.device)  # one process group for every fold
    try:
        return [train_fold(cfg, fold, resume=resume, context=context) for fold in fold_ids]
    finally:
        distributed.teardown(context)
