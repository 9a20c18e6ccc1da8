"""Data-parallel evaluation on existing launchers.

``torchrun`` and ``accelerate launch`` start one process per device and set ``RANK``, ``WORLD_SIZE``
and ``LOCAL_RANK``. vlmbench then gives each rank every ``WORLD_SIZE``-th pending sample; each rank
writes its answers to its own cache shard; after a barrier rank 0 merges the shards into the cache and
writes the artifacts. The only collective is that barrier (gloo, so it works on CPUs and GPUs alike).
"""

from __future__ import annotations

import atexit
import datetime as dt
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def dist_info() -> DistInfo:
    """Read the launcher's environment (single process when it is absent)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        return DistInfo()
    if world <= 1:
        return DistInfo()
    return DistInfo(rank=rank, world_size=world, local_rank=local)


def init(info: DistInfo) -> None:
    """Join the launcher's process group (once per process). Model loading and evaluation can take
    hours on some ranks, so the timeout is generous; a rank that dies makes the others fail instead
    of waiting forever."""
    if not info.enabled:
        return
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=dt.timedelta(hours=24))
        atexit.register(_shutdown)


def barrier(info: DistInfo) -> None:
    if not info.enabled:
        return
    import torch.distributed as dist

    init(info)
    dist.barrier()


def _shutdown() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
