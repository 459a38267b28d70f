"""Auto micro-batch: the largest divisor that fits; accumulation keeps the configured batch."""

from __future__ import annotations

import pytest
import torch

from lmforge.errors import LmforgeError
from lmforge.train.build import train
from lmforge.train.microbatch import largest_fitting


def _fits_up_to(limit: int, tried: list[int]):
    def try_batch(m: int) -> None:
        tried.append(m)
        if m > limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory (micro-batch {m})")

    return try_batch


def test_largest_divisor_that_fits():
    tried: list[int] = []
    assert largest_fitting(_fits_up_to(5, tried), 24, torch.device("cpu")) == 4
    assert tried == [24, 12, 8, 6, 4]  # divisors of 24, largest first


def test_nothing_fits_is_a_clear_error():
    with pytest.raises(LmforgeError, match="not even a micro-batch of 1"):
        largest_fitting(_fits_up_to(0, []), 8, torch.device("cpu"))


def test_other_errors_propagate():
    def broken(m: int) -> None:
        raise ValueError("shape bug")

    with pytest.raises(ValueError, match="shape bug"):
        largest_fitting(broken, 8, torch.device("cpu"))


def test_trainer_uses_the_found_micro_batch(run_dir, tiny_cfg, monkeypatch):
    import lmforge.train.microbatch as mb

    real = mb.dry_run
    monkeypatch.setattr(mb, "dry_run", lambda cfg, device, autocast: (
        lambda m: (_ for _ in ()).throw(torch.OutOfMemoryError("oom")) if m > 2 else real(cfg, device, autocast)(m)))
    s = train(tiny_cfg(max_steps=2, batch_size=4, grad_accum=2, auto_micro_batch=True, ckpt_every=0,
                       eval_every=0), run_dir)
    from lmforge import checkpoint as ck

    state = ck.read_state(run_dir / "checkpoints" / "step-000002")
    assert state["config"]["train"]["batch_size"] == 2 and state["config"]["train"]["grad_accum"] == 4
    assert s["tokens_seen"] == 2 * 8 * 32  # the global batch is unchanged
