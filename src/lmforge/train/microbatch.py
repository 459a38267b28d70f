"""Automatic micro-batch size: the largest that fits, found once at start-up (as OLMo-core does).

Each candidate runs a full-size dry-run step (forward, backward and an AdamW step that allocates
the optimiser state) on a throwaway copy of the model; candidates are the divisors of the
per-process batch, largest first, so gradient accumulation makes up exactly the configured batch.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from lmforge.errors import LmforgeError

if TYPE_CHECKING:
    from lmforge.config import Config

log = logging.getLogger(__name__)


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.OutOfMemoryError) or (isinstance(e, RuntimeError) and "can't allocate memory" in str(e))


def _free(device: torch.device) -> None:
    if device.type == "cuda":  # return the failed attempt's blocks before the next, smaller one
        gc.collect()
        torch.cuda.empty_cache()


def largest_fitting(try_batch: Callable[[int], None], per_process: int, device: torch.device) -> int:
    """Largest divisor m of `per_process` for which `try_batch(m)` does not run out of memory."""
    for m in sorted((d for d in range(1, per_process + 1) if per_process % d == 0), reverse=True):
        try:
            try_batch(m)
            return m
        except Exception as e:
            if not _is_oom(e):
                raise
            log.info("micro-batch %d does not fit: %s", m, str(e).splitlines()[0][:120])
        finally:
            _free(device)
    raise LmforgeError(f"not even a micro-batch of 1 sequence fits on {device}; shorten model.block_size, "
                       f"set train.grad_checkpointing=true or use a smaller model")


def dry_run(cfg: Config, device: torch.device, autocast: Callable[[], contextlib.AbstractContextManager]
            ) -> Callable[[int], None]:
    """`try_batch(m)`: one full training step of micro-batch m on a throwaway model."""
    from lmforge.model import GPT
    from lmforge.train.loss import lm_loss

    def try_batch(m: int) -> None:
        model = GPT(cfg.model).to(device)
        model.grad_checkpointing = cfg.train.grad_checkpointing
        opt = torch.optim.AdamW(model.parameters(), lr=0.0, fused=device.type == "cuda" or None)
        g = torch.Generator(device="cpu").manual_seed(0)
        x = torch.randint(0, cfg.model.vocab_size, (m, cfg.model.block_size + 1), generator=g).to(device)
        try:
            with autocast():
                logits = model(x[:, :-1])
            lm_loss(logits, x[:, 1:]).total.backward()
            opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        finally:
            del model, opt

    return try_batch


def auto_micro_batch(cfg: Config, device: torch.device, autocast: Callable[[], contextlib.AbstractContextManager]
                     ) -> tuple[int, int]:
    """(micro-batch, grad_accum) keeping batch_size x grad_accum sequences per process and step."""
    per_process = cfg.train.batch_size * cfg.train.grad_accum
    m = largest_fitting(dry_run(cfg, device, autocast), per_process, device)
    return m, per_process // m
