"""Callback protocol: the loop calls these hooks; checkpointing, logging, evaluation, sampling,
anomaly handling and early stopping live in callbacks, not in the loop (OLMo-core style)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lmforge.train.step import StepResult
    from lmforge.train.trainer import Trainer


class Callback:
    """Override the hooks you need; each receives the trainer (its state, model, writer, ...)."""

    def pre_train(self, trainer: Trainer) -> None:
        """After model, optimiser and data are ready and any checkpoint is restored."""

    def pre_update(self, trainer: Trainer) -> None:
        """Inside each step: gradients complete (not yet clipped), weights not yet updated;
        `trainer.state.step` is still the previous step's number."""

    def post_step(self, trainer: Trainer, result: StepResult) -> None:
        """After every optimiser step; `trainer.state.step` is already incremented."""

    def post_train(self, trainer: Trainer) -> None:
        """Once, after the last step (budget reached, stop requested or early stop)."""

    def close(self) -> None:
        """Release resources (files, threads), also on error."""

    def state_dict(self) -> dict | None:
        """JSON-serialisable state saved in every checkpoint (None = stateless)."""
        return None

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` returned."""

    @property
    def name(self) -> str:
        return type(self).__name__
