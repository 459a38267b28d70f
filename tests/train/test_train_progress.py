"""The training progress bar counts towards whichever budget ends the run first (steps or time)."""

from __future__ import annotations

from lmforge.train.build import train
from lmforge.train.callbacks.base import Callback
from lmforge.train.callbacks.standard import LogCallback


class _BarTotals(Callback):
    def __init__(self) -> None:
        self.totals: list = []

    def post_step(self, trainer, result) -> None:
        bar = next(cb for cb in trainer.callbacks if isinstance(cb, LogCallback)).bar
        self.totals.append((trainer.state.step, bar.total))


def test_bar_total_follows_a_time_budget(run_dir, tiny_cfg):
    seen = _BarTotals()
    train(tiny_cfg(max_steps=100_000, max_time=2.0, progress=True, eval_every=0, ckpt_every=0), run_dir,
          extra_callbacks=[seen])
    steps, total = seen.totals[-1]
    assert steps >= 5 and all(t < 100_000 for _, t in seen.totals)
    assert abs(total - steps) <= max(3, steps // 4)  # the time budget's predicted end, near where it stopped


def test_bar_total_is_the_step_budget_when_it_ends_first(run_dir, tiny_cfg):
    seen = _BarTotals()
    train(tiny_cfg(max_steps=5, max_time=3600.0, progress=True, eval_every=0, ckpt_every=0), run_dir,
          extra_callbacks=[seen])
    assert [t for _, t in seen.totals] == [5] * 5
