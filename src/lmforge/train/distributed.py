"""Process-group setup for `torchrun` (DDP or FSDP2), and helpers that are no-ops in one process."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group that `torchrun` describes in the environment (WORLD_SIZE > 1).

    nccl on CUDA, gloo on CPU. A single process (no WORLD_SIZE) gets rank 0 of 1 and no group.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend)
    return DistInfo(rank=rank, world_size=world, local_rank=local)


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def comm_device() -> torch.device:
    """Where collective tensors must live: the current GPU for nccl, the CPU for gloo."""
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum `t` over ranks (returned on t's device); identity in one process."""
    if not (dist.is_available() and dist.is_initialized()):
        return t
    c = t.to(comm_device())
    dist.all_reduce(c)
    return c.to(t.device)


def all_reduce_max(t: torch.Tensor) -> torch.Tensor:
    """Element-wise max of `t` over ranks; identity in one process."""
    if not (dist.is_available() and dist.is_initialized()):
        return t
    c = t.to(comm_device())
    dist.all_reduce(c, op=dist.ReduceOp.MAX)
    return c.to(t.device)


def destroy() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
