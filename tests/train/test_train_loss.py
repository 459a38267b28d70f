"""The loss: matches F.cross_entropy (ignore index, label smoothing), masks, z-loss, normalisation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lmforge.train.loss import lm_loss, loss_denominator


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 11, generator=g)
    targets = torch.randint(0, 11, (3, 5), generator=g)
    targets[0, :2] = -100
    targets[2, 4] = -100
    return logits, targets


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_token_mean_matches_cross_entropy(data, smoothing):
    logits, targets = data
    out = lm_loss(logits, targets, label_smoothing=smoothing)
    ref = F.cross_entropy(logits.view(-1, 11), targets.view(-1), ignore_index=-100, label_smoothing=smoothing)
    assert out.count.item() == 12
    assert (out.total / out.count).item() == pytest.approx(ref.item(), rel=1e-6)
    assert torch.equal(out.total, out.ce)
    assert loss_denominator(targets) == 12


def test_loss_mask_equals_ignoring(data):
    logits, targets = data
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[1, 1:3] = False
    masked = lm_loss(logits, targets, loss_mask=mask)
    ignored = targets.clone()
    ignored[1, 1:3] = -100
    ref = lm_loss(logits, ignored)
    assert masked.count.item() == ref.count.item() == 10
    assert masked.total.item() == pytest.approx(ref.total.item(), rel=1e-6)
    assert loss_denominator(targets, mask) == 10


def test_z_loss_adds_logsumexp_squared(data):
    logits, targets = data
    plain = lm_loss(logits, targets)
    z = lm_loss(logits, targets, z_loss=1e-2)
    valid = targets != -100
    lse = torch.logsumexp(logits, dim=-1)[valid]
    assert z.ce.item() == pytest.approx(plain.ce.item(), rel=1e-6)
    assert (z.total - z.ce).item() == pytest.approx(1e-2 * lse.square().sum().item(), rel=1e-5)


def test_sequence_norm_averages_sequence_means(data):
    logits, targets = data
    targets = targets.clone()
    targets[1] = -100  # a sequence without targets does not count
    out = lm_loss(logits, targets, norm="sequence")
    per_seq = []
    for b in (0, 2):
        per_seq.append(F.cross_entropy(logits[b], targets[b], ignore_index=-100).item())
    assert out.count.item() == 2 == loss_denominator(targets, norm="sequence")
    assert (out.total / out.count).item() == pytest.approx(sum(per_seq) / 2, rel=1e-6)


def test_gradient_flows_only_through_targets(data):
    logits, targets = data
    logits = logits.clone().requires_grad_(True)
    out = lm_loss(logits, targets)
    out.total.backward()
    assert torch.all(logits.grad[0, :2] == 0)
    assert torch.all(logits.grad[0, 2] != 0)
