"""The standard callbacks: NaN/Inf policy, metrics + progress bar, periodic validation; checkpoints
are in callbacks/checkpoint.py (re-exported here)."""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING

from lmforge.errors import LmforgeError
from lmforge.train.callbacks.base import Callback
from lmforge.train.callbacks.checkpoint import CheckpointCallback

if TYPE_CHECKING:
    from lmforge.train.step import StepResult
    from lmforge.train.trainer import Trainer

log = logging.getLogger(__name__)
__all__ = ["AnomalyCallback", "CheckpointCallback", "EvalCallback", "LogCallback"]


def _exp(loss: float) -> float:
    return math.exp(loss) if loss < 50 else float("inf")


class AnomalyCallback(Callback):
    """NaN/Inf in the loss or gradients: the update was already skipped by `train_step`; here the
    policy decides what else happens. The decision uses all-reduced values, so every rank agrees."""

    def post_step(self, trainer: Trainer, result: StepResult) -> None:
        s, t = trainer.state, trainer.cfg.train
        if not result.bad:
            s.consecutive_bad = 0
            return
        s.bad_steps += 1
        s.consecutive_bad += 1
        policy = t.nan_policy
        if s.consecutive_bad >= t.max_bad_steps and policy != "abort":
            policy = "abort"
        if trainer.rank == 0:
            kind = "nonfinite_loss" if not math.isfinite(result.loss) else "nonfinite_grad"
            trainer.writer.log("anomaly", s.step, type=kind, severity="error", action=policy, loss=result.loss,
                               grad_norm=result.grad_norm, bad_steps=s.bad_steps,
                               message=f"non-finite step: update skipped, policy {policy}")
        if policy == "abort":
            raise LmforgeError(f"training aborted at step {s.step}: loss {result.loss} / gradient norm "
                               f"{result.grad_norm} is not finite ({s.consecutive_bad} bad step(s) in a row, "
                               f"train.nan_policy={t.nan_policy}, train.max_bad_steps={t.max_bad_steps}); "
                               f"lower train.lr, raise train.warmup_steps, or use train.precision=fp32; the "
                               f"last good checkpoint is {trainer.last_ckpt}")
        if policy == "rollback":
            trainer.rollback()


class LogCallback(Callback):
    """`train` events every `log_every` steps (loss, lr, grad norm, tokens/s, MFU) and a tqdm bar."""

    def __init__(self) -> None:
        self.bar = None
        self._t = 0.0
        self._tok = 0
        self._losses: list[float] = []

    def pre_train(self, trainer: Trainer) -> None:
        self._t, self._tok = time.time(), trainer.state.tokens_seen
        if trainer.rank == 0 and trainer.cfg.train.progress:
            from lmforge.monitor.progress import progress

            self.bar = progress(trainer.total_steps, desc="train", unit="step", quiet=trainer.cfg.monitor.quiet or None,
                                initial=trainer.state.step)

    def post_step(self, trainer: Trainer, result: StepResult) -> None:
        s = trainer.state
        self._losses.append(result.loss)
        if self.bar is not None:
            horizon = trainer.horizon()  # whichever budget ends the run first (steps or time)
            if horizon is not None and horizon != self.bar.total:
                from lmforge.monitor.progress import BAR_FORMAT

                self.bar.total, self.bar.bar_format = horizon, BAR_FORMAT
            self.bar.update(1)
        if s.step % trainer.cfg.train.log_every and s.step != 1:
            return
        now = time.time()
        dt = max(now - self._t, 1e-9)
        tps = (s.tokens_seen - self._tok) / dt
        finite = [x for x in self._losses if math.isfinite(x)]
        values = {"loss": result.loss, "loss_avg": sum(finite) / len(finite) if finite else float("nan"),
                  "lr": trainer.optimizer.param_groups[0]["lr"], "grad_norm": result.grad_norm,
                  "tokens_per_s": tps, "tokens": s.tokens_seen, "epoch": trainer.epoch,
                  "step_time_ms": 1000 * dt / max(1, len(self._losses))}
        if trainer.peak_flops > 0:
            fpt = trainer.raw_model.flops_per_token(trainer.cfg.model.block_size)
            values["mfu"] = fpt * tps / (trainer.peak_flops * trainer.world_size)
        if not result.applied:
            values["skipped"] = True
        values.update(getattr(trainer.train_loader, "mix_metrics", dict)())  # tokens.mix: per-group tokens, epochs
        if trainer.rank == 0:
            trainer.writer.log("train", s.step, **values)
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{result.loss:.4f}", lr=f"{values['lr']:.2e}", tok_s=f"{tps:,.0f}",
                                 refresh=False)
        self._t, self._tok, self._losses = now, s.tokens_seen, []

    def post_train(self, trainer: Trainer) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class EvalCallback(Callback):
    """Validate every `eval_every` steps and once at the end: one `val` event whose `loss` is the set
    `eval.select_by` names (it drives the best checkpoint and early stopping), plus loss, perplexity
    and bits per byte of every set as `val/<name>/loss|ppl|bpb` (`split` = the run's own split)."""

    def _run(self, trainer: Trainer) -> None:
        loss = trainer.evaluate()
        if trainer.rank == 0:
            values = {"loss": loss, "val_loss": loss, "val_ppl": _exp(loss),
                      "best_val_loss": trainer.state.best_val_loss}
            select = getattr(trainer.cfg.eval, "select_by", "split")
            if trainer.state.last_loss is not None:
                values["train_loss"] = trainer.state.last_loss
            for name, set_loss in (getattr(trainer, "val_losses", None) or {"split": loss}).items():
                bpt = trainer.val_bytes_per_token if name == "split" else getattr(
                    trainer.eval_sets.get(name), "bytes_per_token", 0.0)
                values[f"val/{name}/loss"] = set_loss
                values[f"val/{name}/ppl"] = _exp(set_loss)
                if bpt:
                    values[f"val/{name}/bpb"] = set_loss / math.log(2) / bpt
                if name == select and bpt:
                    values["bpb"] = set_loss / math.log(2) / bpt
            if select != "split":
                values["select_by"] = select
            trainer.writer.log("val", trainer.state.step, **values)

    def post_step(self, trainer: Trainer, result: StepResult) -> None:
        every = trainer.cfg.train.eval_every
        if every and trainer.state.step % every == 0:
            self._run(trainer)

    def post_train(self, trainer: Trainer) -> None:
        # a stop request (SIGTERM, SIGINT) means "save and go": no final evaluation
        if trainer.state.val_step != trainer.state.step and not trainer.stop_requested:
            self._run(trainer)
