"""Precision and memory options: bf16 autocast, GradScaler (state checkpointed), grad checkpointing,
and the loss options wired from the config."""

from __future__ import annotations

import math

import pytest
import torch

from lmforge.config import ModelConfig
from lmforge.model import GPT
from lmforge.tokens.batch import Batch
from lmforge.train.build import build_trainer, resolve_precision, train
from lmforge.train.step import StepSettings, train_step


def _model() -> GPT:
    torch.manual_seed(0)
    return GPT(ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=30))


def _batch() -> Batch:
    g = torch.Generator().manual_seed(3)
    return Batch(torch.randint(0, 30, (2, 8), generator=g), torch.randint(0, 30, (2, 8), generator=g), None)


def test_grad_scaler_step_equals_unscaled_step():
    deltas = []
    for scaler in (None, torch.amp.GradScaler("cpu", init_scale=2.0**12)):
        m = _model()
        before = [p.detach().clone() for p in m.parameters()]
        opt = torch.optim.SGD(m.parameters(), lr=1.0)
        res = train_step(m, opt, [_batch()], StepSettings(grad_clip=1.0, scaler=scaler))
        assert res.applied and not res.bad
        deltas.append([b - p.detach() for b, p in zip(before, m.parameters())])
    for a, b in zip(*deltas):
        torch.testing.assert_close(a, b, atol=1e-7, rtol=1e-6)


def test_grad_scaler_overflow_skips_and_backs_off_without_a_fault():
    m = _model()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    opt = torch.optim.SGD(m.parameters(), lr=1.0)
    # on the final norm: the LM head may run fused with the loss, not as the lm_head module
    m.ln_f.register_full_backward_hook(lambda mod, gin, gout: (torch.full_like(gin[0], float("inf")),))
    before = [p.detach().clone() for p in m.parameters()]
    res = train_step(m, opt, [_batch()], StepSettings(scaler=scaler))
    assert not res.applied and not res.bad  # fp16 overflow is the scaler's business
    assert scaler.get_scale() == 2.0**11
    assert all(torch.equal(b, p) for b, p in zip(before, m.parameters()))


def test_scaler_state_is_checkpointed(run_dir, tiny_cfg):
    cfg = tiny_cfg(max_steps=2)
    trainer, lock, _ = build_trainer(cfg, run_dir)
    try:
        trainer.settings.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**9, growth_interval=1)
        trainer.run_one_step()
        path = trainer.save_checkpoint()
        saved = trainer.settings.scaler.state_dict()
    finally:
        trainer.writer.close()
        lock.release()
    trainer2, lock2, _ = build_trainer(cfg, run_dir, resume="auto")  # restores without a scaler ...
    try:
        trainer2.settings.scaler = torch.amp.GradScaler("cpu")
        trainer2.restore(path)  # ... and again with one
        assert trainer2.settings.scaler.state_dict() == saved and saved["scale"] == 2.0**10
        assert trainer2.state.step == 1
    finally:
        trainer2.writer.close()
        lock2.release()


def test_precision_auto_is_fp32_on_cpu_and_fp16_needs_cuda():
    from lmforge.errors import ConfigError

    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"
    with pytest.raises(ConfigError, match="train.precision"):
        resolve_precision("fp16", torch.device("cpu"))


def test_bf16_and_grad_checkpointing_train_close_to_fp32(run_dir, tiny_cfg, tmp_path):
    import shutil

    ref = train(tiny_cfg(max_steps=4, ckpt_every=0, eval_every=0), run_dir)
    other = tmp_path / "bf16"
    shutil.copytree(run_dir / "tokenizer", other / "tokenizer")
    shutil.copytree(run_dir / "tokens", other / "tokens")
    s = train(tiny_cfg(max_steps=4, ckpt_every=0, eval_every=0, precision="bf16", grad_checkpointing=True), other)
    assert math.isfinite(s["val_loss"])
    assert s["val_loss"] == pytest.approx(ref["val_loss"], abs=0.05)
    assert s["val_loss"] != ref["val_loss"]  # bf16 really was used


def test_label_smoothing_and_z_loss_reach_the_step(run_dir, tiny_cfg):
    trainer, lock, _ = build_trainer(tiny_cfg(label_smoothing=0.1, z_loss=1e-4, loss_norm="sequence"), run_dir)
    try:
        s = trainer.settings
        assert (s.label_smoothing, s.z_loss, s.loss_norm) == (0.1, 1e-4, "sequence")
    finally:
        trainer.writer.close()
        lock.release()
