"""The fused, chunked LM-head loss equals the full-logits loss and its gradients, in every mode."""

from __future__ import annotations

import copy
import functools

import pytest
import torch

from lmforge.config import ModelConfig
from lmforge.model import GPT
from lmforge.tokens.batch import Batch
from lmforge.train.loss import chunked_lm_loss, lm_loss
from lmforge.train.step import StepSettings, train_step


def _data(B=4, T=9, C=24, V=301, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(B, T, C, generator=g).requires_grad_()
    w = (torch.randn(V, C, generator=g) * 0.3).requires_grad_()
    tgt = torch.randint(0, V, (B, T), generator=g)
    tgt[0, :4] = -100
    tgt[3, :] = -100  # a sequence without targets (sequence norm skips it)
    mask = torch.rand(B, T, generator=g)  # fractional per-token weights
    mask[1, 2:5] = 0
    return h, w, tgt, mask


@pytest.mark.parametrize("chunk", [1, 5, 16, 1000])
@pytest.mark.parametrize("smoothing,z,norm,masked", [(0.0, 0.0, "token", False), (0.1, 0.0, "token", False),
                                                     (0.0, 1e-3, "token", True), (0.2, 1e-2, "sequence", True),
                                                     (0.0, 0.0, "sequence", False)])
def test_chunked_equals_full_loss_and_gradients(chunk, smoothing, z, norm, masked):
    h, w, tgt, mask = _data()
    kw = dict(label_smoothing=smoothing, z_loss=z, norm=norm, loss_mask=mask if masked else None)
    full = lm_loss(h @ w.T, tgt, **kw)
    ga = torch.autograd.grad(full.total / full.count, (h, w))
    part = chunked_lm_loss(h, w, tgt, chunk_rows=chunk, **kw)
    gb = torch.autograd.grad(part.total / part.count, (h, w))
    assert part.count.item() == full.count.item()
    assert abs((part.total / part.count - full.total / full.count).item()) < 1e-6
    assert abs((part.ce / part.count - full.ce / full.count).item()) < 1e-6
    for a, b in zip(ga, gb):
        assert (a - b).abs().max().item() < 1e-6


def test_chunked_without_grad_gives_the_same_sums():
    h, w, tgt, _ = _data()
    with torch.no_grad():
        a = lm_loss(h @ w.T, tgt, z_loss=1e-3)
        b = chunked_lm_loss(h, w, tgt, chunk_rows=7, z_loss=1e-3)
    assert b.total.requires_grad is False
    assert b.total.item() == pytest.approx(a.total.item(), rel=1e-6)
    assert b.ce.item() == pytest.approx(a.ce.item(), rel=1e-6)


def test_chunked_under_bf16_autocast_is_close_to_full():
    h, w, tgt, _ = _data()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a = lm_loss(h @ w.T, tgt)
        b = chunked_lm_loss(h, w, tgt, chunk_rows=8)
    assert (b.total / b.count).item() == pytest.approx((a.total / a.count).item(), rel=1e-2)


def test_training_step_with_chunked_loss_equals_full_logits():
    """Through the real step (model(..., head=...) inside forward, doc ids, accumulation)."""
    cfg = ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=97)
    torch.manual_seed(0)
    base = GPT(cfg)
    g = torch.Generator().manual_seed(1)
    mbs = []
    for _ in range(2):
        x = torch.randint(0, 97, (3, 17), generator=g)
        doc = (torch.arange(16) // 5).expand(3, 16).contiguous()
        mbs.append(Batch(x[:, :-1], x[:, 1:], doc))
    results, models = [], []
    for rows in (0, 7):
        m = copy.deepcopy(base)
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        s = StepSettings(loss_chunk_rows=rows, label_smoothing=0.1, z_loss=1e-3)
        results.append(train_step(m, opt, mbs, s))
        models.append(m)
    assert results[1].loss == pytest.approx(results[0].loss, abs=1e-6)
    assert results[1].grad_norm == pytest.approx(results[0].grad_norm, rel=1e-5)
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        assert (a - b).abs().max().item() < 1e-6


def test_head_callable_receives_hidden_and_head_weight():
    cfg = ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=11)
    m = GPT(cfg)
    x = torch.randint(0, 11, (2, 8))
    logits = m(x, head=lambda h, w: functools.reduce(torch.matmul, [h, w.T]))
    torch.testing.assert_close(logits, m(x))
