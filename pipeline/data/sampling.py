"""Which training images an epoch draws: every image once (``uniform``) or a ``balanced`` draw
in which defect-free images and each class come at set shares, with replacement; with
pseudo-labels, a ``MixedSampler`` puts pseudo-labelled test images at a share of the draws.

The draw of an epoch depends only on (seed, epoch); under torchrun each rank takes every
``world_size``-th index of it, so the processes together see one epoch's draw.
"""

from __future__ import annotations

import logging

import numpy as np
from torch.utils.data import Sampler

from pipeline.config import N_CLASSES

log = logging.getLogger(__name__)

SAMPLERS = {"uniform": "every image once per epoch, shuffled",
            "balanced": "defect-free images and each class drawn at set shares"}
GROUPS = ("defect-free", "class 1", "class 2", "class 3", "class 4")


def group_members(present: np.ndarray) -> list[np.ndarray]:
    """The image indices of each group: defect-free, then the images holding class 1..4
    (an image with two classes is in both); ``present``: ``(N, 4)`` bool."""
    present = np.asarray(present, dtype=bool)
    if present.ndim != 2 or present.shape[1] != N_CLASSES:
        raise ValueError(f"present must be (N, {N_CLASSES}) bool, got {present.shape}")
    return [np.flatnonzero(~present.any(axis=1)),
            *(np.flatnonzero(present[:, c]) for c in range(N_CLASSES))]


def effective_shares(members: list[np.ndarray], shares: tuple[float, ...]) -> np.ndarray:
    """The shares with those of empty groups spread over the others in proportion."""
    weights = np.array([s if len(m) else 0.0 for m, s in zip(members, shares)])
    if weights.sum() <= 0:
        raise ValueError("the balanced sampler has nothing to draw: every group with a share "
                         f"is empty (sizes {[len(m) for m in members]}, shares {list(shares)})")
    return weights / weights.sum()


def empty_groups(members: list[np.ndarray], shares: tuple[float, ...]) -> list[str]:
    """The names of the groups (``group_members``) that have a share but no image."""
    return [g for g, m, s in zip(GROUPS, members, shares) if s > 0 and not len(m)]


class BalancedSampler(Sampler[int]):
    """``num_samples`` draws per epoch: a group by its share, then an image of it uniformly."""

    def __init__(self, present: np.ndarray, shares: tuple[float, ...], seed: int = 0,
                 num_samples: int | None = None, rank: int = 0, world_size: int = 1,
                 warn: bool = True):
        self.members = group_members(present)
        self.shares = effective_shares(self.members, shares)
        empty = empty_groups(self.members, shares)
        if empty and warn:   # the trainer warns once per fold and builds its samplers quietly
            log.warning("balanced sampler: no training image in %s; their shares go to the "
                        "other groups", ", ".join(empty))
        self.total = len(present) if num_samples is None else num_samples
        self.seed, self.rank, self.world_size, self.epoch = seed, rank, world_size, 0

    def set_epoch(self, epoch: int) -> None:
        """Draw the given epoch's indices next (as DistributedSampler does)."""
        self.epoch = epoch

    def draw(self) -> np.ndarray:
        """Every index of this epoch's draw, all ranks together (empty groups have share 0,
        so they are never drawn)."""
        rng = np.random.default_rng([self.seed, self.epoch, 0xBA1])
        groups = rng.choice(len(self.members), size=self.total, p=self.shares)
        sizes = np.array([len(m) for m in self.members])
        offsets = np.floor(rng.random(self.total) * sizes[groups]).astype(np.int64)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        return np.concatenate(self.members)[starts[groups] + offsets]

    def __iter__(self):
        # every rank takes the same number of draws (the remainder is dropped, as
        # DistributedSampler(drop_last=True) does): unequal batch counts would hang DDP
        kept = self.draw()[:len(self) * self.world_size]
        return iter(kept[self.rank::self.world_size].tolist())

    def __len__(self) -> int:
        return self.total // self.world_size


class MixedSampler(Sampler[int]):
    """Indices into ``ConcatDataset([real, pseudo])``: each draw is a pseudo-labelled image
    (index ``n_real + k``) with probability ``share``, else the next index of ``real_sampler``
    (uniform or balanced, over the real images alone); as many draws as ``real_sampler``.

    Which draws are pseudo, and which pseudo image each takes (every one in turn, in an order
    shuffled per epoch), depend only on (seed, epoch); under torchrun each rank takes every
    ``world_size``-th draw of the epoch, so every rank has ``len(real_sampler)`` draws.
    """

    def __init__(self, real_sampler: Sampler[int], n_real: int, n_pseudo: int, share: float,
                 seed: int = 0, rank: int = 0, world_size: int = 1):
        if n_pseudo < 1 or not 0.0 < share < 1.0:
            raise ValueError(f"the mixed sampler needs pseudo images (got {n_pseudo}) and a "
                             f"share in (0, 1) (got {share})")
        self.real_sampler, self.n_real, self.n_pseudo, self.share = \
            real_sampler, n_real, n_pseudo, share
        self.seed, self.rank, self.world_size, self.epoch = seed, rank, world_size, 0

    def set_epoch(self, epoch: int) -> None:
        """Draw the given epoch's indices next (the real sampler's too)."""
        self.epoch = epoch
        if hasattr(self.real_sampler, "set_epoch"):
            self.real_sampler.set_epoch(epoch)

    def draw(self) -> tuple[np.ndarray, np.ndarray]:
        """``(is_pseudo, pick)`` of every draw of this epoch, all ranks together: whether the
        draw is pseudo, and then which pseudo image (0..n_pseudo-1; 0 where it is not)."""
        # two streams, so one process and N ranks (whose draws are a prefix of its) agree
        flags, order = (np.random.default_rng([self.seed, self.epoch, 0x95E, k]) for k in (0, 1))
        total = len(self) * self.world_size
        is_pseudo = flags.random(total) < self.share
        pick = np.zeros(total, dtype=np.int64)
        pick[is_pseudo] = np.resize(order.permutation(self.n_pseudo), int(is_pseudo.sum()))
        return is_pseudo, pick

    def __iter__(self):
        is_pseudo, pick = (a[self.rank::self.world_size] for a in self.draw())
        real = np.fromiter(self.real_sampler, dtype=np.int64, count=len(self))
        indices = np.empty(len(self), dtype=np.int64)
        indices[is_pseudo] = self.n_real + pick[is_pseudo]
        indices[~is_pseudo] = real[:int((~is_pseudo).sum())]
        return iter(indices.tolist())

    def __len__(self) -> int:
        return len(self.real_sampler)


def presence_table(rles, image_ids: list[str]) -> np.ndarray:
    """``(N, 4)`` bool: which classes each image holds, from its RLE table (no pixel decoded)."""
    if not image_ids:
        return np.zeros((0, N_CLASSES), dtype=bool)
    table = rles.loc[image_ids]
    return np.stack([table[c].fillna("").astype(str).str.len().to_numpy() > 0
                     for c in table.columns[:N_CLASSES]], axis=1)
