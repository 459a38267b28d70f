"""Writes checkpoints in the foreground or in a background thread, then moves the pointers.

Asynchronous mode: the caller pays only for a CPU copy of the weights and optimiser state (the
"stall"); serialising, fsync, checksums, rename, pointers and pruning happen in a thread while
training continues. At most one write is in flight: the next save, a rollback and the end of
training wait for it, and an error in the thread is raised there. The on-disk protocol is the
same as the synchronous one (step-N.tmp/, manifest last, rename), so a crash mid-write is safe.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from lmforge.train import checkpoint as ck


def cpu_copy(obj: Any) -> Any:
    """Deep copy of nested dicts/lists with every tensor cloned to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(cpu_copy(v) for v in obj)
    return obj


def cpu_snapshot(model: nn.Module) -> nn.Module:
    """A CPU copy of a GPT (tied weights stay tied, so safetensors dedups them as for the original)."""
    from lmforge.model import GPT

    with torch.device("meta"):
        snap = GPT(model.cfg)
    snap.load_state_dict(cpu_copy(model.state_dict()), assign=True)
    if model.cfg.tie_embeddings:
        snap.lm_head.weight = snap.wte.weight
    return snap


class CheckpointWriter:
    def __init__(self, root: Path, keep_last: int, *, asynchronous: bool = False) -> None:
        self.root, self.keep_last, self.asynchronous = Path(root), keep_last, asynchronous
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.last_stall = 0.0
        """Seconds the training loop waited for the last save (copy + any previous write)."""
        self.last_write = 0.0
        """Seconds the last write itself took (in the thread when asynchronous)."""

    def save(self, step: int, model: nn.Module, optim: dict[str, Any], state: dict[str, Any], *,
             is_best: bool, fresh: bool = False) -> Path:
        """Write checkpoint `step`; returns its final path (complete once `wait()` returns).

        fresh: `model`/`optim` are already private CPU copies (FSDP gather), no snapshot needed."""
        t0 = time.perf_counter()
        self.wait()
        if not self.asynchronous:
            self._write(step, model, optim, state, is_best)
            self.last_stall = time.perf_counter() - t0
            return self.root / ck.step_dir_name(step)
        if not fresh:
            model, optim = cpu_snapshot(model), cpu_copy(optim)
        self._thread = threading.Thread(target=self._run, args=(step, model, optim, state, is_best),
                                        name="lmforge-ckpt", daemon=False)
        self._thread.start()
        self.last_stall = time.perf_counter() - t0
        return self.root / ck.step_dir_name(step)

    def _run(self, *args: Any) -> None:
        try:
            self._write(*args)
        except BaseException as e:  # surfaced by wait() in the training thread
            self._error = e

    def _write(self, step: int, model: nn.Module, optim: dict[str, Any], state: dict[str, Any], is_best: bool) -> None:
        t0 = time.perf_counter()
        path = ck.write_checkpoint(self.root, step, model_state=model, optim_state=optim, state=state)
        ck.set_pointer(self.root, "latest", path)
        if is_best:
            ck.set_pointer(self.root, "best", path)
        ck.prune(self.root, self.keep_last)
        self.last_write = time.perf_counter() - t0

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            err, self._error = self._error, None
            raise ck.CheckpointError(f"writing a checkpoint in {self.root} failed: {err}") from err
