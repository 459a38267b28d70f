"""The `tokenizer:` section: which tokenizer to train or load.

Loaded through `lmforge.config.load_config`; `lmforge.configtools` checks types and names the key at fault.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lmforge.validate import check as _check


@dataclass(kw_only=True)
class TokenizerConfig:
    kind: str = "bpe"
    """`bpe` (byte-level BPE, HF tokenizers), `char` (one id per character seen), `byte` (256 ids) or
    `pretrained` (an existing Hugging Face tokenizer, `tokenizer.path`; nothing is trained)."""
    path: str | None = None
    """`pretrained`: a tokenizer.json, or a Hugging Face model/tokenizer folder holding one (its
    tokenizer_config.json names the special tokens). Empty with `train.init_from` = the source model's
    tokenizer, so a continued model keeps its vocabulary."""
    vocab_size: int = 8192
    """Target vocabulary size for `bpe`, including special tokens."""
    min_frequency: int = 2
    """Minimum pair frequency for a BPE merge."""
    max_train_bytes: int = 200_000_000
    """Train on at most this many bytes of the clean corpus (streamed, in corpus order)."""
    special_tokens: list[str] = field(default_factory=lambda: ["<pad>", "<unk>", "<bos>", "<eos>"])
    """Special tokens, given the first ids in this order. Must include <pad>, <unk>, <bos>, <eos>."""

    def __post_init__(self) -> None:
        _check(self.kind in ("bpe", "char", "byte", "pretrained"), "tokenizer.kind",
               f"must be bpe, char, byte or pretrained, got {self.kind!r}")
        _check(self.path is None or self.kind == "pretrained", "tokenizer.path",
               f"is only read with tokenizer.kind=pretrained (kind is {self.kind!r})")
        _check(self.vocab_size >= 260 or self.kind != "bpe", "tokenizer.vocab_size",
               "must be >= 260 for bpe (256 bytes + special tokens)")
        _check(self.max_train_bytes > 0, "tokenizer.max_train_bytes", "must be > 0")
        for t in ("<pad>", "<unk>", "<bos>", "<eos>"):
            _check(t in self.special_tokens, "tokenizer.special_tokens", f"must include {t}")
