"""Stage 4 entry point and the thin training loop.

    summary = train(cfg, run_dir, resume="auto")

`train` reads RUN_DIR/tokenizer and RUN_DIR/tokens, builds the model, optimiser and loaders
(`lmforge.train.build`), restores a checkpoint when asked, and runs `Trainer.fit`: fetch the
micro-batches, one `train_step`, then the callbacks (anomaly policy, logging, evaluation,
checkpointing). Everything else lives in those pieces.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn

from lmforge import checkpoint as ck
from lmforge.errors import LmforgeError
from lmforge.train.callbacks.base import Callback
from lmforge.train.ckpt_writer import CheckpointWriter
from lmforge.train.distributed import all_reduce_max, all_reduce_sum, barrier, inject_fault
from lmforge.train.optim import lr_at, set_lr
from lmforge.train.rng import get_rng_state, set_rng_state
from lmforge.train.state_io import gather_for_save, load_model_and_optimizer
from lmforge.train.step import StepResult, StepSettings, train_step

if TYPE_CHECKING:
    from lmforge.config import Config

log = logging.getLogger(__name__)


@dataclass
class TrainState:
    step: int = 0
    """Optimiser steps taken (including skipped ones)."""
    tokens_seen: int = 0
    """Input tokens consumed, all processes."""
    train_time: float = 0.0
    """Seconds spent in the loop, summed over resumed runs."""
    val_loss: float | None = None
    best_val_loss: float | None = None
    bad_steps: int = 0
    """Steps whose loss or gradient was NaN/Inf."""
    consecutive_bad: int = 0
    last_loss: float | None = None
    val_step: int = -1
    """Step of the last evaluation."""
    ckpt_step: int = -1
    """Step of the last checkpoint."""


class Trainer:
    """The loop. Built by `lmforge.train.build.build_trainer`; owns no construction logic."""

    def __init__(self, *, cfg: Config, run_dir: Path, model: nn.Module, raw_model: nn.Module,
                 optimizer: torch.optim.Optimizer, settings: StepSettings, train_loader: Any,
                 make_val_loader: Any, writer: Any, callbacks: list[Callback], rank: int = 0,
                 world_size: int = 1, tokens_per_step: int, total_steps: int | None, data_fingerprint: str,
                 peak_flops: float = 0.0, val_bytes_per_token: float = 0.0,
                 eval_sets: dict[str, Any] | None = None) -> None:
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.model, self.raw_model, self.optimizer, self.settings = model, raw_model, optimizer, settings
        self.train_loader, self.make_val_loader = train_loader, make_val_loader
        self.writer, self.callbacks = writer, callbacks
        self.rank, self.world_size = rank, world_size
        self.tokens_per_step, self.total_steps = tokens_per_step, total_steps
        self.data_fingerprint, self.peak_flops = data_fingerprint, peak_flops
        self.val_bytes_per_token = val_bytes_per_token
        self.eval_sets = dict(eval_sets or {})
        """Named held-out sets (`eval.sets`): name -> factory of a fresh loader (with `bytes_per_token`)."""
        self.val_losses: dict[str, float] = {}
        """Loss per evaluated set at the last evaluation (`split` = the run's own validation split)."""
        self.ckpt_root = self.run_dir / "checkpoints"
        self.ckpt_writer = CheckpointWriter(self.ckpt_root, cfg.train.keep_last,
                                            asynchronous=cfg.train.async_checkpoint)
        self.state = TrainState()
        self.init_source: dict[str, Any] | None = None  # train.init_from: what the weights started from
        self.stop_reason: str | None = None
        self.stop_requested: str | None = None
        self.last_ckpt: Path | None = None
        self.tokenizer_fingerprint: str | None = None
        """Fingerprint of the tokenizer the token shards were made with (set by build_trainer)."""
        self._it = iter(train_loader)
        self._t_start = time.time()
        self.clock = 0.0
        """Training seconds, agreed by all ranks at the start of each step."""

    # ---------------------------------------------------------------- data
    def next_batch(self) -> Any:
        try:
            return next(self._it)
        except StopIteration:  # a loader that ends at each epoch boundary: start the next epoch
            self._it = iter(self.train_loader)
            return next(self._it)

    @property
    def epoch(self) -> float:
        return float(getattr(self.train_loader, "epoch", 0.0))

    # ---------------------------------------------------------------- budgets and schedule
    def elapsed(self) -> float:
        return self.state.train_time + (time.time() - self._t_start)

    def sync(self) -> None:
        """Once per step, before it: agree on the clock and on stop requests across ranks, so a time
        budget, a time-based schedule or a signal seen by one rank stops every rank at the same step."""
        self.clock = self.elapsed()
        if self.world_size > 1:
            flags = torch.tensor([self.clock, 1.0 if self.stop_requested else 0.0], dtype=torch.float64)
            self.clock, stop = all_reduce_max(flags).tolist()
            if stop and not self.stop_requested:
                self.stop_requested = "SIGTERM"  # another rank got the signal

    def horizon(self) -> int | None:
        """The step the run will end at: the step budget, or, when a time budget will end it sooner,
        the step the speed so far predicts; None when no budget bounds the run."""
        t, step = self.cfg.train, self.state.step
        total = self.total_steps
        if t.max_time:
            frac = min(1.0, self.clock / t.max_time)
            predicted = max(step + 1, int(step / frac)) if frac > 0 and step > 0 else None
            if predicted is not None and (total is None or predicted < total):
                total = predicted
        return total

    def lr(self) -> float:
        """The schedule's rate for the coming step, over the `horizon` (so the decay still finishes
        under a time budget; such runs are not bitwise reproducible, as wall time never is)."""
        total = self.horizon()
        return lr_at(self.state.step, self.cfg.train, total if total is not None else 10**9)

    def budget_reached(self) -> str | None:
        t, s = self.cfg.train, self.state
        if t.max_steps and s.step >= t.max_steps:
            return "max_steps"
        if t.max_tokens and s.tokens_seen >= t.max_tokens:
            return "max_tokens"
        if t.max_epochs and self.epoch >= t.max_epochs:
            return "max_epochs"
        if t.max_time and self.clock >= t.max_time:
            return "max_time"
        return None

    # ---------------------------------------------------------------- the loop
    def fit(self) -> dict[str, Any]:
        self._t_start = time.time()
        for cb in self.callbacks:
            cb.pre_train(self)
        with _StopOnSignal(self):
            while self.stop_reason is None:
                self.sync()
                self.stop_reason = self.budget_reached() or self.stop_requested
                if self.stop_reason:
                    break
                self.run_one_step()
        for cb in self.callbacks:
            cb.post_train(self)
        self.ckpt_writer.wait()
        return self.summary()

    def run_one_step(self) -> StepResult:
        inject_fault(self.rank, self.state.step + 1)  # no-op unless a test sets LMFORGE_TEST_FAULT
        set_lr(self.optimizer, self.lr())
        batches = [self.next_batch() for _ in range(self.cfg.train.grad_accum)]
        self.model.train()
        try:
            result = train_step(self.model, self.optimizer, batches, self.settings, on_grads=self._pre_update)
        except (torch.OutOfMemoryError, RuntimeError) as e:
            if isinstance(e, torch.OutOfMemoryError) or "can't allocate memory" in str(e):
                raise LmforgeError(oom_message(self, e)) from None
            raise
        s = self.state
        s.step += 1
        s.tokens_seen += self.tokens_per_step
        s.last_loss = result.loss
        for cb in self.callbacks:
            cb.post_step(self, result)
        self.stop_reason = self.stop_reason or self.stop_requested
        return result

    def _pre_update(self) -> None:
        for cb in self.callbacks:
            cb.pre_update(self)

    # ---------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate_loader(self, make_loader: Any) -> float:
        """Mean cross-entropy per target token over `eval_batches` batches of a fresh loader (all ranks)."""
        from lmforge.train.step import _forward_loss

        self.model.eval()
        device = next(self.raw_model.parameters()).device
        total = torch.zeros(2, dtype=torch.float64, device=device)  # summed on the device: one sync at the end
        loader = make_loader()
        n = min(self.cfg.train.eval_batches or len(loader), len(loader))
        if self.world_size > 1:  # the same count on every rank (FSDP forwards are collective)
            n = -int(all_reduce_max(torch.tensor([-float(n)])).item())
        for i, batch in enumerate(loader):
            if i >= n:
                break
            sums = _forward_loss(self.model, batch, self.settings)
            total += torch.stack([sums.ce.double(), sums.count.double()])
        ce, count = all_reduce_sum(total).tolist()
        self.model.train()
        return ce / count if count > 0 else float("nan")

    def evaluate(self) -> float:
        """Validate on the run's split and every named set (`val_losses`); the set named by
        `eval.select_by` becomes `state.val_loss` and drives `best_val_loss` (best checkpoint, early stop)."""
        losses = {"split": self.evaluate_loader(self.make_val_loader)}
        for name, make in self.eval_sets.items():
            losses[name] = self.evaluate_loader(make)
        self.val_losses = losses
        loss = losses.get(getattr(getattr(self.cfg, "eval", None), "select_by", "split"), losses["split"])
        s = self.state
        s.val_loss, s.val_step = loss, s.step
        if math.isfinite(loss) and (s.best_val_loss is None or loss < s.best_val_loss):
            s.best_val_loss = loss
        return loss

    # ---------------------------------------------------------------- checkpoints
    def checkpoint_state(self) -> dict[str, Any]:
        from lmforge.configtools import to_dict

        rng = get_rng_state()
        if self.world_size > 1:
            import torch.distributed as dist

            gathered: list[Any] = [None] * self.world_size
            dist.all_gather_object(gathered, rng)
            rng_all = gathered
        else:
            rng_all = [rng]
        callbacks = {cb.name: st for cb in self.callbacks if (st := cb.state_dict()) is not None}
        return {**asdict(self.state), "loader": self.train_loader.state_dict(), "rng": rng_all, "callbacks": callbacks,
                "config": to_dict(self.cfg),
                "data_fingerprint": self.data_fingerprint, "tokenizer_fingerprint": self.tokenizer_fingerprint,
                "world_size": self.world_size, "tokens_per_step": self.tokens_per_step,
                "torch": torch.__version__, "time": time.time(), "init_from": self.init_source}

    def save_checkpoint(self) -> Path | None:
        """Write a full checkpoint: every rank joins the RNG (and FSDP) gathers, rank 0 writes,
        in the background when `train.async_checkpoint` (see ckpt_writer)."""
        s = self.state
        s.train_time = self.elapsed()
        self._t_start = time.time()
        t0 = time.perf_counter()
        s_dict = self.checkpoint_state()
        module, optim_sd = gather_for_save(self.raw_model, self.optimizer, self.rank)  # collective (FSDP)
        path = None
        if self.rank == 0:
            optim = {"optimizer": optim_sd,
                     "scaler": self.settings.scaler.state_dict() if self.settings.scaler is not None else None}
            is_best = s.val_loss is not None and s.val_step == s.step and s.val_loss == s.best_val_loss
            path = self.ckpt_writer.save(s.step, module, optim, s_dict, is_best=is_best,
                                         fresh=module is not self.raw_model)
            self.writer.log("event", s.step, event="checkpoint", path=str(path), ckpt_kind="full",
                            stall_s=time.perf_counter() - t0, asynchronous=self.ckpt_writer.asynchronous)
        s.ckpt_step = s.step
        self.last_ckpt = path or self.ckpt_root / ck.step_dir_name(s.step)
        barrier()  # ranks leave together (a rollback on any rank finds the same checkpoints)
        return path

    def restore(self, path: Path, *, keep_loader: bool = False) -> None:
        """Load weights, optimiser, scaler, RNG and loader position from a verified checkpoint."""
        state = ck.read_state(path)
        if state.get("data_fingerprint") != self.data_fingerprint and not ck.same_tokens(
                state.get("data_fingerprint"), self.run_dir / "tokens"):
            raise ck.CheckpointError(f"checkpoint {path} was trained on other data (fingerprint "
                                     f"{state.get('data_fingerprint')} vs {self.data_fingerprint}); "
                                     f"use a new run directory or restore the original tokens/")
        if state.get("world_size") != self.world_size and self.rank == 0:
            # the loader reshards when the windows consumed divide into the new global batch (else it raises)
            self.writer.log("event", state["step"], event="reshard", old_world_size=state.get("world_size"),
                            world_size=self.world_size)
        optim = load_model_and_optimizer(self.raw_model, self.optimizer, path)
        if self.settings.scaler is not None and optim.get("scaler"):
            self.settings.scaler.load_state_dict(optim["scaler"])
        if not keep_loader:
            self.train_loader.load_state_dict(state["loader"])
            self._it = iter(self.train_loader)
        set_rng_state(state["rng"][self.rank % len(state["rng"])])
        fields = TrainState.__dataclass_fields__
        self.state = TrainState(**{k: state[k] for k in fields if k in state})
        for cb in self.callbacks:
            if cb.name in state.get("callbacks", {}):
                cb.load_state_dict(state["callbacks"][cb.name])
        self.last_ckpt = Path(path)

    def rollback(self) -> None:
        """Reload the last complete checkpoint but keep the data position: the offending batches are
        skipped, not replayed. Raises when there is nothing to roll back to."""
        self.ckpt_writer.wait()
        barrier()
        path = ck.find_resume(self.ckpt_root, "auto")
        if path is None:
            raise LmforgeError(f"train.nan_policy=rollback at step {self.state.step}, but {self.ckpt_root} holds no "
                               f"complete checkpoint yet; lower train.ckpt_every or use nan_policy=skip")
        bad, elapsed, step = self.state.bad_steps, self.elapsed(), self.state.step
        self.restore(path, keep_loader=True)
        self.state.bad_steps, self.state.train_time, self._t_start = bad, elapsed, time.time()
        if self.rank == 0:
            self.writer.log("event", step, event="rollback", to_step=self.state.step, checkpoint=str(path))

    def summary(self) -> dict[str, Any]:
        s = self.state
        best = ck._safe_pointer(self.ckpt_root, "best")
        return {"step": s.step, "tokens_seen": s.tokens_seen, "train_loss": s.last_loss, "val_loss": s.val_loss,
                "best_val_loss": s.best_val_loss, "bad_steps": s.bad_steps, "stopped_by": self.stop_reason,
                "checkpoint": str(self.last_ckpt) if self.last_ckpt else None,
                "best_checkpoint": str(best) if best else None, "wall_time": self.elapsed(),
                "epoch": self.epoch, "completed": self.stop_reason not in ("SIGTERM", "SIGINT"),
                **getattr(self.train_loader, "mix_summary", dict)()}  # tokens.mix: tokens and epochs per group


def oom_message(trainer: Trainer, err: BaseException) -> str:
    """What ran out, with the figures, and what to change (the last checkpoint is intact)."""
    t, m = trainer.cfg.train, trainer.cfg.model
    params = sum(p.numel() for p in trainer.raw_model.parameters())
    device = next(trainer.raw_model.parameters()).device
    mem = ""
    if device.type == "cuda":
        gib = 1024**3
        total = torch.cuda.get_device_properties(device).total_memory / gib
        mem = (f"; GPU memory: {torch.cuda.memory_allocated(device) / gib:.1f} GiB allocated, "
               f"{torch.cuda.max_memory_allocated(device) / gib:.1f} GiB peak, {total:.1f} GiB total")
    tips = [f"lower train.batch_size (now {t.batch_size}) and raise train.grad_accum (now {t.grad_accum}) to keep "
            f"the global batch of {t.batch_size * t.grad_accum} sequences"]
    if not t.grad_checkpointing:
        tips.append("set train.grad_checkpointing=true (recomputes activations in the backward pass)")
    if t.precision in ("fp32", "auto") and device.type == "cuda":
        tips.append("use train.precision=bf16")
    tips.append(f"or shorten model.block_size (now {m.block_size})")
    return (f"out of memory at step {trainer.state.step + 1} on {device}: micro-batch {t.batch_size} x "
            f"{m.block_size} tokens, model {params / 1e6:.1f}M parameters{mem} ({str(err).splitlines()[0][:200]}). "
            f"To fix: {'; '.join(tips)}. The last checkpoint ({trainer.last_ckpt}) is intact.")


class _StopOnSignal:
    """SIGTERM/SIGINT ask the loop to finish the current step, checkpoint and return normally."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.old: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.trainer.stop_requested:  # second signal: the user means it
            raise KeyboardInterrupt(name)
        self.trainer.stop_requested = name
        log.warning("%s received: finishing the current step, then saving a checkpoint", name)

    def __enter__(self) -> _StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self.old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, h in self.old.items():
            signal.signal(sig, h)
