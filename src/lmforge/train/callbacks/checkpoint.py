"""The checkpoint callback: full checkpoints every `train.ckpt_every` steps (and at the end), and
weights-only ("light") ones every `train.light_ckpt_every` steps in between.

A full checkpoint goes through `Trainer.save_checkpoint` (weights, optimiser, RNG, loader: what an
exact resume needs). A light one holds only the weights and a small state.json (`kind: weights`,
step, tokens, losses, config): cheaper to copy and to write, loadable by eval/generate/export, never
resumed from. Both use the trainer's `CheckpointWriter`, so they share its thread (async or not),
the atomic protocol and the checksums.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lmforge.train.callbacks.base import Callback

if TYPE_CHECKING:
    from lmforge.train.step import StepResult
    from lmforge.train.trainer import Trainer


def light_state(trainer: Trainer) -> dict[str, Any]:
    """state.json of a weights-only checkpoint: what inference and the record need, nothing to resume."""
    from lmforge.configtools import to_dict

    return {**dataclasses.asdict(trainer.state), "train_time": trainer.elapsed(), "config": to_dict(trainer.cfg),
            "data_fingerprint": trainer.data_fingerprint,
            "tokenizer_fingerprint": trainer.tokenizer_fingerprint, "world_size": trainer.world_size,
            "tokens_per_step": trainer.tokens_per_step, "torch": torch.__version__, "time": time.time()}


def save_light_checkpoint(trainer: Trainer) -> Path | None:
    """Write `weights-N/` for the current step (rank 0 writes; every rank joins the FSDP gather)."""
    from lmforge.train.state_io import gather_weights_for_save

    s, t0 = trainer.state, time.perf_counter()
    module = gather_weights_for_save(trainer.raw_model, trainer.rank)  # collective under FSDP
    if trainer.rank != 0 or module is None:
        return None
    is_best = s.val_loss is not None and s.val_step == s.step and s.val_loss == s.best_val_loss
    w = trainer.ckpt_writer
    path = w.save_weights(s.step, module, light_state(trainer), keep_last=trainer.cfg.train.light_keep_last,
                          is_best=is_best, fresh=module is not trainer.raw_model)
    trainer.writer.log("event", s.step, event="checkpoint", ckpt_kind="weights", path=str(path),
                       stall_s=time.perf_counter() - t0, asynchronous=w.asynchronous)
    return path


class CheckpointCallback(Callback):
    """Full checkpoint every `ckpt_every` steps, at the end and when a stop signal arrived; a
    weights-only one every `light_ckpt_every` steps that get no full one."""

    def post_step(self, trainer: Trainer, result: StepResult) -> None:
        t, step = trainer.cfg.train, trainer.state.step
        if t.ckpt_every and step % t.ckpt_every == 0:
            trainer.save_checkpoint()
        elif t.light_ckpt_every and step % t.light_ckpt_every == 0 and not self._last_step(trainer):
            save_light_checkpoint(trainer)

    @staticmethod
    def _last_step(trainer: Trainer) -> bool:
        """The loop stops after this step (budget or stop request): post_train writes a full one here."""
        return bool(trainer.stop_requested or trainer.budget_reached())

    def post_train(self, trainer: Trainer) -> None:
        if trainer.state.ckpt_step != trainer.state.step:
            trainer.save_checkpoint()
