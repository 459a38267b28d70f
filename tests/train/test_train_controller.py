"""The controller: budgets in steps/tokens/epochs/time, early stopping, samples, callback state."""

from __future__ import annotations

import shutil

from lmforge import checkpoint as ck
from lmforge.monitor.metrics import read_metrics
from lmforge.train.build import planned_steps, train


def test_planned_steps_takes_the_tightest_budget(tiny_cfg):
    t = tiny_cfg(max_steps=100, max_tokens=1000).train
    assert planned_steps(t, 128, None) == 8  # ceil(1000 / 128)
    t = tiny_cfg(max_steps=0, max_epochs=2.0, max_time=5).train
    assert planned_steps(t, 100, 1050) == 21
    assert planned_steps(tiny_cfg(max_steps=0, max_time=5).train, 100, 1050) is None


def test_token_and_epoch_budgets_stop_the_run(run_dir, tiny_cfg):
    s = train(tiny_cfg(max_steps=0, max_tokens=300, ckpt_every=0, eval_every=0), run_dir)
    assert s["stopped_by"] == "max_tokens" and s["step"] == 3 and s["tokens_seen"] == 384
    shutil.rmtree(run_dir / "checkpoints")
    s = train(tiny_cfg(max_steps=0, max_epochs=0.004, ckpt_every=0, eval_every=0), run_dir)
    assert s["stopped_by"] == "max_epochs" and s["epoch"] >= 0.004
    assert s["epoch"] - 0.004 < 4 * 32 / 50_000  # stopped at the first step past the budget


def test_time_budget(run_dir, tiny_cfg):
    s = train(tiny_cfg(max_steps=0, max_time=0.5, ckpt_every=0, eval_every=0), run_dir)
    assert s["stopped_by"] == "max_time" and s["step"] >= 1 and s["wall_time"] >= 0.5


def test_early_stopping_stops_and_survives_resume(run_dir, tiny_cfg):
    cfg = tiny_cfg(max_steps=20, eval_every=2, ckpt_every=2, early_stop_patience=2, early_stop_min_delta=5.0)
    s = train(cfg, run_dir)
    # eval at 2 sets the best; 4 and 6 do not improve by 5.0 nats: stop at 6
    assert s["stopped_by"] == "early_stop" and s["step"] == 6
    (ev,) = [e for e in read_metrics(run_dir / "metrics.jsonl", "event") if e.get("event") == "early_stop"]
    assert ev["best_step"] == 2
    state = ck.read_state(run_dir / "checkpoints" / "step-000006")
    assert state["callbacks"]["EarlyStopCallback"]["bad_evals"] == 2


def test_samples_are_logged(run_dir, tiny_cfg):
    cfg = tiny_cfg(max_steps=2, sample_every=2, ckpt_every=0, eval_every=0)
    cfg.eval.prompts = ["ROMEO:", "The "]
    cfg.eval.max_new_tokens = 8
    train(cfg, run_dir)
    samples = list(read_metrics(run_dir / "metrics.jsonl", "sample"))
    assert [e["prompt"] for e in samples] == ["ROMEO:", "The "]
    assert all(isinstance(e["text"], str) and e["step"] == 2 for e in samples)


def test_a_time_budget_shortens_the_schedule_horizon(tiny_cfg):
    import pytest

    from lmforge.train.trainer import Trainer, TrainState

    t = Trainer.__new__(Trainer)  # only the schedule's inputs are needed
    t.cfg = tiny_cfg(max_steps=1000, max_time=100, warmup_steps=0, schedule="linear", lr=1.0, min_lr=0.0)
    t.state, t.total_steps, t.clock = TrainState(step=50), 1000, 50.0
    assert t.lr() == pytest.approx(0.5)  # 50 steps in half the time: ~100 steps in all
    t.clock = 4.0  # the clock would allow 1250 steps: the step budget decides
    assert t.lr() == pytest.approx(1 - 50 / 1000)
