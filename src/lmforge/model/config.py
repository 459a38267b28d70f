"""The `model:` section: the decoder-only transformer's shape.

Loaded through `lmforge.config.load_config`; `lmforge.configtools` checks types and names the key at fault.
"""

from __future__ import annotations

from dataclasses import dataclass

from lmforge.validate import check as _check
from lmforge.validate import finite as _finite


@dataclass(kw_only=True)
class ModelConfig:
    preset: str | None = None
    """Name in `lmforge.model.presets.PRESETS`; fills every field not set explicitly."""
    n_layer: int = 4
    n_head: int = 4
    n_kv_head: int | None = None
    """Key/value heads (grouped-query attention); default = n_head."""
    n_embd: int = 128
    block_size: int = 256
    """Context length (tokens per training sequence)."""
    vocab_size: int = 0
    """0 = take it from the trained tokenizer."""
    mlp: str = "swiglu"
    """`swiglu` or `gelu`."""
    mlp_hidden: int = 0
    """0 = 4*n_embd for gelu, round(8/3*n_embd) to a multiple of 64 for swiglu."""
    norm: str = "rmsnorm"
    """`rmsnorm` or `layernorm`."""
    norm_eps: float = 1e-5
    pos_emb: str = "rope"
    """`rope` or `learned`."""
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None
    """RoPE frequency scaling as in HF `rope_parameters`: `{rope_type: linear, factor: F}` or `{rope_type:
    llama3, factor, low_freq_factor, high_freq_factor, original_max_position_embeddings}`; None = plain RoPE.
    Set by `train.init_from` from a Hugging Face checkpoint (see `lmforge.model.rope`)."""
    qk_norm: bool = False
    tie_embeddings: bool = True
    bias: bool = False
    dropout: float = 0.0
    init_std: float = 0.02
    attention: str = "auto"
    """Attention kernel (lmforge.model.attention): `auto` (packed documents: FlexAttention on CUDA,
    variable-length SDPA elsewhere; unpacked: SDPA is_causal, flash on CUDA), `sdpa`, `flex` (CUDA
    training; forward only on CPU) or `dense` (SDPA with a (B, 1, T, T) mask: the reference)."""

    def __post_init__(self) -> None:
        _finite(self, "model")
        _check(self.n_layer > 0, "model.n_layer", "must be > 0")
        _check(self.n_head > 0, "model.n_head", "must be > 0")
        _check(self.n_embd % self.n_head == 0, "model.n_embd", f"must be divisible by model.n_head ({self.n_head})")
        kv = self.n_kv_head or self.n_head
        _check(self.n_head % kv == 0, "model.n_kv_head", "must divide model.n_head")
        _check((self.n_embd // self.n_head) % 2 == 0 or self.pos_emb != "rope", "model.n_embd",
               "head size (n_embd / n_head) must be even for rope")
        _check(self.block_size > 0, "model.block_size", "must be > 0")
        _check(self.vocab_size >= 0, "model.vocab_size", "must be >= 0 (0 = from the tokenizer)")
        _check(self.mlp in ("swiglu", "gelu"), "model.mlp", f"must be swiglu or gelu, got {self.mlp!r}")
        _check(self.norm in ("rmsnorm", "layernorm"), "model.norm", f"must be rmsnorm or layernorm, got {self.norm!r}")
        _check(self.pos_emb in ("rope", "learned"), "model.pos_emb", f"must be rope or learned, got {self.pos_emb!r}")
        _check(0.0 <= self.dropout < 1.0, "model.dropout", "must be in [0, 1)")
        _check(self.attention in ("auto", "sdpa", "flex", "dense"), "model.attention",
               f"must be auto, sdpa, flex or dense, got {self.attention!r}")
        _check(self.rope_theta > 0, "model.rope_theta",
               f"must be > 0 (the RoPE base, e.g. 10000), got {self.rope_theta}")
        _check(self.init_std >= 0, "model.init_std", f"must be >= 0 (e.g. 0.02), got {self.init_std}")
        _check(self.norm_eps > 0, "model.norm_eps", f"must be > 0 (e.g. 1e-5), got {self.norm_eps}")
        if self.rope_scaling is not None:
            from lmforge.model.rope import scaling_problem

            _check(isinstance(self.rope_scaling, dict), "model.rope_scaling",
                   "must be a mapping (rope_type, factor, ...) or null")
            problem = scaling_problem(self.rope_scaling)
            _check(problem is None, "model.rope_scaling", str(problem))
