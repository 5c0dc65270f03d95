"""torchrun/DDP plumbing: process group from the environment, rank helpers, gathers."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    """Where this process stands: its rank, the world size and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def is_main_process() -> bool:
    """True unless this is a non-zero rank launched by torchrun (only rank 0 writes files)."""
    return int(os.environ.get("RANK", "0")) == 0


def setup(device: str = "auto") -> Context:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1), pick the device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    if use_cuda:
        chosen = torch.device("cuda", local_rank if world_size > 1 else 0)
        torch.cuda.set_device(chosen)
    else:
        chosen = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Context(rank, world_size, local_rank, chosen)


def teardown(context: Context) -> None:
    """Leave the process group."""
    if context.distributed and dist.is_initialized():
        dist.destroy_process_group()


def gather(obj: object, context: Context) -> list:
    """Every rank's ``obj`` in rank order (just ``[obj]`` without torchrun)."""
    if not context.distributed:
        return [obj]
    objects: list = [None] * context.world_size
    dist.all_gather_object(objects, obj)
    return objects


def barrier(context: Context) -> None:
    """Wait for every rank."""
    if context.distributed:
        dist.barrier()


def mean_across_ranks(value: float, weight: float, context: Context) -> float:
    """The weighted mean of a per-rank value over all ranks."""
    pairs = gather((value * weight, weight), context)
    total = sum(w for _, w in pairs)
    return sum(v for v, _ in pairs) / total if total else float("nan")
