"""Build what the training loop needs from a Config and a run directory.

Each builder is a small function, so tests and benchmarks can assemble a `Trainer` from in-memory
pieces; `build_trainer` wires them up for `train`, the stage entry point.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn

from lmforge import checkpoint as ck
from lmforge.errors import ConfigError, LmforgeError
from lmforge.io import free_bytes, human_bytes, out_of_space
from lmforge.model import GPT
from lmforge.monitor.logger import RunLogger
from lmforge.train.callbacks import AnomalyCallback, CheckpointCallback, EvalCallback, LogCallback
from lmforge.train.callbacks.base import Callback
from lmforge.train.callbacks.extra import EarlyStopCallback, LayerStatsCallback, SampleCallback
from lmforge.train.config import TrainConfig
from lmforge.train.distributed import DistInfo, barrier, init_distributed, lost_peer, restarted
from lmforge.train.lock import RunLock
from lmforge.train.optim import build_optimizer
from lmforge.train.rng import seed_all
from lmforge.train.step import StepSettings
from lmforge.train.trainer import Trainer

if TYPE_CHECKING:
    from lmforge.config import Config

log = logging.getLogger(__name__)

# Dense bf16/fp16 tensor-core peaks (FLOP/s) for MFU; fp32 peaks differ, so MFU uses these only
# for bf16/fp16 runs.
GPU_PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12,
                  "L4": 121e12, "RTX 4090": 165e12, "RTX 3090": 71e12, "V100": 125e12, "T4": 65e12}


def resolve_device(name: str, dist_info: DistInfo | None = None) -> torch.device:
    try:
        torch.device(name if name != "auto" else "cpu")
    except (RuntimeError, ValueError):
        raise ConfigError(f"config key 'train.device': unknown device {name!r}; "
                          f"use auto, cpu, cuda or cuda:N") from None
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError("config key 'train.device': CUDA is not available on this machine; use auto or cpu")
        if name == "cuda" and dist_info is not None:
            return torch.device("cuda", dist_info.local_rank)
    return torch.device(name)


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto` = bf16 on a CUDA device that supports it, else fp32 (on CPU, bf16 autocast is slower
    than fp32 for the small models trained there; see benchmarks/train_throughput.py)."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("config key 'train.precision': fp16 needs a CUDA device; use bf16 or fp32 on CPU")
    return precision


def autocast_factory(precision: str, device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    if precision == "fp32":
        return contextlib.nullcontext
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return functools.partial(torch.autocast, device_type=device.type, dtype=dtype)


def step_settings(t: TrainConfig, precision: str, device: torch.device, world_size: int) -> StepSettings:
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    return StepSettings(grad_clip=t.grad_clip, label_smoothing=t.label_smoothing, z_loss=t.z_loss,
                        loss_norm=t.loss_norm, autocast=autocast_factory(precision, device), scaler=scaler,
                        world_size=world_size, loss_chunk_rows=t.loss_chunk_rows)


def peak_flops(t: TrainConfig, precision: str, device: torch.device) -> float:
    if t.peak_flops:
        return t.peak_flops
    if device.type == "cuda" and precision in ("bf16", "fp16"):
        name = torch.cuda.get_device_name(device)
        for key, flops in GPU_PEAK_FLOPS.items():
            if key in name:
                return flops
    return 0.0


def with_vocab(cfg: Config, vocab_size: int) -> Config:
    """`model.vocab_size: 0` means "from the tokenizer"."""
    if cfg.model.vocab_size == 0:
        return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=vocab_size))
    if cfg.model.vocab_size < vocab_size:
        raise ConfigError(f"config key 'model.vocab_size': {cfg.model.vocab_size} is smaller than the tokenizer's "
                          f"{vocab_size}; set it to 0 (= from the tokenizer) or >= {vocab_size}")
    return cfg


def with_micro_batch(cfg: Config, device: torch.device, dist_info: DistInfo) -> Config:
    """Replace batch_size/grad_accum by the largest micro-batch that fits (same on every rank)."""
    from lmforge.train.distributed import all_reduce_max
    from lmforge.train.microbatch import auto_micro_batch

    precision = resolve_precision(cfg.train.precision, device)
    m, _ = auto_micro_batch(cfg, device, autocast_factory(precision, device))
    per_process = cfg.train.batch_size * cfg.train.grad_accum
    m = -int(all_reduce_max(torch.tensor([-float(m)])).item())  # the smallest over ranks
    log.info("auto micro-batch: %d sequences x %d accumulation steps", m, per_process // m)
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, batch_size=m, grad_accum=per_process // m))


def data_fingerprint(tokens_dir: Path) -> str:
    return ck.tokens_fingerprint(tokens_dir)


def open_loaders(cfg: Config, run_dir: Path, dist_info: DistInfo, fingerprint: str | None) -> tuple[Any, Any]:
    """(train loader, factory of a fresh validation loader) over RUN_DIR/tokens. The factory has
    `bytes_per_token` of the validation text (for bits per byte)."""
    from lmforge.tokens.loader import TokenLoader, build_loader
    from lmforge.tokens.shards import open_split

    t, T = cfg.train, cfg.model.block_size
    tokens = run_dir / "tokens"
    train_ds = open_split(tokens, "train", fingerprint=fingerprint, mmap=cfg.tokens.mmap)
    val_ds = open_split(tokens, "val", fingerprint=fingerprint, mmap=cfg.tokens.mmap)
    common = dict(seq_len=T, batch_size=t.batch_size, rank=dist_info.rank, world_size=dist_info.world_size,
                  doc_masks=t.doc_masks)
    # packing (concat | best_fit | budget), prefetch depth and read retries come from `tokens:`
    if cfg.tokens.mix:  # weighted groups of sources (tokens.mix)
        from lmforge.tokens.mixture import mixture_loader

        train_loader = mixture_loader(tokens, train_ds, cfg.tokens, seed=t.seed, shuffle=t.shuffle, **common)
    else:
        train_loader = build_loader(train_ds, cfg.tokens, seed=t.seed, shuffle=t.shuffle, **common)
    make_val = functools.partial(TokenLoader.for_eval, val_ds, **common)
    make_val.bytes_per_token = val_ds.bytes / max(1, val_ds.num_tokens)  # type: ignore[attr-defined]
    return train_loader, make_val


def open_eval_sets(cfg: Config, run_dir: Path, dist_info: DistInfo, fingerprint: str | None) -> dict[str, Any]:
    """name -> factory of a fresh evaluation loader for each of `eval.sets` (built by `lmforge run`
    into RUN/eval_sets/<name>/); each factory has `bytes_per_token` of its set's text."""
    from lmforge.tokens.evalsets import open_eval_set
    from lmforge.tokens.loader import TokenLoader

    out = {}
    for name in getattr(cfg.eval, "sets", {}) or {}:
        ds = open_eval_set(run_dir, name, fingerprint=fingerprint, mmap=cfg.tokens.mmap)
        make = functools.partial(TokenLoader.for_eval, ds, seq_len=cfg.model.block_size,
                                 batch_size=cfg.train.batch_size, rank=dist_info.rank,
                                 world_size=dist_info.world_size, doc_masks=cfg.train.doc_masks)
        make.bytes_per_token = ds.bytes / max(1, ds.num_tokens)  # type: ignore[attr-defined]
        out[name] = make
    return out


def planned_steps(t: TrainConfig, tokens_per_step: int, tokens_per_epoch: float | None) -> int | None:
    """Total optimiser steps the budgets allow (the schedule's horizon); None = time budget only."""
    caps = []
    if t.max_steps:
        caps.append(t.max_steps)
    if t.max_tokens:
        caps.append(-(-t.max_tokens // tokens_per_step))
    if t.max_epochs and tokens_per_epoch:
        caps.append(max(1, int(-(-t.max_epochs * tokens_per_epoch // tokens_per_step))))
    return min(caps) if caps else None


def wrap_distributed(raw: nn.Module, mode: str, device: torch.device) -> nn.Module:
    """DDP (replicated weights, gradients all-reduced once per step) or FSDP2 (`fully_shard` on
    every block, then the root: parameters, gradients and optimiser state sharded)."""
    if mode == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for block in raw.blocks:
            fully_shard(block)
        fully_shard(raw)
        return raw
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(raw, device_ids=[device.index] if device.type == "cuda" else None)


def build_model(cfg: Config, device: torch.device) -> nn.Module:
    seed_all(cfg.train.seed)  # same initial weights on every rank
    return GPT(cfg.model).to(device)


def default_callbacks(t: TrainConfig, tokenizer: Any = None, monitor: Any = None) -> list:
    """Anomaly policy, log, [layer stats], eval, [early stop], [sample], checkpoint: the NaN policy
    acts first, early stopping reads the fresh val loss, and the checkpoint comes last so it holds
    all of it. `monitor`: the MonitorConfig (layer statistics and histograms)."""
    cbs: list = [AnomalyCallback(), LogCallback()]
    if monitor is not None and (monitor.layer_stats_every or monitor.histogram_every):
        cbs.append(LayerStatsCallback(monitor.layer_stats_every))
    cbs.append(EvalCallback())
    if t.early_stop_patience:
        cbs.append(EarlyStopCallback(t.early_stop_patience, t.early_stop_min_delta))
    if t.sample_every and tokenizer is not None:
        cbs.append(SampleCallback(t.sample_every, tokenizer))
    return cbs + [CheckpointCallback()]


def build_trainer(cfg: Config, run_dir: Path, *, resume: str | None = None) -> tuple[Trainer, RunLock | None, Any]:
    """Everything `train` needs: (trainer, held lock or None, cleanup function)."""
    from lmforge.tokenizer import load_tokenizer

    probe = resolve_device(cfg.train.device)
    dist_info = init_distributed(probe.type, timeout=cfg.train.collective_timeout)
    device = resolve_device(cfg.train.device, dist_info)
    if resume is None and restarted():  # torchrun restarted the group after a lost rank: continue
        log.warning("torchrun restart %d: resuming from the latest checkpoint", restarted())
        resume = "auto"
    lock = RunLock(run_dir).acquire() if dist_info.is_main else None
    try:
        tok = load_tokenizer(run_dir / "tokenizer")
        if cfg.train.init_from:  # before with_vocab: a clearer message for a tokenizer the source cannot read
            from lmforge.train.init_from import check_vocab, describe_source

            check_vocab(describe_source(cfg.train.init_from), tok, cfg.model.vocab_size)
        cfg = with_vocab(cfg, tok.vocab_size)
        if cfg.train.auto_micro_batch:
            cfg = with_micro_batch(cfg, device, dist_info)
        train_loader, make_val = open_loaders(cfg, run_dir, dist_info, tok.fingerprint)
        trainer = assemble(cfg, run_dir, device, dist_info, train_loader, make_val,
                           data_fingerprint(run_dir / "tokens"), callbacks=default_callbacks(
                               cfg.train, tok, cfg.monitor),
                           eval_sets=open_eval_sets(cfg, run_dir, dist_info, tok.fingerprint))
        trainer.tokenizer_fingerprint = tok.fingerprint  # recorded in every checkpoint's manifest
        resumed = start_or_resume(trainer, resume)
        if trainer.init_source is not None and resumed is None and dist_info.is_main:
            src = trainer.init_source
            trainer.writer.log("event", 0, event="init_from", path=src["path"], source_kind=src["kind"],
                               architecture=src["architecture"], weights_sha256=src["weights_sha256"])
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    return trainer, lock, lambda: None


def freeze_parameters(model: nn.Module, patterns: list[str]) -> list[str]:
    """Set requires_grad=False on parameters whose name matches any glob in `patterns`
    (`wte.weight`, `blocks.0.*`); returns their names. A pattern matching nothing is an error."""
    if not patterns:
        return []
    names = [n for n, _ in model.named_parameters()]
    for pat in patterns:
        if not any(fnmatch.fnmatchcase(n, pat) for n in names):
            raise LmforgeError(f"config key 'train.freeze': pattern {pat!r} matches no parameter; "
                               f"names look like {', '.join(names[:4])}, ...")
    frozen = [n for n, p in model.named_parameters() if any(fnmatch.fnmatchcase(n, pat) for pat in patterns)]
    for n, p in model.named_parameters():
        if n in frozen:
            p.requires_grad_(False)
    if len(frozen) == len(names):
        raise LmforgeError("config key 'train.freeze': every parameter would be frozen; nothing left to train")
    log.info("frozen parameters (%d): %s", len(frozen), ", ".join(frozen))
    return frozen


def assemble(cfg: Config, run_dir: Path, device: torch.device, dist_info: DistInfo, train_loader: Any,
             make_val_loader: Any, fingerprint: str, callbacks: list | None = None,
             eval_sets: dict[str, Any] | None = None) -> Trainer:
    """Model, optimiser, precision, wrappers and callbacks around ready-made loaders."""
    t = cfg.train
    precision = resolve_precision(t.precision, device)
    raw = build_model(cfg, device)
    init_source = None
    if t.init_from:  # existing weights; a resume then overwrites them with the checkpoint's
        from lmforge.train.init_from import load_init_weights

        init_source = load_init_weights(raw, cfg)
    raw.grad_checkpointing = t.grad_checkpointing
    freeze_parameters(raw, t.freeze)  # before the wrappers and the optimiser, which see only trainable ones
    model: nn.Module = raw
    if dist_info.world_size > 1:
        model = wrap_distributed(raw, t.distributed, device)
    optimizer = build_optimizer(raw, t, device)  # after fully_shard, which swaps in sharded parameters
    if t.compile:  # after the DDP/FSDP wrap, as PyTorch recommends
        model = torch.compile(model)
    torch.manual_seed(t.seed + dist_info.rank)  # per-rank dropout streams, after the shared init
    tokens_per_step = t.batch_size * cfg.model.block_size * t.grad_accum * dist_info.world_size
    total = planned_steps(t, tokens_per_step, getattr(train_loader, "tokens_per_epoch", None))
    writer = RunLogger(run_dir, cfg, enabled=dist_info.is_main)
    trainer = Trainer(cfg=cfg, run_dir=run_dir, model=model, raw_model=raw, optimizer=optimizer,
                   settings=step_settings(t, precision, device, dist_info.world_size), train_loader=train_loader,
                   make_val_loader=make_val_loader, writer=writer,
                   callbacks=callbacks if callbacks is not None else default_callbacks(t, monitor=cfg.monitor),
                   rank=dist_info.rank,
                   world_size=dist_info.world_size, tokens_per_step=tokens_per_step, total_steps=total,
                   data_fingerprint=fingerprint, peak_flops=peak_flops(t, precision, device),
                   val_bytes_per_token=getattr(make_val_loader, "bytes_per_token", 0.0), eval_sets=eval_sets)
    trainer.init_source = init_source  # recorded in every checkpoint's manifest
    return trainer


def start_or_resume(trainer: Trainer, resume: str | None) -> Path | None:
    """Clean partial checkpoint writes, then restore `resume` (auto | path) if given and found."""
    root = trainer.ckpt_root
    if trainer.rank == 0:
        for p in ck.clean_partial(root):
            log.warning("removed incomplete checkpoint %s (interrupted write)", p)
    if resume is None:
        existing = ck.list_checkpoints(root, "any")  # weights-only ones too: they belong to a run
        if existing:
            raise LmforgeError(f"{root} already holds checkpoints (newest {existing[0][1].name}) of an earlier run; "
                               f"continue it with --resume auto (train(..., resume='auto')), or delete {root} "
                               f"or use another run directory to start over")
        return None
    path = ck.find_resume(root, resume)
    if path is None:
        log.info("resume=auto: no complete checkpoint in %s, starting fresh", root)
        return None
    trainer.restore(path)
    if trainer.rank == 0:
        trainer.writer.log("event", trainer.state.step, what="resume", checkpoint=str(path))
        aside, moved = ck.start_branch(root, path)  # older than others on disk: a new branch
        if moved:
            trainer.writer.log("event", trainer.state.step, event="branch", from_checkpoint=str(path), moved=moved,
                               moved_to=str(aside))
    barrier()  # every rank sees the same checkpoints before the first save
    return path


__all__ = ["build_trainer", "assemble", "start_or_resume"]


def train(cfg: Config, run_dir: Path, *, resume: str | None = None,
          extra_callbacks: list[Callback] | None = None) -> dict[str, Any]:
    """Stage 4: train on RUN_DIR/tokens, write RUN_DIR/checkpoints and metrics; return a summary.

    resume: None (fresh start; existing checkpoints are kept and overwritten step by step),
    "auto" (newest verified checkpoint, or a fresh start when there is none) or a checkpoint path.
    extra_callbacks: run after the standard ones (anomaly, log, eval, checkpoint).
    """
    trainer, lock, cleanup = build_trainer(cfg, Path(run_dir), resume=resume)
    trainer.callbacks.extend(extra_callbacks or [])
    status, summary = "crashed", {}
    try:
        summary = trainer.fit()
        status = "interrupted" if trainer.stop_requested in ("SIGTERM", "SIGINT") else "finished"
        return summary
    except RuntimeError as e:
        if not lost_peer(e):
            raise
        raise LmforgeError(
            f"rank {trainer.rank}: a collective operation failed at step {trainer.state.step + 1}: another rank hung "
            f"(no answer within train.collective_timeout={cfg.train.collective_timeout:g} s) or died; see that "
            f"rank's log ({str(e).splitlines()[0][:160]}). The last complete checkpoint ({trainer.last_ckpt}) is "
            f"intact: under torchrun --max-restarts=N the group restarts and resumes from it") from None
    except OSError as e:
        if not out_of_space(e):
            raise
        raise LmforgeError(f"out of disk space at step {trainer.state.step} writing {e.filename or run_dir}: "
                           f"{human_bytes(free_bytes(run_dir))} free. The last complete checkpoint "
                           f"({trainer.last_ckpt}) is intact: free space, then resume with --resume auto") from None
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        try:
            trainer.ckpt_writer.wait()  # a background write finishes before the lock is released
        finally:
            for cb in trainer.callbacks:
                cb.close()
            numbers = {k: v for k, v in summary.items() if isinstance(v, (int, float)) and v is not None}
            _close_writer(trainer.writer, status, numbers)
            cleanup()
            if lock is not None:
                lock.release()


def _close_writer(writer: Any, status: str, summary: dict[str, Any]) -> None:
    try:
        writer.close(status, **summary)  # RunLogger: end event, TensorBoard, plots
    except OSError as e:  # e.g. a full disk: the error that stopped training is the one to report
        log.warning("the run's end event was not written: %s", e)
