"""Faults: NaN/Inf policies (skip, rollback, abort), out-of-memory message."""

from __future__ import annotations

import pytest
import torch

from lmforge import checkpoint as ck
from lmforge.errors import LmforgeError
from lmforge.monitor.metrics import read_metrics
from lmforge.train.build import train
from lmforge.train.callbacks import Callback


class PoisonStep(Callback):
    """Makes the final hidden states (so logits and loss) NaN from optimiser step `step` on, `times`
    forward passes in all (a bad batch)."""

    def __init__(self, step: int, times: int = 1) -> None:
        self.step, self.left = step, times

    def pre_train(self, trainer) -> None:
        def hook(module, inputs, out):
            if module.training and trainer.state.step + 1 >= self.step and self.left > 0:
                self.left -= 1
                return out * float("nan")
            return None

        trainer.raw_model.ln_f.register_forward_hook(hook)  # the hidden states: NaN logits and loss on every loss path


def _events(run_dir, kind):
    return list(read_metrics(run_dir / "metrics.jsonl", kind))


def _actions(run_dir):
    """The NaN-policy records (the monitor's detector logs its own `nonfinite_loss` anomaly too)."""
    return [e for e in _events(run_dir, "anomaly") if "action" in e]


def _train(run_dir, tiny_cfg, poison: PoisonStep, **kw):
    cfg = tiny_cfg(**{"max_steps": 6, "ckpt_every": 2, "eval_every": 2, **kw})
    return train(cfg, run_dir, extra_callbacks=[poison])


def test_skip_policy_skips_the_update_and_goes_on(run_dir, tiny_cfg):
    s = _train(run_dir, tiny_cfg, PoisonStep(3), nan_policy="skip")
    assert s["step"] == 6 and s["bad_steps"] == 1
    (anomaly,) = _actions(run_dir)
    assert anomaly["step"] == 3 and anomaly["action"] == "skip" and anomaly["loss"] == "nan"
    assert anomaly["type"] == "nonfinite_loss"
    assert any(e.get("type") == "nonfinite_loss" and "action" not in e for e in _events(run_dir, "anomaly"))
    train_ev = {e["step"]: e for e in _events(run_dir, "train")}
    assert train_ev[3].get("skipped") and train_ev[3]["loss"] == "nan"
    assert all(isinstance(train_ev[k]["loss"], float) for k in (1, 2, 4, 5, 6))
    assert s["val_loss"] < 10


def test_rollback_reloads_the_last_checkpoint_and_skips_the_batch(run_dir, tiny_cfg):
    s = _train(run_dir, tiny_cfg, PoisonStep(5), nan_policy="rollback")
    assert s["step"] == 6 and s["bad_steps"] == 1
    (anomaly,) = _actions(run_dir)
    assert anomaly["action"] == "rollback" and anomaly["step"] == 5
    (event,) = [e for e in _events(run_dir, "event") if e.get("event") == "rollback"]
    assert event["to_step"] == 4 and event["checkpoint"].endswith("step-000004")
    state = ck.read_state(run_dir / "checkpoints" / "step-000006")
    # the loader moved past the offending batch: 7 steps' batches consumed for 6 steps
    assert state["loader"]["step"] == 7


def test_rollback_without_checkpoint_is_an_error(run_dir, tiny_cfg):
    with pytest.raises(LmforgeError, match="holds no complete checkpoint"):
        _train(run_dir, tiny_cfg, PoisonStep(1), nan_policy="rollback")


def test_abort_policy_stops_with_a_message(run_dir, tiny_cfg):
    with pytest.raises(LmforgeError, match="training aborted at step 3.*not finite"):
        _train(run_dir, tiny_cfg, PoisonStep(3), nan_policy="abort")
    (anomaly,) = _actions(run_dir)
    assert anomaly["action"] == "abort"
    assert ck.read_pointer(run_dir / "checkpoints", "latest").name == "step-000002"
    assert not (run_dir / "checkpoints" / "step-000003").exists()


def test_too_many_bad_steps_in_a_row_abort_even_when_skipping(run_dir, tiny_cfg):
    with pytest.raises(LmforgeError, match="2 bad step"):
        _train(run_dir, tiny_cfg, PoisonStep(2, times=10), nan_policy="skip", max_bad_steps=2, grad_accum=1)




def test_out_of_memory_names_the_figures_and_the_fix(run_dir, tiny_cfg, monkeypatch):
    import lmforge.train.trainer as tr

    def boom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(tr, "train_step", boom)
    with pytest.raises(LmforgeError) as e:
        train(tiny_cfg(max_steps=3, batch_size=4, grad_accum=2), run_dir)
    msg = str(e.value)
    assert "out of memory at step 1" in msg and "micro-batch 4 x 32 tokens" in msg
    assert "train.grad_accum (now 2)" in msg and "global batch of 8" in msg and "grad_checkpointing" in msg
    assert not (run_dir / "checkpoints").exists() or not list((run_dir / "checkpoints").iterdir())
