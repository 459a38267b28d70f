"""Process-group setup for `torchrun` (DDP or FSDP2), and helpers that are no-ops in one process."""

from __future__ import annotations

import datetime
import os
import signal
import time
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


def init_distributed(device_type: str, timeout: float | None = None) -> DistInfo:
    """Join the process group that `torchrun` describes in the environment (WORLD_SIZE > 1).

    nccl on CUDA, gloo on CPU. A single process (no WORLD_SIZE) gets rank 0 of 1 and no group.
    timeout: seconds a collective waits for the other ranks (`train.collective_timeout`); a rank
    that hung or died then makes the others fail with a message instead of waiting forever.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local)
        kw = {"timeout": datetime.timedelta(seconds=timeout)} if timeout else {}
        dist.init_process_group(backend=backend, **kw)
    return DistInfo(rank=rank, world_size=world, local_rank=local)


def restarted() -> int:
    """How many times torchrun (`--max-restarts`) restarted this worker group (0 on the first run)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)


def lost_peer(e: BaseException) -> bool:
    """A collective failed because another rank hung (timeout) or died (connection closed)."""
    text = str(e).lower()
    return dist.is_available() and dist.is_initialized() and any(
        k in text for k in ("timed out", "timeout", "connection closed", "connection reset", "broken pipe"))


FAULT_ENV = "LMFORGE_TEST_FAULT"
"""Test-only fault injection: `kill:RANK:STEP` (SIGKILL that rank before optimiser step STEP) or
`hang:RANK:STEP` (that rank sleeps forever there); only in the first run of a torchrun group."""


def inject_fault(rank: int, step: int) -> None:
    spec = os.environ.get(FAULT_ENV)
    if not spec or restarted():
        return
    what, r, s = spec.split(":")
    if int(r) != rank or int(s) != step:
        return
    if what == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    while what == "hang":
        time.sleep(3600)


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
