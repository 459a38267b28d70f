"""Process-group setup for `torchrun` (DDP or FSDP2), and helpers that are no-ops in one process."""

from __future__ import annotations

import datetime
import os
import signal
import time
import uuid
from dataclasses import dataclass

import torch
import torch.distributed as dist

from lmforge.errors import LmforgeError


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
        store = attempt_store(rank, world, timeout or 1800.0)
        if store is not None:
            kw.update(store=store, rank=rank, world_size=world)
        dist.init_process_group(backend=backend, **kw)
    return DistInfo(rank=rank, world_size=world, local_rank=local)


ATTEMPT_KEY = "lmforge/attempt"


def attempt_store(rank: int, world: int, timeout: float) -> dist.Store | None:
    """The store this start of the worker group builds its process group on: under torchrun, a
    namespace of torchrun's store that no earlier start of the group wrote to. None elsewhere.

    Why: torchrun (c10d rendezvous, PyTorch >= 2.5) hands every restart of the group the same
    TCPStore, its agent's, still holding the keys of the group it replaced, and the default group's
    keys are the same each time. gloo's full-mesh connect then reads a dead rank's address: the
    restarted group fails ("connectFullMesh failed ... Connection refused") or waits on it until
    the timeout (a hang), depending on which rank gets there first. TORCHELASTIC_RESTART_COUNT
    cannot name the attempt: each node's agent counts its own restarts, so nodes can disagree.
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None  # env:// starts a fresh store in rank 0 (torchrun with its store sharing off)
    base = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                         timeout=datetime.timedelta(seconds=timeout))
    return dist.PrefixStore(f"{ATTEMPT_KEY}/{agree_attempt(base, rank, world, timeout)}", base)


def agree_attempt(store: dist.Store, rank: int, world: int, timeout: float) -> str:
    """A name for this start of the group that all its ranks agree on, whatever earlier starts
    left in `store`: rank 0 draws a fresh one and publishes it; every other rank acknowledges the
    name it reads with a token of its own and takes that name only when rank 0 answers the token.
    Only a live rank 0 answers, so a name left by an earlier (dead) group is never taken; a rank
    that read one sees the fresh name replace it and acknowledges that instead."""
    try:
        if rank == 0:
            name = uuid.uuid4().hex
            store.set(ATTEMPT_KEY, name)
            for r in range(1, world):
                ack = f"{ATTEMPT_KEY}/{name}/ack/{r}"
                store.wait([ack])
                store.set(f"{ATTEMPT_KEY}/{name}/go/{store.get(ack).decode()}", b"1")
            return name
        token, acked, deadline = uuid.uuid4().hex, None, time.monotonic() + timeout
        while time.monotonic() < deadline:
            name = store.get(ATTEMPT_KEY).decode()  # waits until rank 0 (of some start) has set it
            if name != acked:
                store.set(f"{ATTEMPT_KEY}/{name}/ack/{rank}", token)
                acked = name
            if store.check([f"{ATTEMPT_KEY}/{name}/go/{token}"]):
                return name
            time.sleep(0.02)
    except dist.DistStoreError as e:
        raise LmforgeError(f"rank {rank}: the other ranks did not join the process group within "
                           f"train.collective_timeout={timeout:g} s ({str(e).splitlines()[0][:160]})") from None
    raise LmforgeError(f"rank {rank}: rank 0 did not admit this rank to the process group within "
                       f"train.collective_timeout={timeout:g} s")


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
