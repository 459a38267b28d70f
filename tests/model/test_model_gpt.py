"""The GPT model: presets, every architecture option, masking, KV cache, checkpointing, compile."""

from __future__ import annotations

import dataclasses
import time

import pytest
import torch

from lmforge.config import ModelConfig, config_from_dict
from lmforge.model import GPT, PRESETS


def _cfg(**kw) -> ModelConfig:
    base = dict(n_layer=2, n_head=4, n_embd=32, block_size=24, vocab_size=50)
    base.update(kw)
    return ModelConfig(**base)


def _preset(name: str, **kw) -> ModelConfig:
    return config_from_dict({"model": {"preset": name, **kw}}).model


@pytest.mark.parametrize("name,params", [("gpt2-124m", 124_439_808), ("350m", 354_823_168)])
def test_gpt2_presets_have_the_published_parameter_counts(name, params):
    with torch.device("meta"):
        m = GPT(_preset(name))
    assert m.num_params() == params


def test_small_and_tiny_presets():
    with torch.device("meta"):
        small = GPT(_preset("small", vocab_size=256))
    # 6 blocks of attention (4 C^2) + SwiGLU (3 * C * 1024): ~10M without embeddings
    assert small.num_params(non_embedding=True) == pytest.approx(10.6e6, rel=0.05)
    assert set(PRESETS) >= {"tiny", "small", "gpt2-124m", "350m"}
    tiny = GPT(_preset("tiny", vocab_size=64))
    assert tiny.num_params() < 100_000


OPTIONS = [dict(norm="layernorm", mlp="gelu", pos_emb="learned", bias=True),
           dict(norm="rmsnorm", mlp="swiglu", pos_emb="rope"),
           dict(qk_norm=True, n_kv_head=2),
           dict(tie_embeddings=False, dropout=0.1)]


@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_options_forward_backward_and_causality(opts):
    torch.manual_seed(0)
    m = GPT(_cfg(**opts)).eval()
    x = torch.randint(0, 50, (2, 24))
    logits = m(x)
    assert logits.shape == (2, 24, 50)
    x2 = x.clone()
    x2[:, 12] = (x2[:, 12] + 1) % 50
    logits2 = m(x2)
    torch.testing.assert_close(logits[:, :12], logits2[:, :12])  # no peeking at later tokens
    assert not torch.allclose(logits[:, 12:], logits2[:, 12:])
    m.train()
    m(x).logsumexp(-1).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
    assert (m.lm_head.weight is m.wte.weight) == m.cfg.tie_embeddings
    if opts.get("norm") == "layernorm":
        assert isinstance(m.ln_f, torch.nn.LayerNorm)
    if opts.get("qk_norm"):
        assert m.blocks[0].attn.q_norm is not None


@pytest.mark.parametrize("pos_emb", ["rope", "learned"])
def test_document_mask_isolates_packed_documents(pos_emb):
    torch.manual_seed(0)
    m = GPT(_cfg(pos_emb=pos_emb)).eval()
    a, b = torch.randint(0, 50, (1, 10)), torch.randint(0, 50, (1, 14))
    packed = torch.cat([a, b], dim=1)
    doc = torch.tensor([[0] * 10 + [1] * 14])
    out = m(packed, doc_ids=doc)
    torch.testing.assert_close(out[:, :10], m(a), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[:, 10:], m(b), atol=1e-5, rtol=1e-5)  # positions restart per document


def test_kv_cache_decoding_equals_full_forward():
    torch.manual_seed(0)
    m = GPT(_cfg(n_kv_head=2)).eval()
    x = torch.randint(0, 50, (2, 20))
    full = m(x)
    cache = m.new_kv_cache(2, 24)
    pieces = [m(x[:, :8], kv_cache=cache), m(x[:, 8:13], kv_cache=cache)]
    pieces += [m(x[:, t:t + 1], kv_cache=cache) for t in range(13, 20)]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)


def test_gradient_checkpointing_gives_the_same_gradients():
    x = torch.randint(0, 50, (2, 24))
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        m = GPT(_cfg(dropout=0.1))
        m.grad_checkpointing = ckpt
        torch.manual_seed(1)
        m(x).logsumexp(-1).mean().backward()
        grads.append([p.grad.clone() for p in m.parameters()])
    for g0, g1 in zip(*grads):
        torch.testing.assert_close(g0, g1, atol=1e-6, rtol=1e-5)


def test_flops_per_token_counts_matmuls_and_attention():
    m = GPT(_cfg(tie_embeddings=False))
    C, L, T, V, H = 32, 2, 24, 50, 64 * 2  # swiglu hidden for 32 wide rounds up to 64
    matmul = L * (3 * C * C + C * C + C * 2 * H + H * C) + C * V
    assert m.flops_per_token(T) == 6 * matmul + 12 * L * C * T


@pytest.mark.slow  # the first inductor compile takes minutes on a shared 2-core machine
def test_compile_matches_eager_on_cpu():
    torch.manual_seed(0)
    cfg = dataclasses.replace(_preset("tiny", vocab_size=64), block_size=32)
    m = GPT(cfg)
    x = torch.randint(0, 64, (2, 32))
    eager = m(x)
    t0 = time.time()
    compiled = torch.compile(m)
    out = compiled(x)
    out.sum().backward()
    torch.testing.assert_close(out, eager, atol=1e-4, rtol=1e-4)
    assert all(p.grad is not None for p in m.parameters())
    print(f"compile + first step: {time.time() - t0:.1f} s")
