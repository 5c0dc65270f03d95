"""Optimizers by name (the registry ``--optimizer`` takes its choices from) and the learning-rate
schedule: linear warm-up, then cosine decay over every step of the run."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

# name -> (parameters, lr, weight_decay) -> optimizer
OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adamw": lambda params, lr, weight_decay: torch.optim.AdamW(
        params, lr=lr, weight_decay=weight_decay),
    "adam": lambda params, lr, weight_decay: torch.optim.Adam(
        params, lr=lr, weight_decay=weight_decay),
    "sgd": lambda params, lr, weight_decay: torch.optim.SGD(
        params, lr=lr, momentum=0.9, weight_decay=weight_decay, nesterov=True),
}


def build_optimizer(cfg, model: torch.nn.Module, steps_total: int):
    """The optimizer of ``cfg`` (a TrainConfig) and a linear warm-up + cosine LR schedule over
    ``steps_total`` steps."""
    if cfg.optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown --optimizer {cfg.optimizer!r}; valid: "
                         f"{', '.join(OPTIMIZERS)}")
    optimizer = OPTIMIZERS[cfg.optimizer](model.parameters(), cfg.lr, cfg.weight_decay)
    warmup = max(1, round(cfg.warmup_epochs * steps_total / max(cfg.epochs, 1)))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps_total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
