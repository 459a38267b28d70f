"""Train a tokenizer (stage 2) and save it as a Hugging Face `tokenizer.json` + `meta.json`.

* `bpe`: byte-level BPE (GPT-2 style) trained with HF `tokenizers` on at most `max_train_bytes`.
* `char`: one id per character seen in the training text; unseen characters map to `<unk>`.
  Stored as a BPE model without merges, so HF tokenizers/transformers read it unchanged.
* `byte`: the 256 bytes (ByteLevel alphabet, no merges); id = byte value + number of specials.

Special tokens always take the first ids, in `cfg.special_tokens` order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import Regex, decoders, models, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer

from lmforge.errors import ConfigError, DataError
from lmforge.io import atomic_write_json, atomic_write_text
from lmforge.tokenizer.config import TokenizerConfig
from lmforge.tokenizer.core import META_FILE, TOKENIZER_FILE, Tokenizer, bytes_to_unicode, fingerprint_bytes

# Splitting into words before the (merge-free) char model keeps HF's per-word cache effective;
# the pattern matches every character, so nothing is lost.
_CHAR_SPLIT = r"\s+|\w+|[^\w\s]+"


class _Budget:
    """Streams texts until `max_bytes` UTF-8 bytes have been seen (the last text is cut to fit)."""

    def __init__(self, texts: Iterable[str], max_bytes: int) -> None:
        self.texts, self.max_bytes = texts, max_bytes
        self.bytes = 0
        self.docs = 0

    def __iter__(self) -> Iterator[str]:
        for text in self.texts:
            if self.bytes >= self.max_bytes:
                return
            raw = text.encode("utf-8")
            if self.bytes + len(raw) > self.max_bytes:
                raw = raw[: self.max_bytes - self.bytes]
                text = raw.decode("utf-8", errors="ignore")  # never split a character
            self.bytes += len(raw)
            self.docs += 1
            yield text


def _train_bpe(cfg: TokenizerConfig, texts: Iterable[str]) -> HFTokenizer:
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency, special_tokens=list(cfg.special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def _fixed_vocab(specials: list[str], symbols: Iterable[str], pre: pre_tokenizers.PreTokenizer,
                 dec: decoders.Decoder) -> HFTokenizer:
    vocab = {t: i for i, t in enumerate(specials)}
    for s in symbols:
        vocab.setdefault(s, len(vocab))
    tok = HFTokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", fuse_unk=False))
    tok.pre_tokenizer = pre
    tok.decoder = dec
    tok.add_special_tokens(list(specials))
    return tok


def _train_char(cfg: TokenizerConfig, texts: Iterable[str]) -> HFTokenizer:
    seen: set[str] = set()
    for text in texts:
        seen.update(text)
    pre = pre_tokenizers.Split(Regex(_CHAR_SPLIT), behavior="isolated")
    return _fixed_vocab(list(cfg.special_tokens), sorted(seen), pre, decoders.Fuse())


def _train_byte(cfg: TokenizerConfig) -> HFTokenizer:
    b2u = bytes_to_unicode()
    pre = pre_tokenizers.ByteLevel(add_prefix_space=False)
    return _fixed_vocab(list(cfg.special_tokens), (b2u[b] for b in range(256)), pre, decoders.ByteLevel())


def train_tokenizer(cfg: TokenizerConfig, texts: Iterable[str], out_dir: str | Path) -> Tokenizer:
    """Train a tokenizer of `cfg.kind` on `texts` (at most `cfg.max_train_bytes`), save it to
    `out_dir/tokenizer.json` + `out_dir/meta.json` and return it loaded."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.kind == "pretrained":  # nothing to train: copy the tokenizer and record its special-token roles
        from lmforge.tokenizer.core import load_tokenizer
        from lmforge.tokenizer.pretrained import install_pretrained

        if not cfg.path:
            raise ConfigError("config key 'tokenizer.path': tokenizer.kind=pretrained needs a tokenizer.json or a "
                              "Hugging Face folder (or train.init_from, whose tokenizer is then used)")
        install_pretrained(cfg.path, out)
        return load_tokenizer(out)
    budget = _Budget(texts, cfg.max_train_bytes)
    if cfg.kind == "bpe":
        hf = _train_bpe(cfg, budget)
    elif cfg.kind == "char":
        hf = _train_char(cfg, budget)
    else:
        hf = _train_byte(cfg)
        for _ in budget:  # the byte vocabulary needs no text; still count what was offered
            pass
    if budget.docs == 0 or budget.bytes == 0:
        raise DataError(f"no text to train the tokenizer on (writing {out}); check the data stage's output "
                        "(data/report.md) and data.inputs")
    serialized = hf.to_str()
    fp = fingerprint_bytes(serialized.encode("utf-8"))
    tok = Tokenizer(hf, fingerprint=fp, kind=cfg.kind, path=out / TOKENIZER_FILE)
    meta = {
        "kind": cfg.kind, "vocab_size": tok.vocab_size, "fingerprint": fp,
        "special_tokens": {t: hf.token_to_id(t) for t in cfg.special_tokens},
        "pad_id": tok.pad_id, "unk_id": tok.unk_id, "bos_id": tok.bos_id, "eos_id": tok.eos_id,
        "trained_bytes": budget.bytes, "trained_docs": budget.docs,
        "target_vocab_size": cfg.vocab_size if cfg.kind == "bpe" else None,
    }
    atomic_write_text(out / TOKENIZER_FILE, serialized)
    atomic_write_json(out / META_FILE, meta)
    return tok
