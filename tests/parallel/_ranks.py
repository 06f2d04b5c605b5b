"""Rank functions for the multi-process tests (importable by name in spawned processes)."""

from __future__ import annotations

import torch
import torch.distributed as dist


def all_reduce_rank(rank: int, world_size: int, scale: float) -> float:
    value = torch.tensor([float(rank + 1) * scale])
    dist.all_reduce(value)
    return float(value)


def fail_on_rank_one(rank: int, world_size: int) -> int:
    if rank == 1:
        raise ValueError("rank one is broken")
    dist.barrier()  # rank 0 waits here for a rank that never comes
    return rank


def die_on_rank_one(rank: int, world_size: int) -> int:
    import os

    if rank == 1:
        os._exit(3)
    dist.barrier()
    return rank
