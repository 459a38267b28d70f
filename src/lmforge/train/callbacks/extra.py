"""Optional callbacks: early stopping on the validation loss, periodic samples, per-layer statistics."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from lmforge.train.callbacks.base import Callback

if TYPE_CHECKING:
    from lmforge.train.step import StepResult
    from lmforge.train.trainer import Trainer

log = logging.getLogger(__name__)


class EarlyStopCallback(Callback):
    """Ask the loop to stop after `patience` evaluations without improvement (lmforge.monitor.convergence).
    Must come after EvalCallback; its count is checkpointed so a resumed run continues it."""

    def __init__(self, patience: int, min_delta: float = 0.0) -> None:
        from lmforge.monitor.convergence import EarlyStopping

        self.stopper = EarlyStopping(patience=patience, min_delta=min_delta, mode="min")
        self._seen_step = -1

    def post_step(self, trainer: Trainer, result: StepResult) -> None:
        s = trainer.state
        if s.val_step != s.step or s.val_step == self._seen_step or s.val_loss is None:
            return
        self._seen_step = s.step
        if self.stopper.step(s.val_loss, step=s.step):
            trainer.stop_requested = "early_stop"
            if trainer.rank == 0:
                trainer.writer.log("event", s.step, event="early_stop", best_val_loss=self.stopper.best.value,
                                   best_step=self.stopper.best.step, patience=self.stopper.patience)

    def state_dict(self) -> dict[str, Any]:
        return self.stopper.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stopper.load_state_dict(state)


class SampleCallback(Callback):
    """Every `every` steps, continue `eval.prompts` with the current weights and log `sample` events.
    Sampling uses a private generator (seeded by the step), so training's RNG stream is untouched."""

    def __init__(self, every: int, tokenizer: Any) -> None:
        self.every, self.tokenizer = every, tokenizer

    def post_step(self, trainer: Trainer, result: StepResult) -> None:
        if trainer.rank != 0 or trainer.state.step % self.every:
            return
        from lmforge.infer.generate import generate

        e = trainer.cfg.eval
        try:
            texts = generate(trainer.raw_model, self.tokenizer, list(e.prompts), max_new_tokens=e.max_new_tokens,
                             temperature=e.temperature, top_k=e.top_k, top_p=e.top_p,
                             seed=e.seed + trainer.state.step)
        except Exception as err:  # a sample is a nicety: never stop training for it
            log.warning("sampling at step %d failed: %s", trainer.state.step, err)
            return
        finally:
            trainer.raw_model.train()
        for prompt, text in zip(e.prompts, texts):
            trainer.writer.log("sample", trainer.state.step, prompt=prompt, text=text)


class LayerStatsCallback(Callback):
    """Every `monitor.layer_stats_every` steps a `layers` event: each layer's gradient norm (before
    clipping) and update-to-weight ratio (lmforge.monitor.modelstats); on the steps the logger's
    `monitor.histogram_every` names, weight and gradient histograms to TensorBoard. Runs on every rank
    (FSDP sums the shards' squares across ranks); rank 0 writes."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.tracker: Any = None
        self._grads: dict[str, float] = {}

    def pre_train(self, trainer: Trainer) -> None:
        from lmforge.monitor.modelstats import UpdateTracker

        self.tracker = UpdateTracker(trainer.raw_model, reduce=self._reduce(trainer))

    @staticmethod
    def _reduce(trainer: Trainer) -> Any:
        sharded = any(hasattr(p, "to_local") for p in trainer.raw_model.parameters())
        if not sharded or trainer.world_size == 1:
            return None  # replicated (single process or DDP): every rank already holds whole tensors
        from lmforge.train.distributed import all_reduce_sum

        return all_reduce_sum

    def pre_update(self, trainer: Trainer) -> None:
        step = trainer.state.step + 1  # the step being taken
        if self.every and step % self.every == 0:
            from lmforge.monitor.modelstats import layer_grad_norms

            self._grads = layer_grad_norms(trainer.raw_model, reduce=self.tracker.reduce)
            self._grads.pop("grad_norm", None)  # the total is in the `train` event already
            self.tracker.before()
        if trainer.rank == 0:
            trainer.writer.log_histograms(step, trainer.raw_model)  # no-op unless histogram_every divides step

    def post_step(self, trainer: Trainer, result: StepResult) -> None:
        if self.tracker is None or not self.tracker.armed:
            return
        values = {**self._grads, **self.tracker.after()}
        self._grads = {}
        if trainer.rank == 0 and values:
            trainer.writer.log("layers", trainer.state.step, **values)
