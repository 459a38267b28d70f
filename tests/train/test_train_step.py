"""One optimiser step: gradient accumulation is exact, non-finite steps are not applied."""

from __future__ import annotations

import copy

import pytest
import torch

from lmforge.config import ModelConfig
from lmforge.model import GPT
from lmforge.tokens.batch import Batch
from lmforge.train.step import StepSettings, train_step


def _model() -> GPT:
    torch.manual_seed(0)
    return GPT(ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=40))


def _batches(k: int, b: int):
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 40, (k * b, 16), generator=g)
    y = torch.randint(0, 40, (k * b, 16), generator=g)
    y[0, :10] = -100  # uneven padding: a mean of per-micro-batch means would weight tokens differently
    y[-1, 3:] = -100
    doc = torch.zeros(k * b, 16, dtype=torch.long)
    doc[:, 9:] = 1
    return x, y, doc


def _grads_after(model: GPT, micro: list[Batch], clip: float) -> tuple[dict[str, torch.Tensor], float, float]:
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=1.0)  # param delta = -gradient (after clipping)
    res = train_step(model, opt, micro, StepSettings(grad_clip=clip))
    return {n: before[n] - p.detach() for n, p in model.named_parameters()}, res.loss, res.grad_norm


@pytest.mark.parametrize("clip", [0.0, 0.5])
def test_k_micro_batches_equal_one_big_batch(clip):
    k, b = 4, 2
    x, y, doc = _batches(k, b)
    m1, m2 = _model(), _model()
    big = [Batch(x, y, doc)]
    small = [Batch(x[i * b:(i + 1) * b], y[i * b:(i + 1) * b], doc[i * b:(i + 1) * b]) for i in range(k)]
    g1, loss1, n1 = _grads_after(m1, big, clip)
    g2, loss2, n2 = _grads_after(m2, small, clip)
    assert loss1 == pytest.approx(loss2, abs=1e-6)
    assert n1 == pytest.approx(n2, rel=1e-6)
    for name in g1:
        torch.testing.assert_close(g1[name], g2[name], atol=1e-6, rtol=0)
    assert any(g.abs().max() > 1e-4 for g in g1.values())


def test_nonfinite_loss_skips_the_update():
    m = _model()
    x, y, doc = _batches(1, 2)
    before = copy.deepcopy(m.state_dict())
    with torch.no_grad():
        m.wte.weight[x[0, 0]] = float("nan")
    before["wte.weight"] = m.wte.weight.detach().clone()
    opt = torch.optim.AdamW(m.parameters(), lr=1.0)
    res = train_step(m, opt, [Batch(x, y, doc)], StepSettings())
    assert res.bad and not res.applied
    for n, p in m.state_dict().items():
        assert torch.equal(p, before[n]) or (torch.isnan(p).any() and n in ("wte.weight", "lm_head.weight"))
    assert all(p.grad is None for p in m.parameters())
    assert not opt.state  # AdamW never stepped


def test_clipping_reports_the_norm_before_clipping():
    m = _model()
    x, y, doc = _batches(1, 2)
    opt = torch.optim.SGD(m.parameters(), lr=0.0)
    res = train_step(m, opt, [Batch(x, y, doc)], StepSettings(grad_clip=1e-3))
    assert res.grad_norm > 1e-3 and res.applied and not res.bad
