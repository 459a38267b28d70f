"""Writes checkpoints in the foreground or in a background thread, then moves the pointers.

Asynchronous mode: the caller pays only for a CPU copy of the weights and optimiser state (the
"stall"; into host buffers reused from one save to the next, see `Staging`); serialising, fsync,
checksums, rename, pointers and pruning happen in a thread while training continues. At most one
write is in flight: the next save, a rollback and the end of training wait for it, and an error in
the thread is raised there. The on-disk protocol is the same as the synchronous one (<name>.tmp/,
manifest last, rename), so a crash mid-write is safe.

Two kinds (see checkpoint.py): `save` writes a full checkpoint (`step-N/`, moves `latest`),
`save_weights` a weights-only one (`weights-N/`, no optimiser: about a third of the bytes and of
the copy). Frozen parameters (requires_grad=False) go to one shared content-addressed file; while
they keep their storage and version counter, later saves neither copy nor rewrite them.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from lmforge import checkpoint as ck
from lmforge.io import free_bytes, human_bytes, out_of_space


def cpu_copy(obj: Any) -> Any:
    """Deep copy of nested dicts/lists with every tensor cloned to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(cpu_copy(v) for v in obj)
    return obj


class Staging:
    """Host buffers reused by every asynchronous save: copying into memory that is already mapped is
    several times faster than allocating it afresh (page faults on every save), and the buffers are
    pinned when the source is on a GPU. A buffer is reused only after the write that read it has
    finished (`CheckpointWriter.save` waits for the previous write first). The price: host memory
    the size of one full checkpoint stays allocated while the writer lives."""

    def __init__(self) -> None:
        self.buffers: dict[tuple, torch.Tensor] = {}
        self.from_gpu = False

    def copy(self, obj: Any, path: tuple = (), memo: dict[tuple, torch.Tensor] | None = None) -> Any:
        """Like `cpu_copy`, into the buffers; a tensor seen twice (tied weights) is copied once."""
        memo = {} if memo is None else memo
        if isinstance(obj, torch.Tensor):
            same = (obj.untyped_storage().data_ptr(), obj.storage_offset(), tuple(obj.shape), obj.stride(), obj.dtype)
            if obj.numel() and same in memo:
                return memo[same]
            src = obj.detach()
            buf = self.buffers.get(path)
            if buf is None or buf.shape != src.shape or buf.dtype != src.dtype:
                buf = torch.empty(src.shape, dtype=src.dtype, pin_memory=src.is_cuda)
                self.buffers[path] = buf
            buf.copy_(src, non_blocking=src.is_cuda)
            self.from_gpu |= src.is_cuda
            memo[same] = buf
            return buf
        if isinstance(obj, dict):
            return {k: self.copy(v, path + (k,), memo) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return type(obj)(self.copy(v, path + (i,), memo) for i, v in enumerate(obj))
        return obj

    def ready(self) -> None:
        """Wait for the non-blocking device-to-host copies before another thread reads the buffers."""
        if self.from_gpu:
            torch.cuda.synchronize()
            self.from_gpu = False


def cpu_snapshot(model: nn.Module, share: frozenset[str] | set[str] = frozenset(),
                 staging: Staging | None = None) -> nn.Module:
    """A CPU copy of a GPT (tied weights stay tied, so safetensors dedups them as for the original).

    share: names whose tensors are referenced, not copied (frozen ones: they do not change); the
    requires_grad flags are carried over, so the copy knows which parameters are frozen.
    staging: copy into its reusable buffers instead of fresh memory."""
    from lmforge.model import GPT

    with torch.device("meta"):
        snap = GPT(model.cfg)
    sd = model.state_dict()
    memo: dict[tuple, torch.Tensor] = {}
    copy = (lambda k, v: staging.copy(v, ("model", k), memo)) if staging is not None else (lambda k, v: cpu_copy(v))
    snap.load_state_dict({k: v.detach() if k in share else copy(k, v) for k, v in sd.items()}, assign=True)
    return ck.mirror_model(snap, model)


def _frozen_key(model: nn.Module, names: list[str]) -> tuple:
    """Identity of the frozen tensors: storage address and in-place version counter of each."""
    params = dict(model.named_parameters(remove_duplicate=False))
    return tuple((n, params[n].data_ptr(), params[n]._version, tuple(params[n].shape), params[n].dtype,
                  str(params[n].device)) for n in names)


@dataclass
class _Job:
    step: int
    model: nn.Module
    optim: dict[str, Any] | None
    """None = a weights-only checkpoint."""
    state: dict[str, Any]
    is_best: bool
    frozen_names: list[str]
    frozen_ref: dict[str, Any] | None
    """Reference to a frozen file already on disk (then its tensors are neither copied nor written)."""
    frozen_key: tuple | None
    keep_light: int = 0


class CheckpointWriter:
    def __init__(self, root: Path, keep_last: int, *, asynchronous: bool = False) -> None:
        self.root, self.keep_last, self.asynchronous = Path(root), keep_last, asynchronous
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._frozen: tuple[tuple, dict[str, Any]] | None = None  # (key, reference) of the last frozen file
        self._staging = Staging()
        self.last_stall = 0.0
        """Seconds the training loop waited for the last save (copy + any previous write)."""
        self.last_write = 0.0
        """Seconds the last write itself took (in the thread when asynchronous)."""
        self.last_bytes = 0
        """Bytes the last write put on disk (its files, plus the frozen file when it was written)."""

    def save(self, step: int, model: nn.Module, optim: dict[str, Any], state: dict[str, Any], *,
             is_best: bool, fresh: bool = False) -> Path:
        """Write full checkpoint `step`; returns its final path (complete once `wait()` returns).

        fresh: `model`/`optim` are already private CPU copies (FSDP gather), no snapshot needed."""
        return self._submit(step, model, optim, state, is_best=is_best, fresh=fresh)

    def save_weights(self, step: int, model: nn.Module, state: dict[str, Any], *, keep_last: int,
                     is_best: bool, fresh: bool = False) -> Path:
        """Write weights-only checkpoint `weights-N/` (moves `newest`, and `best` when is_best; never
        `latest`); keeps the newest `keep_last` weights-only checkpoints."""
        return self._submit(step, model, None, state, is_best=is_best, fresh=fresh, keep_light=keep_last)

    def _submit(self, step: int, model: nn.Module, optim: dict[str, Any] | None, state: dict[str, Any], *,
                is_best: bool, fresh: bool, keep_light: int = 0) -> Path:
        t0 = time.perf_counter()
        self.wait()
        names = ck.frozen_param_names(model)
        key = _frozen_key(model, names) if names and not fresh else None  # fresh copies: no stable identity
        ref = None
        if key is not None and self._frozen is not None and self._frozen[0] == key:
            if (self.root / self._frozen[1]["file"]).is_file():
                ref = self._frozen[1]
        job = _Job(step, model, optim, state, is_best, names, ref, key, keep_light)
        final = self.root / ck.step_dir_name(step, ck.FULL if optim is not None else ck.WEIGHTS)
        if not self.asynchronous:
            self._write(job)
            self.last_stall = time.perf_counter() - t0
            return final
        if not fresh:
            # frozen tensors are shared, not copied, when already on disk or on the CPU (they do not change)
            on_cpu = all(p.device.type == "cpu" for n, p in model.named_parameters() if not p.requires_grad)
            job.model = cpu_snapshot(model, set(names) if ref is not None or on_cpu else set(), self._staging)
            job.optim = self._staging.copy(optim, ("optim",)) if optim is not None else None
            self._staging.ready()
        self._thread = threading.Thread(target=self._run, args=(job,), name="lmforge-ckpt", daemon=False)
        self._thread.start()
        self.last_stall = time.perf_counter() - t0
        return final

    def _run(self, job: _Job) -> None:
        try:
            self._write(job)
        except BaseException as e:  # surfaced by wait() in the training thread
            self._error = e

    def _write(self, job: _Job) -> None:
        try:
            self._write_job(job)
        except OSError as e:
            if not out_of_space(e):
                raise
            raise ck.CheckpointError(
                f"out of disk space in {self.root} while saving step {job.step} ({e.filename or 'a pointer'}): "
                f"{human_bytes(free_bytes(self.root))} free. The last complete checkpoint is intact: free space, "
                f"then resume with --resume auto") from None

    def _write_job(self, job: _Job) -> None:
        t0 = time.perf_counter()
        ref, nbytes = job.frozen_ref, 0
        if job.frozen_names and ref is None:
            ref, wrote = ck.save_frozen(self.root, job.model, job.frozen_names)
            nbytes += ref["bytes"] if wrote else 0
            if job.frozen_key is not None:
                self._frozen = (job.frozen_key, ref)
        path = ck.write_checkpoint(self.root, job.step, model_state=job.model, optim_state=job.optim,
                                   state=job.state, frozen=ref)
        nbytes += sum(f.stat().st_size for f in path.iterdir() if f.is_file())
        if job.optim is not None:
            ck.set_pointer(self.root, "latest", path)
        ck.set_pointer(self.root, "newest", path)
        if job.is_best:
            ck.set_pointer(self.root, "best", path)
        if job.optim is not None:
            ck.prune(self.root, self.keep_last)
        else:
            ck.prune_light(self.root, job.keep_light, job.step)
        self.last_write, self.last_bytes = time.perf_counter() - t0, nbytes

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            err, self._error = self._error, None
            raise ck.CheckpointError(f"writing a checkpoint in {self.root} failed: {err}") from err
