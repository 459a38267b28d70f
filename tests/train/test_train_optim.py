"""Learning-rate schedules at known steps, and AdamW parameter groups."""

from __future__ import annotations

import math

import pytest
import torch

from lmforge.config import ModelConfig, TrainConfig
from lmforge.model import GPT
from lmforge.train.optim import build_optimizer, lr_at, param_groups


def cfg(**kw) -> TrainConfig:
    base = dict(lr=1.0, min_lr=0.1, warmup_steps=10, max_steps=110)
    base.update(kw)
    return TrainConfig(**base)


def test_warmup_is_linear_from_lr_over_warmup():
    c = cfg()
    assert [lr_at(s, c, 110) for s in (0, 4, 9)] == [pytest.approx(0.1), pytest.approx(0.5), pytest.approx(1.0)]


def test_cosine_known_points():
    c = cfg(schedule="cosine")
    assert lr_at(10, c, 110) == pytest.approx(1.0)
    assert lr_at(60, c, 110) == pytest.approx(0.55)  # halfway: min + (max - min) / 2
    assert lr_at(35, c, 110) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi / 4)))
    assert lr_at(110, c, 110) == pytest.approx(0.1)
    assert lr_at(500, c, 110) == pytest.approx(0.1)  # past the horizon: stays at min_lr


def test_linear_and_constant():
    c = cfg(schedule="linear")
    assert lr_at(60, c, 110) == pytest.approx(0.55)
    assert lr_at(110, c, 110) == pytest.approx(0.1)
    k = cfg(schedule="constant")
    assert lr_at(5, k, 110) == pytest.approx(0.6)
    assert lr_at(10, k, 110) == lr_at(109, k, 110) == 1.0


def test_wsd_stable_then_decay():
    c = cfg(schedule="wsd", decay_fraction=0.2)  # decay over the last 22 of 110 steps: from step 88
    assert lr_at(50, c, 110) == 1.0
    assert lr_at(87, c, 110) == 1.0
    assert lr_at(88, c, 110) == pytest.approx(1.0)
    assert lr_at(99, c, 110) == pytest.approx(1.0 - 0.9 * 11 / 22)
    assert lr_at(110, c, 110) == pytest.approx(0.1)


def test_step_milestones():
    c = cfg(schedule="step", milestones=[50, 80], gamma=0.5)
    assert lr_at(49, c, 110) == 1.0
    assert lr_at(50, c, 110) == 0.5
    assert lr_at(80, c, 110) == 0.25
    assert lr_at(109, c, 110) == 0.25


def test_exponential_floored_at_min_lr():
    c = cfg(schedule="exponential", gamma=0.9)
    assert lr_at(10, c, 110) == 1.0
    assert lr_at(12, c, 110) == pytest.approx(0.81)
    assert lr_at(100, c, 110) == pytest.approx(0.1)  # 0.9**90 < 0.1


def test_no_warmup_starts_at_lr():
    assert lr_at(0, cfg(warmup_steps=0), 100) == pytest.approx(1.0)


@pytest.mark.parametrize("tie", [True, False])
def test_param_groups_decay_only_matmul_weights(tie):
    m = GPT(ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=50, tie_embeddings=tie,
                        bias=True, norm="layernorm", qk_norm=True))
    groups = {g["name"]: g for g in param_groups(m, 0.1)}
    decay = {id(p) for p in groups["decay"]["params"]}
    names = {id(p): n for n, p in m.named_parameters()}
    decayed = sorted(names[i] for i in decay)
    assert all(n.endswith("weight") and ("c_attn" in n or "c_proj" in n or "c_fc" in n or n == "lm_head.weight")
               for n in decayed)
    assert ("lm_head.weight" in decayed) == (not tie)  # tied head = the embedding: no decay
    assert groups["decay"]["weight_decay"] == 0.1 and groups["no_decay"]["weight_decay"] == 0.0
    # every parameter exactly once
    all_ids = [id(p) for g in groups.values() for p in g["params"]]
    assert len(all_ids) == len(set(all_ids)) == len(list(m.parameters()))
    assert 4 * 2 == sum(1 for n in decayed if "blocks" in n and n.endswith("weight"))


def test_build_optimizer_cpu_fused_matches_the_reference_adamw():
    m = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=20))
    ref = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=20))
    ref.load_state_dict(m.state_dict())
    cfg = TrainConfig(lr=1e-2, beta1=0.8, beta2=0.9, weight_decay=0.1)
    opt = build_optimizer(m, cfg, torch.device("cpu"))
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.param_groups[0]["betas"] == (0.8, 0.9) and opt.param_groups[0]["fused"]
    from lmforge.train.optim import param_groups

    plain = torch.optim.AdamW(param_groups(ref, cfg.weight_decay), lr=cfg.lr, betas=(0.8, 0.9), eps=cfg.eps,
                              foreach=False)
    x = torch.randint(0, 20, (2, 8))
    for _ in range(3):
        for model, o in ((m, opt), (ref, plain)):
            model(x).square().mean().backward()
            o.step()
            o.zero_grad()
    for (n, a), (_, b) in zip(m.named_parameters(), ref.named_parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=n)
