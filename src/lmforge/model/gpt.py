"""Decoder-only transformer: architecture only (no loss, no optimiser, no data).

    model = GPT(cfg)                       # cfg: lmforge.model.config.ModelConfig with vocab_size set
    logits = model(idx)                    # (B, T, V), causal
    logits = model(idx, doc_ids=doc_ids)   # block-diagonal causal attention for packed documents
    out = model(idx, head=fn)              # fn(hidden (B, T, C), lm_head.weight): e.g. a chunked loss
    cache = model.new_kv_cache(B, max_len); model(prompt, kv_cache=cache); model(next_tok, kv_cache=cache)

Options: RoPE or learned positions, RMSNorm or LayerNorm, SwiGLU or GELU MLP, grouped-query
attention, QK-norm, tied embeddings, dropout, scaled residual initialisation (GPT-2).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from lmforge.model.attention import AttentionSpec, attend, attention_spec
from lmforge.model.config import ModelConfig
from lmforge.model.rope import rope_inv_freq


def _norm(cfg: ModelConfig, dim: int) -> nn.Module:
    if cfg.norm == "rmsnorm":
        return nn.RMSNorm(dim, eps=cfg.norm_eps)
    return nn.LayerNorm(dim, eps=cfg.norm_eps, bias=cfg.bias)


def mlp_hidden(cfg: ModelConfig) -> int:
    if cfg.mlp_hidden:
        return cfg.mlp_hidden
    if cfg.mlp == "gelu":
        return 4 * cfg.n_embd
    return 64 * math.ceil(8 * cfg.n_embd / 3 / 64)  # SwiGLU: 2/3 of 4x, keeps params ~ a GELU MLP


def positions_from_doc_ids(doc_ids: torch.Tensor) -> torch.Tensor:
    """Positions that restart at 0 where the document id changes. (B, T) -> (B, T)."""
    B, T = doc_ids.shape
    t = torch.arange(T, device=doc_ids.device).expand(B, T)
    is_start = torch.ones_like(doc_ids, dtype=torch.bool)
    is_start[:, 1:] = doc_ids[:, 1:] != doc_ids[:, :-1]
    seg_start = torch.where(is_start, t, torch.zeros_like(t)).cummax(dim=1).values
    return t - seg_start


class KVCache:
    """Pre-allocated keys/values for incremental decoding; `pos` tokens are filled."""

    def __init__(self, n_layer: int, batch: int, n_kv_head: int, max_len: int, head_dim: int,
                 device: torch.device, dtype: torch.dtype) -> None:
        shape = (n_layer, batch, n_kv_head, max_len, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.max_len = max_len
        self.pos = 0

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        T = k.size(2)
        if self.pos + T > self.max_len:
            raise ValueError(f"KV cache overflow: {self.pos} + {T} > max_len {self.max_len}")
        self.k[layer, :, :, self.pos:self.pos + T] = k
        self.v[layer, :, :, self.pos:self.pos + T] = v
        return self.k[layer, :, :, :self.pos + T], self.v[layer, :, :, :self.pos + T]


class Rotary(nn.Module):
    def __init__(self, head_dim: int, max_len: int, theta: float, scaling: dict | None = None) -> None:
        super().__init__()
        inv_freq = rope_inv_freq(head_dim, theta, scaling)  # (hd/2,), HF's RoPE scalings included
        freqs = torch.outer(torch.arange(max_len, dtype=torch.float32), inv_freq)  # (L, hd/2)
        # full head width: out = x * cos + swap_halves(x) * sin, with sin negated on the first half
        self.register_buffer("cos", torch.cat([freqs.cos(), freqs.cos()], -1), persistent=False)  # (L, hd)
        self.register_buffer("sin", torch.cat([-freqs.sin(), freqs.sin()], -1), persistent=False)

    def tables(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin for `positions` (T,) or (B, T), shaped to broadcast over (B, T, heads, hd).
        Computed once per forward and shared by every layer."""
        cos, sin = self.cos[positions], self.sin[positions]  # (T, hd) or (B, T, hd)
        return cos.unsqueeze(-2), sin.unsqueeze(-2)

    @staticmethod
    def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Rotate x (B, T, heads, hd) by the tables; the two halves of each head form the pairs
        (the `rotate_half` convention of Hugging Face Llama, so exported weights need no permutation):
        (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin), as three kernels (roll swaps the halves)."""
        xf = x.float()
        return torch.addcmul(xf * cos, xf.roll(x.size(-1) // 2, dims=-1), sin).type_as(x)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        self.layer = layer
        self.n_head, self.n_kv = cfg.n_head, cfg.n_kv_head or cfg.n_head
        self.hd = cfg.n_embd // cfg.n_head
        self.c_attn = nn.Linear(cfg.n_embd, (self.n_head + 2 * self.n_kv) * self.hd, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.q_norm = nn.RMSNorm(self.hd, eps=cfg.norm_eps) if cfg.qk_norm else None
        self.k_norm = nn.RMSNorm(self.hd, eps=cfg.norm_eps) if cfg.qk_norm else None
        self.dropout = cfg.dropout
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None,
                spec: AttentionSpec | torch.Tensor | None, kv_cache: KVCache | None) -> torch.Tensor:
        B, T, C = x.shape
        nh, nkv = self.n_head, self.n_kv
        qkv = self.c_attn(x).view(B, T, nh + 2 * nkv, self.hd)  # heads stay in (B, T, h, hd) until SDPA
        q, k, v = qkv.split([nh, nkv, nkv], dim=2)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
            if rope is not None:
                q, k = Rotary.rotate(q, *rope), Rotary.rotate(k, *rope)
        elif rope is not None:  # one rotation for the q and k heads together: half the small ops
            q, k = Rotary.rotate(qkv[:, :, :nh + nkv], *rope).split([nh, nkv], dim=2)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, h, T, hd)
        dropout_p = self.dropout if self.training else 0.0
        if isinstance(spec, AttentionSpec):  # training / scoring: the configured kernel
            y = attend(q, k, v, spec, dropout_p)  # (B, nh, T, hd)
        else:  # decoding with a KV cache: spec is None or an offset causal mask for chunked prefill
            if kv_cache is not None:
                k, v = kv_cache.update(self.layer, k, v)
            is_causal = spec is None and (kv_cache is None or kv_cache.pos == 0) and T > 1
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=spec, is_causal=is_causal,
                                               enable_gqa=self.n_kv != self.n_head, dropout_p=dropout_p)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_drop(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        hidden = mlp_hidden(cfg)
        self.swiglu = cfg.mlp == "swiglu"
        self.c_fc = nn.Linear(cfg.n_embd, hidden * (2 if self.swiglu else 1), bias=cfg.bias)
        self.c_proj = nn.Linear(hidden, cfg.n_embd, bias=cfg.bias)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c_fc(x)
        if self.swiglu:
            gate, up = h.chunk(2, dim=-1)
            h = F.silu(gate) * up
        else:
            h = F.gelu(h, approximate="tanh")
        return self.drop(self.c_proj(h))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        self.ln_1, self.attn = _norm(cfg, cfg.n_embd), Attention(cfg, layer)
        self.ln_2, self.mlp = _norm(cfg, cfg.n_embd), MLP(cfg)

    def forward(self, x, rope, mask, kv_cache):
        x = x + self.attn(self.ln_1(x), rope, mask, kv_cache)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.vocab_size <= 0:
            raise ValueError("ModelConfig.vocab_size must be set (it is taken from the tokenizer)")
        self.cfg = cfg
        self.grad_checkpointing = False
        """Recompute each block in the backward pass (set by the trainer from train.grad_checkpointing)."""
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd) if cfg.pos_emb == "learned" else None
        self.rope = Rotary(cfg.n_embd // cfg.n_head, cfg.block_size, cfg.rope_theta,
                           cfg.rope_scaling) if cfg.pos_emb == "rope" else None
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layer))
        self.ln_f = _norm(cfg, cfg.n_embd)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: scale residual projections by 1/sqrt(2L)
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=cfg.init_std / math.sqrt(2 * cfg.n_layer))

    def _init_weights(self, m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=self.cfg.init_std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=self.cfg.init_std)

    def forward(self, idx: torch.Tensor, *, doc_ids: torch.Tensor | None = None,
                positions: torch.Tensor | None = None, kv_cache: KVCache | None = None,
                head: Callable[[torch.Tensor, torch.Tensor], Any] | None = None) -> Any:
        """idx: (B, T) token ids -> logits (B, T, V).

        doc_ids (B, T): tokens attend only to earlier tokens of the same document (the kernel of
        `model.attention`); positions restart at each document unless `positions` is given.
        kv_cache: incremental decoding. head: return `head(hidden (B, T, C), lm_head.weight)`
        instead of the logits (a fused/chunked loss that never holds (B, T, V)); it runs inside
        forward, so DDP, FSDP2 and torch.compile see the head weight used there.
        """
        B, T = idx.shape
        start = kv_cache.pos if kv_cache is not None else 0
        if start + T > self.cfg.block_size:
            raise ValueError(f"sequence of {start + T} tokens exceeds block_size {self.cfg.block_size}")
        if doc_ids is not None and positions is None:
            positions = positions_from_doc_ids(doc_ids)
        if kv_cache is None:
            mask = attention_spec(self.cfg.attention, doc_ids, T, idx.device)
        elif doc_ids is not None:
            raise ValueError("doc_ids with a KV cache: decode one document at a time")
        elif start > 0 and T > 1:  # chunked prefill: causal with an offset
            mask = torch.ones(T, start + T, dtype=torch.bool, device=idx.device).tril(diagonal=start)
        else:
            mask = None
        if positions is None:
            positions = torch.arange(start, start + T, device=idx.device)
        x = self.wte(idx)  # (B, T, C)
        if self.wpe is not None:
            x = x + self.wpe(positions)
        x = self.drop(x)
        rope = self.rope.tables(positions) if self.rope is not None else None
        for block in self.blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                # keep only the block input; recompute its activations during backward (RNG replayed)
                x = checkpoint(block, x, rope, mask, kv_cache, use_reentrant=False)
            else:
                x = block(x, rope, mask, kv_cache)
        if kv_cache is not None:
            kv_cache.pos += T
        if head is not None:
            return head(self.ln_f(x), self.lm_head.weight)
        return self.lm_head(self.ln_f(x))  # (B, T, V)

    def new_kv_cache(self, batch: int, max_len: int | None = None) -> KVCache:
        p = self.wte.weight
        hd = self.cfg.n_embd // self.cfg.n_head
        return KVCache(self.cfg.n_layer, batch, self.cfg.n_kv_head or self.cfg.n_head,
                       max_len or self.cfg.block_size, hd, p.device, p.dtype)

    def num_params(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.wte.weight.numel() + (self.wpe.weight.numel() if self.wpe is not None else 0)
        return n

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token (forward + backward = 3x forward): 6 * matmul params plus
        attention scores and values, 12 * L * C * T (PaLM appendix B)."""
        T = seq_len or self.cfg.block_size
        matmul = sum(m.weight.numel() for m in self.modules() if isinstance(m, nn.Linear))
        return 6.0 * matmul + 12.0 * self.cfg.n_layer * self.cfg.n_embd * T
