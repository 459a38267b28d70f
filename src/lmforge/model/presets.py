"""Named model presets, shared by configs, tests and docs.

A preset fills every `model.*` field the user did not set; `vocab_size: 0` means "from the tokenizer".
"""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    # For tests: builds and steps in milliseconds.
    "tiny": dict(n_layer=2, n_head=2, n_embd=32, block_size=64, mlp="swiglu", norm="rmsnorm"),
    # nanoGPT's shakespeare-char baby model shape (4 layers, 4 heads, 128 wide).
    "baby": dict(n_layer=4, n_head=4, n_embd=128, block_size=64, dropout=0.0),
    # ~10M parameters without embeddings (6 x 12 x 384^2).
    "small": dict(n_layer=6, n_head=6, n_embd=384, block_size=256),
    # GPT-2 small shape (124M with a 50257 vocab and tied embeddings).
    "gpt2-124m": dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, mlp="gelu", norm="layernorm",
                      pos_emb="learned", bias=True, vocab_size=50257),
    # GPT-2 medium shape (~350M).
    "350m": dict(n_layer=24, n_head=16, n_embd=1024, block_size=1024, mlp="gelu", norm="layernorm",
                 pos_emb="learned", bias=True, vocab_size=50257),
}


def get_preset(name: str) -> dict[str, Any]:
    if name not in PRESETS:
        raise KeyError(f"unknown model preset {name!r}; known: {', '.join(PRESETS)}")
    return dict(PRESETS[name])
