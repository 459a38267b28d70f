"""Test helpers shared by tests/eval and tests/export: a tiny byte-level BPE tokenizer, tiny GPTs and a
scripted stand-in model, all built in-process (no files, no network)."""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from lmforge.config import ModelConfig
from lmforge.model import GPT

TEXT = ("The king is dead. Long live the king! The queen walks in the garden, and the fool sings. "
        "Now is the winter of our discontent made glorious summer by this sun of York. ") * 20


class TinyTokenizer:
    """Same surface as lmforge.tokenizer's Tokenizer: encode, decode, ids of the specials."""

    def __init__(self, tok: Tokenizer) -> None:
        self.hf = tok
        self.pad_id, self.unk_id, self.bos_id, self.eos_id = (tok.token_to_id(t) for t in
                                                               ("<pad>", "<unk>", "<bos>", "<eos>"))
        self.vocab_size = tok.get_vocab_size()
        self.fingerprint = hashlib.sha256(tok.to_str().encode()).hexdigest()[:16]

    def encode(self, text: str) -> list[int]:
        return self.hf.encode(text).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.hf.encode_batch(texts)]

    def decode(self, ids) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=True)


def build_tokenizer(vocab_size: int = 300) -> TinyTokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<unk>", "<bos>", "<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([TEXT], trainer)
    return TinyTokenizer(tok)


def tiny_model(vocab_size: int, seed: int = 0, **kw) -> GPT:
    torch.manual_seed(seed)
    cfg = dict(n_layer=2, n_head=2, n_embd=32, block_size=32, vocab_size=vocab_size)
    cfg.update(kw)
    model = GPT(ModelConfig(**cfg))
    with torch.no_grad():  # larger weights than the init: sharper, more varied distributions
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(8.0)
    return model.eval()


class ScriptedModel(torch.nn.Module):
    """A stand-in for GPT with known logits: either `logits` at every position, or a one-hot-ish
    `script`: the token after position p is `script[p]` (so script = prompt[1:] + continuation)."""

    def __init__(self, vocab_size: int, *, script: list[int] | None = None, logits: torch.Tensor | None = None,
                 block_size: int = 64) -> None:
        super().__init__()
        from types import SimpleNamespace

        self.cfg = SimpleNamespace(vocab_size=vocab_size, block_size=block_size)
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.script, self.fixed = script, logits
        self.calls = 0

    def new_kv_cache(self, batch: int, max_len: int | None = None):
        from types import SimpleNamespace

        return SimpleNamespace(pos=0)

    def forward(self, idx, *, doc_ids=None, positions=None, kv_cache=None):
        self.calls += 1
        B, T = idx.shape
        start = kv_cache.pos if kv_cache is not None else 0
        if kv_cache is not None:
            kv_cache.pos += T
        out = torch.zeros(B, T, self.cfg.vocab_size)
        for t in range(T):
            if self.fixed is not None:
                out[:, t] = self.fixed
            else:
                out[:, t, self.script[min(start + t, len(self.script) - 1)]] = 10.0
        return out


class FakeSplit:
    """The TokenDataset surface eval uses: doc(i), read, doc_starts, num_docs, num_tokens, bytes."""

    def __init__(self, docs: list[list[int]], nbytes: int) -> None:
        self.flat = np.array([t for d in docs for t in d], dtype=np.int64)
        self.doc_starts = np.concatenate([[0], np.cumsum([len(d) for d in docs])]).astype(np.int64)
        self.num_docs, self.num_tokens, self.bytes = len(docs), len(self.flat), nbytes

    def doc(self, i: int) -> np.ndarray:
        return self.flat[self.doc_starts[i]:self.doc_starts[i + 1]]

    def read(self, s: int, e: int) -> np.ndarray:
        return self.flat[s:e]


def train_on(model: GPT, ids: torch.Tensor, steps: int, batch: int = 8) -> GPT:
    """A few AdamW steps of next-token prediction on random windows of `ids`; returns the model in
    eval mode (a seeded, deterministic stand-in for a trained checkpoint)."""
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    T = model.cfg.block_size
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        starts = torch.randint(0, len(ids) - T - 1, (batch,), generator=g)
        x = torch.stack([ids[s:s + T] for s in starts])
        y = torch.stack([ids[s + 1:s + T + 1] for s in starts])
        loss = torch.nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()
