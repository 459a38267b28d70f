"""Typed configuration: one keyword-only dataclass per component, loaded from YAML.

    cfg = load_config("configs/quickstart.yaml", ["train.max_steps=50", "model.preset=tiny"])

* Unknown keys, wrong types and invalid values raise `ConfigError` naming the dotted key.
* Overrides are `section.key=value`; the value is parsed as YAML (`3e-4`, `true`, `[a, b]`).
* `model.preset` fills every model field the user did not set (see `lmforge.model.presets`).
* `to_dict(cfg)` / `dump_config(cfg, path)` give the resolved config written to RUN_DIR/config.yaml.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lmforge.errors import ConfigError


def _check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"config key '{key}': {msg}")


def _frac(value: float, key: str) -> None:
    _check(0.0 <= value <= 1.0, key, f"must be a fraction in [0, 1], got {value}")


@dataclass(kw_only=True)
class GopherQualityConfig:
    """Gopher quality rules (Rae et al. 2021, appendix A); defaults are the published values.
    Words are counted without pure-punctuation tokens."""

    enabled: bool = False
    min_words: int = 50
    """Reject with `gopher_short_doc` below this many words."""
    max_words: int = 100_000
    """Reject with `gopher_long_doc` above this many words."""
    min_mean_word_length: float = 3.0
    max_mean_word_length: float = 10.0
    max_symbol_word_ratio: float = 0.1
    """Max ratio of `#` and of ellipses (`...`, `…`) to words (`gopher_too_many_hashes/ellipsis`)."""
    max_bullet_lines: float = 0.9
    """Max fraction of lines starting with a bullet (•, -, *)."""
    max_ellipsis_lines: float = 0.3
    """Max fraction of lines ending with an ellipsis."""
    min_alpha_words: float = 0.8
    """Min fraction of words holding at least one letter."""
    min_stop_words: int = 2
    """Min number of distinct stop words present (`gopher_enough_stop_words`)."""
    stop_words: list[str] = field(default_factory=lambda: ["the", "be", "to", "of", "and", "that", "have", "with"])

    def __post_init__(self) -> None:
        _check(0 <= self.min_words <= self.max_words, "data.gopher_quality.min_words", "must be in [0, max_words]")
        _check(0 < self.min_mean_word_length <= self.max_mean_word_length, "data.gopher_quality.min_mean_word_length",
               "must be > 0 and <= max_mean_word_length")
        for k in ("max_symbol_word_ratio", "max_bullet_lines", "max_ellipsis_lines", "min_alpha_words"):
            _frac(getattr(self, k), f"data.gopher_quality.{k}")
        _check(self.min_stop_words >= 0, "data.gopher_quality.min_stop_words", "must be >= 0")


@dataclass(kw_only=True)
class GopherRepetitionConfig:
    """Gopher repetition rules (Rae et al. 2021, table A1); defaults are the published values."""

    enabled: bool = False
    dup_line_frac: float = 0.3
    """Max fraction of lines that repeat an earlier line."""
    dup_para_frac: float = 0.3
    """Max fraction of paragraphs that repeat an earlier paragraph."""
    dup_line_char_frac: float = 0.2
    """Max fraction of characters inside repeated lines."""
    dup_para_char_frac: float = 0.2
    """Max fraction of characters inside repeated paragraphs."""
    top_ngram_char_frac: list[float] = field(default_factory=lambda: [0.20, 0.18, 0.16])
    """For n = 2, 3, 4: max fraction of characters covered by the most frequent word n-gram."""
    dup_ngram_char_frac: list[float] = field(default_factory=lambda: [0.15, 0.14, 0.13, 0.12, 0.11, 0.10])
    """For n = 5 … 10: max fraction of characters inside repeated word n-grams."""

    def __post_init__(self) -> None:
        for k in ("dup_line_frac", "dup_para_frac", "dup_line_char_frac", "dup_para_char_frac"):
            _frac(getattr(self, k), f"data.gopher_repetition.{k}")
        _check(len(self.top_ngram_char_frac) == 3, "data.gopher_repetition.top_ngram_char_frac",
               "must hold 3 values (n = 2, 3, 4)")
        _check(len(self.dup_ngram_char_frac) == 6, "data.gopher_repetition.dup_ngram_char_frac",
               "must hold 6 values (n = 5 … 10)")


@dataclass(kw_only=True)
class C4Config:
    """C4 rules (Raffel et al. 2020 and the TFDS c4_utils code)."""

    enabled: bool = False
    mode: str = "lines"
    """`lines`: drop offending lines and keep the rest (C4's behaviour); `document`: reject the whole
    document at the first offending line (reason `c4_<rule>`)."""
    terminal_punct: bool = True
    """Lines must end in . ! ? " or ' (and not in an ellipsis)."""
    min_words_per_line: int = 3
    min_sentences: int = 5
    """Documents with fewer sentences (after line cleaning) are rejected (`c4_too_few_sentences`); 0 = off."""
    max_word_length: int = 1000
    """Lines holding a longer word are dropped."""
    remove_citations: bool = True
    """Remove Wikipedia-style [1], [edit], [citation needed] markers."""
    javascript: bool = True
    """Drop lines mentioning javascript."""
    policy: bool = True
    """Drop lines with cookie / terms-of-use / privacy-policy boilerplate."""
    lorem_ipsum: bool = True
    """Reject documents containing "lorem ipsum"."""
    curly_bracket: bool = True
    """Reject documents containing `{` (code, templates)."""

    def __post_init__(self) -> None:
        _check(self.mode in ("lines", "document"), "data.c4.mode", f"must be lines or document, got {self.mode!r}")
        _check(self.min_words_per_line >= 0 and self.min_sentences >= 0, "data.c4.min_sentences", "must be >= 0")


@dataclass(kw_only=True)
class FineWebConfig:
    """FineWeb's extra quality rules (Penedo et al. 2024)."""

    enabled: bool = False
    min_punct_line_ratio: float = 0.12
    """Min fraction of lines ending in terminal punctuation (`fineweb_line_punct_ratio`)."""
    max_dup_line_char_ratio: float = 0.1
    """Max fraction of characters in duplicated lines (`fineweb_char_dup_ratio`). The paper says 0.1;
    datatrove's code defaults to 0.01. We follow the paper."""
    max_short_line_ratio: float = 0.67
    """Max fraction of lines of at most `short_line_chars` characters (`fineweb_short_line_ratio`)."""
    short_line_chars: int = 30
    max_newline_word_ratio: float = 0.3
    """Max newlines per word (`fineweb_list_ratio`; in datatrove's code, not in the paper)."""

    def __post_init__(self) -> None:
        for k in ("min_punct_line_ratio", "max_dup_line_char_ratio", "max_short_line_ratio"):
            _frac(getattr(self, k), f"data.fineweb.{k}")
        _check(self.short_line_chars > 0, "data.fineweb.short_line_chars", "must be > 0")


@dataclass(kw_only=True)
class LanguageConfig:
    """Language identification with py3langid (model inside the wheel; normalised probabilities)."""

    enabled: bool = False
    languages: list[str] = field(default_factory=lambda: ["en"])
    """ISO 639-1 codes to keep; empty = keep every language (only annotate `lang`/`lang_score`)."""
    min_score: float = 0.65
    """Reject (`language_low_score`) when the top language's probability is below this."""

    def __post_init__(self) -> None:
        _frac(self.min_score, "data.language.min_score")


@dataclass(kw_only=True)
class PerplexityConfig:
    """Reject documents a reference n-gram language model finds too surprising."""

    enabled: bool = False
    reference: list[str] = field(default_factory=lambda: ["builtin:stdlib"])
    """Inputs (files, directories, globs, builtin:stdlib) of clean reference text to train the model on."""
    order: int = 3
    """n of the word n-gram model (interpolated Kneser-Ney)."""
    max_perplexity: float = 1000.0
    """Reject (`perplexity_too_high`) above this word-level perplexity."""
    max_reference_chars: int = 20_000_000
    """Train on at most this many characters of the reference."""

    def __post_init__(self) -> None:
        _check(1 <= self.order <= 6, "data.perplexity.order", "must be in 1..6")
        _check(self.max_perplexity > 1, "data.perplexity.max_perplexity", "must be > 1")
        _check(bool(self.reference) or not self.enabled, "data.perplexity.reference", "needs at least one input")


@dataclass(kw_only=True)
class NearDedupConfig:
    """MinHash-LSH near-duplicate removal (word n-gram shingles), across all inputs and workers."""

    enabled: bool = False
    ngram: int = 5
    """Words per shingle."""
    bands: int = 14
    rows: int = 8
    """bands × rows hashes; 14 × 8 finds pairs above ≈ 0.75 Jaccard similarity (FineWeb's setting)."""
    seed: int = 1

    def __post_init__(self) -> None:
        _check(self.ngram >= 1, "data.near_dedup.ngram", "must be >= 1")
        _check(self.bands >= 1 and self.rows >= 1, "data.near_dedup.bands", "bands and rows must be >= 1")


@dataclass(kw_only=True)
class DataConfig:
    inputs: list[str] = field(default_factory=list)
    """Files, directories or globs. `builtin:stdlib` is the corpus every Python carries
    (pydoc topics + standard-library docstrings)."""
    txt_mode: str = "paragraphs"
    """How a .txt file becomes documents: `file` (one per file), `paragraphs` (one per
    blank-line-separated block) or `lines` (one per non-empty line)."""
    text_field: str = "text"
    """JSONL/parquet field holding the text."""
    id_field: str | None = None
    """JSONL/parquet field holding the document id (default: file:line)."""
    encoding_errors: str = "replace"
    """Policy for bytes that are not valid UTF-8: `replace` (U+FFFD, counted in the report) or
    `reject` (the document is rejected with reason `invalid_utf8`)."""
    min_chars: int = 1
    """Documents shorter than this (after cleaning) are rejected as `too_short`."""
    max_chars: int = 1_000_000
    """Documents longer than this are rejected as `too_long`."""
    normalize_unicode: bool = True
    """NFC-normalise text."""
    strip_control: bool = True
    """Remove control characters other than newline and tab."""
    normalize_whitespace: bool = True
    """Collapse runs of spaces, strip line ends, at most one blank line in a row."""
    dedup: bool = True
    """Drop exact duplicates (after normalisation) with reason `duplicate`."""
    shard_docs: int = 50_000
    """Documents per clean output shard."""
    on_error: str = "skip"
    """A malformed record (bad JSONL line, missing text field): `skip` (rejected as `malformed_json` /
    `missing_field`, with a one-line warning naming file:line) or `fail` (stop with an error naming it)."""
    min_words: int = 0
    """Documents with fewer whitespace-separated words are rejected as `too_few_words` (0 = off)."""
    max_words: int = 0
    """Documents with more words are rejected as `too_many_words` (0 = off)."""
    fix_unicode: bool = True
    """Repair mojibake with ftfy ("cafÃ©" -> "café") before NFC."""
    html_extractor: str = "trafilatura"
    """Main-text extraction for HTML pages and WARC responses: `trafilatura` (falls back to selectolax
    where it finds nothing) or `selectolax` (all body text minus scripts and page chrome; faster)."""
    html_favor: str = "balanced"
    """trafilatura's trade-off: `balanced`, `precision` or `recall`."""
    html_comments: bool = False
    """Keep the comment sections of pages."""
    gopher_quality: GopherQualityConfig = field(default_factory=GopherQualityConfig)
    gopher_repetition: GopherRepetitionConfig = field(default_factory=GopherRepetitionConfig)
    c4: C4Config = field(default_factory=C4Config)
    fineweb: FineWebConfig = field(default_factory=FineWebConfig)
    language: LanguageConfig = field(default_factory=LanguageConfig)
    perplexity: PerplexityConfig = field(default_factory=PerplexityConfig)
    near_dedup: NearDedupConfig = field(default_factory=NearDedupConfig)
    workers: int = 1
    """Local worker processes; inputs are split between them by rank (file i goes to rank i % workers)."""
    seq_lengths: list[int] = field(default_factory=lambda: [256, 512, 1024, 2048, 4096])
    """Candidate sequence lengths for the report's "fraction of documents that fit" table."""
    tokenizer: str | None = None
    """Optional tokenizer.json (Hugging Face tokenizers) to measure lengths in tokens too."""
    plots: bool = True
    """Write length histograms (PNG) next to the report."""

    def __post_init__(self) -> None:
        _check(self.txt_mode in ("file", "paragraphs", "lines"), "data.txt_mode",
               f"must be file, paragraphs or lines, got {self.txt_mode!r}")
        _check(self.encoding_errors in ("replace", "reject"), "data.encoding_errors",
               f"must be replace or reject, got {self.encoding_errors!r}")
        _check(self.min_chars >= 0, "data.min_chars", "must be >= 0")
        _check(self.max_chars >= max(1, self.min_chars), "data.max_chars", "must be >= data.min_chars and >= 1")
        _check(self.shard_docs > 0, "data.shard_docs", "must be > 0")
        _check(self.on_error in ("skip", "fail"), "data.on_error", f"must be skip or fail, got {self.on_error!r}")
        _check(self.min_words >= 0 and self.max_words >= 0, "data.min_words", "must be >= 0")
        _check(self.max_words == 0 or self.max_words >= self.min_words, "data.max_words", "must be >= data.min_words")
        _check(self.html_extractor in ("trafilatura", "selectolax"), "data.html_extractor",
               f"must be trafilatura or selectolax, got {self.html_extractor!r}")
        _check(self.html_favor in ("balanced", "precision", "recall"), "data.html_favor",
               f"must be balanced, precision or recall, got {self.html_favor!r}")
        _check(self.workers >= 1, "data.workers", "must be >= 1")
        _check(all(n > 0 for n in self.seq_lengths), "data.seq_lengths", "must all be > 0")


@dataclass(kw_only=True)
class TokenizerConfig:
    kind: str = "bpe"
    """`bpe` (byte-level BPE, HF tokenizers), `char` (one id per character seen) or `byte` (256 ids)."""
    vocab_size: int = 8192
    """Target vocabulary size for `bpe`, including special tokens."""
    min_frequency: int = 2
    """Minimum pair frequency for a BPE merge."""
    max_train_bytes: int = 200_000_000
    """Train on at most this many bytes of the clean corpus (streamed, in corpus order)."""
    special_tokens: list[str] = field(default_factory=lambda: ["<pad>", "<unk>", "<bos>", "<eos>"])
    """Special tokens, given the first ids in this order. Must include <pad>, <unk>, <bos>, <eos>."""

    def __post_init__(self) -> None:
        _check(self.kind in ("bpe", "char", "byte"), "tokenizer.kind", f"must be bpe, char or byte, got {self.kind!r}")
        _check(self.vocab_size >= 260 or self.kind != "bpe", "tokenizer.vocab_size",
               "must be >= 260 for bpe (256 bytes + special tokens)")
        _check(self.max_train_bytes > 0, "tokenizer.max_train_bytes", "must be > 0")
        for t in ("<pad>", "<unk>", "<bos>", "<eos>"):
            _check(t in self.special_tokens, "tokenizer.special_tokens", f"must include {t}")


@dataclass(kw_only=True)
class TokensConfig:
    val_fraction: float = 0.05
    """Fraction of documents (chosen by a hash of their id, so deterministic) for validation."""
    split_seed: int = 0
    """Salt of the train/val split hash."""
    shard_tokens: int = 100_000_000
    """Tokens per .bin shard before a new one is started."""
    add_bos: bool = False
    """Prepend <bos> to every document (<eos> is always appended)."""
    workers: int = 1
    """Encoding worker processes (1 = encode in the stage's process, HF tokenizers still uses its
    own threads; N > 1 = N spawned processes with one tokenizer thread each)."""
    batch_bytes: int = 1_000_000
    """UTF-8 bytes of text per `encode_batch` call (one task per worker); bounds the stage's memory."""
    packing: str = "concat"
    """How training sequences are built: `concat` (concatenate documents and cut every seq_len
    tokens), `best_fit` (documents shorter than seq_len are never split; the rest is padding,
    masked out of the loss) or `budget` (no packing: one document per row, rows of similar length
    batched up to batch_size x seq_len tokens, padding masked out of the loss)."""
    prefetch: int = 2
    """Batches the loader prepares ahead in a background thread (0 = in the training thread)."""
    read_retries: int = 3
    """Retries of a failed shard read (with exponential backoff) before the loader stops."""
    retry_backoff: float = 0.05
    """Seconds before the first retry; doubled for each further retry."""
    mmap: bool = True
    """Memory-map token shards (fastest). false = read them with pread: slower, but an I/O error on
    a network file system becomes a retried read error instead of killing the process (SIGBUS)."""

    def __post_init__(self) -> None:
        _check(0.0 < self.val_fraction < 1.0, "tokens.val_fraction", "must be in (0, 1)")
        _check(self.shard_tokens >= 1024, "tokens.shard_tokens", "must be >= 1024")
        _check(self.workers >= 1, "tokens.workers", "must be >= 1")
        _check(self.batch_bytes >= 1, "tokens.batch_bytes", "must be >= 1")
        _check(self.packing in ("concat", "best_fit", "budget"), "tokens.packing",
               f"must be concat, best_fit or budget, got {self.packing!r}")
        _check(0 <= self.prefetch <= 8, "tokens.prefetch", "must be in [0, 8]")
        _check(self.read_retries >= 0, "tokens.read_retries", "must be >= 0")
        _check(self.retry_backoff >= 0, "tokens.retry_backoff", "must be >= 0")


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
    qk_norm: bool = False
    tie_embeddings: bool = True
    bias: bool = False
    dropout: float = 0.0
    init_std: float = 0.02

    def __post_init__(self) -> None:
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


@dataclass(kw_only=True)
class TrainConfig:
    batch_size: int = 16
    """Sequences per micro-batch (per process)."""
    grad_accum: int = 1
    """Micro-batches per optimiser step."""
    lr: float = 1e-3
    """Peak learning rate."""
    min_lr: float = 1e-4
    """Learning rate at the end of the decay."""
    schedule: str = "cosine"
    """After linear warmup: `cosine` or `linear` decay to min_lr, `constant`, `wsd`
    (warmup-stable-decay), `step` (x gamma at each milestone) or `exponential` (x gamma per step)."""
    warmup_steps: int = 100
    """Steps of linear warmup from lr/warmup_steps to lr."""
    decay_fraction: float = 0.2
    """`wsd`: fraction of the total steps spent in the final linear decay to min_lr."""
    milestones: list[int] = field(default_factory=list)
    """`step`: optimiser steps at which the rate is multiplied by `gamma`."""
    gamma: float = 0.1
    """`step`: factor at each milestone; `exponential`: factor per step (floored at min_lr)."""
    weight_decay: float = 0.1
    """Applied to matmul weights only (not norms, biases, embeddings)."""
    beta1: float = 0.9
    """AdamW beta1 (first-moment decay)."""
    beta2: float = 0.95
    """AdamW beta2 (second-moment decay)."""
    eps: float = 1e-8
    """AdamW epsilon."""
    grad_clip: float = 1.0
    """Max global gradient norm; 0 disables clipping."""
    max_steps: int = 1000
    """Optimiser steps; 0 = no step budget."""
    max_epochs: float = 0.0
    """Passes over the training tokens; 0 = no epoch budget."""
    max_time: float = 0.0
    """Wall-clock seconds of training; 0 = no time budget."""
    max_tokens: int = 0
    """Training tokens (all processes together); 0 = no token budget."""
    label_smoothing: float = 0.0
    """Cross-entropy label smoothing (as `F.cross_entropy(label_smoothing=...)`)."""
    z_loss: float = 0.0
    """Weight of the z-loss, mean of logsumexp(logits)^2 over target tokens (PaLM uses 1e-4); 0 = off."""
    loss_norm: str = "token"
    """`token`: mean over the target tokens of the whole optimiser step; `sequence`: each sequence's
    mean, averaged over the sequences of the step."""
    nan_policy: str = "skip"
    """On a NaN/Inf loss or gradient: `skip` the update, `rollback` to the last checkpoint and skip
    the offending batches, or `abort` (stop with an error; the last checkpoint stays intact)."""
    max_bad_steps: int = 10
    """Abort after this many consecutive NaN/Inf steps, whatever the policy."""
    doc_masks: bool = True
    """Attend only within each document of a packed sequence."""
    shuffle: bool = True
    """Shuffle the training sequences (the order is a function of seed and epoch)."""
    peak_flops: float = 0.0
    """Peak FLOP/s of one device for MFU; 0 = a table of known GPUs (MFU is not logged on CPU)."""
    eval_every: int = 200
    """Validate every N steps (and at the end); 0 = only at the end."""
    eval_batches: int = 20
    """Validation micro-batches per evaluation (0 = the whole split)."""
    ckpt_every: int = 500
    """Checkpoint every N steps (and at the end); 0 = only at the end."""
    keep_last: int = 2
    """Complete checkpoints kept besides `best`."""
    log_every: int = 10
    """Write a `train` metrics event every N steps."""
    precision: str = "auto"
    """`auto` (bf16 on a CUDA GPU that supports it, else fp32: bf16 autocast is several times slower
    than fp32 on CPUs without native bf16), `fp32`, `bf16` (autocast) or `fp16` (CUDA, GradScaler)."""
    device: str = "auto"
    """`auto`, `cpu`, `cuda` or `cuda:N`."""
    compile: bool = False
    """torch.compile the model."""
    grad_checkpointing: bool = False
    """Recompute each block's activations in the backward pass (less memory, ~30% more compute)."""
    early_stop_patience: int = 0
    """Stop after this many evaluations in a row without a val-loss improvement; 0 = off."""
    early_stop_min_delta: float = 0.0
    """Smallest val-loss decrease that counts as an improvement for early stopping."""
    sample_every: int = 0
    """Log samples for `eval.prompts` every N steps (kind `sample`); 0 = off."""
    async_checkpoint: bool = False
    """Write checkpoints in a background thread; training waits only for a CPU copy of the state."""
    auto_micro_batch: bool = False
    """Find the largest micro-batch that fits (a dry-run step at start-up, largest first) and
    accumulate to keep train.batch_size x train.grad_accum sequences per process and step."""
    distributed: str = "ddp"
    """Under torchrun (WORLD_SIZE > 1): `ddp` (replicate) or `fsdp` (FSDP2 fully_shard: shard
    parameters, gradients and optimiser state)."""
    seed: int = 1337
    """Seed of the weights' initialisation, dropout and the data order."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self) -> None:
        _check(self.batch_size > 0, "train.batch_size", "must be > 0")
        _check(self.grad_accum > 0, "train.grad_accum", "must be > 0")
        _check(self.lr > 0, "train.lr", f"must be > 0, got {self.lr}")
        _check(0 <= self.min_lr <= self.lr, "train.min_lr", f"must be in [0, train.lr], got {self.min_lr}")
        _check(self.schedule in ("cosine", "linear", "constant", "wsd", "step", "exponential"), "train.schedule",
               f"must be cosine, linear, constant, wsd, step or exponential, got {self.schedule!r}")
        _check(0.0 < self.decay_fraction <= 1.0, "train.decay_fraction", "must be in (0, 1]")
        _check(all(m > 0 for m in self.milestones) and self.milestones == sorted(self.milestones),
               "train.milestones", "must be increasing positive step numbers")
        _check(0.0 < self.gamma <= 1.0, "train.gamma", "must be in (0, 1]")
        _check(self.max_tokens >= 0, "train.max_tokens", "must be >= 0")
        _check(0.0 <= self.label_smoothing < 1.0, "train.label_smoothing", "must be in [0, 1)")
        _check(self.z_loss >= 0.0, "train.z_loss", "must be >= 0")
        _check(self.loss_norm in ("token", "sequence"), "train.loss_norm",
               f"must be token or sequence, got {self.loss_norm!r}")
        _check(self.nan_policy in ("skip", "rollback", "abort"), "train.nan_policy",
               f"must be skip, rollback or abort, got {self.nan_policy!r}")
        _check(self.max_bad_steps >= 1, "train.max_bad_steps", "must be >= 1")
        _check(self.peak_flops >= 0.0, "train.peak_flops", "must be >= 0")
        _check(self.early_stop_patience >= 0, "train.early_stop_patience", "must be >= 0")
        _check(self.early_stop_min_delta >= 0.0, "train.early_stop_min_delta", "must be >= 0")
        _check(self.sample_every >= 0, "train.sample_every", "must be >= 0")
        _check(self.distributed in ("ddp", "fsdp"), "train.distributed",
               f"must be ddp or fsdp, got {self.distributed!r}")
        _check(self.warmup_steps >= 0, "train.warmup_steps", "must be >= 0")
        _check(self.weight_decay >= 0, "train.weight_decay", "must be >= 0")
        _check(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "train.beta1", "betas must be in [0, 1)")
        _check(self.grad_clip >= 0, "train.grad_clip", "must be >= 0")
        _check(self.max_steps >= 0 and self.max_epochs >= 0 and self.max_time >= 0, "train.max_steps",
               "budgets must be >= 0")
        _check(self.max_steps > 0 or self.max_epochs > 0 or self.max_time > 0 or self.max_tokens > 0,
               "train.max_steps",
               "set at least one budget: train.max_steps, train.max_epochs, train.max_tokens or train.max_time")
        _check(self.eval_every >= 0, "train.eval_every", "must be >= 0")
        _check(self.ckpt_every >= 0, "train.ckpt_every", "must be >= 0")
        _check(self.keep_last >= 1, "train.keep_last", "must be >= 1")
        _check(self.log_every > 0, "train.log_every", "must be > 0")
        _check(self.precision in ("auto", "fp32", "bf16", "fp16"), "train.precision",
               f"must be auto, fp32, bf16 or fp16, got {self.precision!r}")


@dataclass(kw_only=True)
class EvalConfig:
    batch_size: int = 16
    """Rows of `block_size` tokens per evaluation forward pass."""
    max_batches: int = 0
    """Validation batches for `lmforge eval` (0 = the whole split)."""
    prompts: list[str] = field(default_factory=lambda: ["The "])
    """Prompts for the samples printed at the end of `lmforge run`."""
    num_samples: int = 3
    """Samples generated for the report (cycling through `prompts`)."""
    max_new_tokens: int = 100
    """Tokens generated per sample."""
    temperature: float = 0.8
    """0 = greedy."""
    top_k: int = 0
    """0 = off."""
    top_p: float = 1.0
    """1.0 = off."""
    min_p: float = 0.0
    """Drop tokens below min_p x the top token's probability; 0 = off."""
    repetition_penalty: float = 1.0
    """CTRL-style penalty on tokens already present (HF semantics); 1.0 = off."""
    seed: int = 0
    """Sampling seed."""
    stratify: bool = True
    """Also score the run's validation documents from the clean data, one by one, to report figures
    by `stratify_by` meta fields and by length (re-tokenizes the validation documents)."""
    stratify_by: list[str] = field(default_factory=lambda: ["source", "lang"])
    """Document meta fields to stratify by (fields no document has are skipped)."""
    length_buckets: list[int] = field(default_factory=lambda: [64, 256, 1024])
    """Increasing document-length edges in tokens: [64, 256] gives <64, 64-255, >=256."""
    max_strata: int = 20
    """Most values shown per meta field; the smaller ones are pooled as "(other)"."""
    overfit_patience: int = 3
    """Overfitting verdict: validation loss rising for this many evaluations in a row while the
    training loss falls."""
    report_samples: int = 16
    """Samples `lmforge eval` generates for the diversity figures and eval/samples.jsonl (0 = none)."""
    fluency_reference: str | None = None
    """Run directory (optionally `RUN_DIR:best|latest`) whose model scores each sample's perplexity
    as a fluency proxy; default: the evaluated model itself."""

    def __post_init__(self) -> None:
        _check(self.batch_size > 0, "eval.batch_size", "must be > 0")
        _check(self.max_batches >= 0, "eval.max_batches", "must be >= 0 (0 = the whole split)")
        _check(self.num_samples >= 0, "eval.num_samples", "must be >= 0")
        _check(self.max_new_tokens > 0, "eval.max_new_tokens", "must be > 0")
        _check(self.temperature >= 0, "eval.temperature", "must be >= 0 (0 = greedy)")
        _check(self.top_k >= 0, "eval.top_k", "must be >= 0")
        _check(0 < self.top_p <= 1, "eval.top_p", "must be in (0, 1]")
        _check(0 <= self.min_p <= 1, "eval.min_p", "must be in [0, 1]")
        _check(self.repetition_penalty > 0, "eval.repetition_penalty", "must be > 0 (1 = off)")
        _check(all(b > 0 for b in self.length_buckets) and self.length_buckets == sorted(set(self.length_buckets)),
               "eval.length_buckets", f"must be strictly increasing positive token counts, got {self.length_buckets}")
        _check(self.max_strata >= 2, "eval.max_strata", "must be >= 2")
        _check(self.overfit_patience >= 1, "eval.overfit_patience", "must be >= 1")
        _check(self.report_samples >= 0, "eval.report_samples", "must be >= 0 (0 = none)")


@dataclass(kw_only=True)
class MonitorConfig:
    tensorboard: bool = True
    """Write TensorBoard event files to RUN_DIR/tb (needs the `tensorboard` package)."""
    tb_flush_secs: float = 10.0
    """Flush TensorBoard events at least this often (seconds)."""
    histogram_every: int = 0
    """Write weight and gradient histograms to TensorBoard every N steps; 0 = never."""
    console: bool = False
    """Also print every train/val event as one line (for logs; the progress bar is separate)."""
    quiet: bool = False
    """No progress bars and no console metric lines (the env LMFORGE_QUIET=1 does the same)."""
    ema_window: int = 20
    """Window of the EMA that smooths the logged loss (`loss_smooth`): alpha = 2 / (window + 1)."""
    system_every: float = 10.0
    """Log a `system` event (RSS, CUDA memory, GPU util/temperature/power) at most every N seconds; 0 = never."""
    plots: bool = True
    """Write PNG curves to RUN_DIR/plots when training ends."""
    anomaly: bool = True
    """Run the anomaly detector on every logged train/val/system event."""
    grad_norm_max: float = 10.0
    """A gradient norm above this is a `grad_explosion` anomaly; 0 disables the guard."""
    grad_norm_min: float = 1e-7
    """A gradient norm below this is a `grad_vanishing` anomaly; 0 disables the guard."""
    zscore_window: int = 128
    """Rolling window (train events) for the z-score detectors of loss and gradient norm."""
    zscore_threshold: float = 6.0
    """A loss or gradient norm more than this many standard deviations above the window mean is an anomaly."""
    zscore_warmup: int = 32
    """Values the window must hold before the z-score and spike detectors fire."""
    spike_factor: float = 3.0
    """A loss above `spike_factor` x the running (window) mean is a `loss_spike`; 0 disables it."""
    overfit_patience: int = 3
    """Validation loss rising for this many evaluations in a row while train loss falls is `overfitting`;
    0 disables it."""
    leak_window: int = 30
    """System samples over which steadily growing RSS is a `memory_leak`; 0 disables it."""
    leak_min_mb: float = 512.0
    """Minimum RSS growth (MiB) across `leak_window` samples to call it a leak."""
    gpu_temp_max: float = 87.0
    """A GPU temperature (C) at or above this is a `gpu_temperature` anomaly; 0 disables it."""

    def __post_init__(self) -> None:
        _check(self.tb_flush_secs > 0, "monitor.tb_flush_secs", "must be > 0")
        _check(self.histogram_every >= 0, "monitor.histogram_every", "must be >= 0 (0 = never)")
        _check(self.ema_window >= 1, "monitor.ema_window", "must be >= 1")
        _check(self.system_every >= 0, "monitor.system_every", "must be >= 0 (0 = never)")
        _check(self.grad_norm_max >= 0, "monitor.grad_norm_max", "must be >= 0 (0 = off)")
        _check(self.grad_norm_min >= 0, "monitor.grad_norm_min", "must be >= 0 (0 = off)")
        _check(self.grad_norm_max == 0 or self.grad_norm_min < self.grad_norm_max, "monitor.grad_norm_min",
               "must be below monitor.grad_norm_max")
        _check(self.zscore_window >= 2, "monitor.zscore_window", "must be >= 2")
        _check(self.zscore_threshold > 0, "monitor.zscore_threshold", "must be > 0")
        _check(2 <= self.zscore_warmup <= self.zscore_window, "monitor.zscore_warmup",
               f"must be in [2, monitor.zscore_window={self.zscore_window}]")
        _check(self.spike_factor == 0 or self.spike_factor > 1, "monitor.spike_factor", "must be > 1 (0 = off)")
        _check(self.overfit_patience >= 0, "monitor.overfit_patience", "must be >= 0 (0 = off)")
        _check(self.leak_window == 0 or self.leak_window >= 3, "monitor.leak_window", "must be >= 3 (0 = off)")
        _check(self.leak_min_mb > 0, "monitor.leak_min_mb", "must be > 0")
        _check(self.gpu_temp_max >= 0, "monitor.gpu_temp_max", "must be >= 0 (0 = off)")


@dataclass(kw_only=True)
class Config:
    name: str = "run"
    """Run name; the default run directory is runs/NAME."""
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    tokens: TokensConfig = field(default_factory=TokensConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    """Metrics stream, TensorBoard, anomaly detection, plots and progress bars."""


# ----------------------------------------------------------------------------------------- loading

def _type_ok(value: Any, tp: Any) -> tuple[bool, Any]:
    """Check `value` against annotation `tp`; returns (ok, coerced value)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            ok, v = _type_ok(value, arg)
            if ok:
                return True, v
        return False, value
    if tp is type(None):
        return value is None, value
    if origin is list:
        if not isinstance(value, list):
            return False, value
        (item_tp,) = typing.get_args(tp)
        out = []
        for item in value:
            ok, v = _type_ok(item, item_tp)
            if not ok:
                return False, value
            out.append(v)
        return True, out
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        if isinstance(value, str):  # PyYAML (YAML 1.1) reads `3e-4` as a string
            try:
                return True, float(value)
            except ValueError:
                return False, value
        return False, value
    if tp is str:
        return isinstance(value, str), value
    return True, value


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"config key '{prefix or '<root>'}': expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            close = sorted(names, key=lambda n: _edit_distance(n, str(key)))[:3]
            raise ConfigError(f"unknown config key '{dotted}' (did you mean one of: {', '.join(close)}?)")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value or {}, dotted)
            continue
        ok, coerced = _type_ok(value, tp)
        if not ok:
            raise ConfigError(f"config key '{dotted}': expected {_type_name(tp)}, got {value!r}")
        kwargs[key] = coerced
    try:
        return cls(**kwargs)
    except TypeError as e:  # pragma: no cover - all fields have defaults
        raise ConfigError(f"config section '{prefix}': {e}") from e


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _edit_distance(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """`["train.lr=3e-4", "data.inputs=[a.txt]"]` -> nested dict. Values are parsed as YAML."""
    tree: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({e})") from e
        if isinstance(value, str) and value.lower() in ("none", "null"):
            value = None
        node = tree
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with another override")
        node[parts[-1]] = value
    return tree


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def config_from_dict(data: dict[str, Any]) -> Config:
    """Build and validate a Config from a nested dict, applying the model preset."""
    data = dict(data or {})
    model = data.get("model")
    if isinstance(model, dict) and model.get("preset"):
        from lmforge.model.presets import get_preset

        try:
            preset = get_preset(model["preset"])
        except KeyError as e:
            raise ConfigError(f"config key 'model.preset': {e.args[0]}") from None
        data["model"] = {**preset, **model}
    return _build(Config, data, "")


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Load YAML at `path` (None = defaults only) and apply dotted overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {p} is not valid YAML: {e}") from e
        if not isinstance(data, dict):
            raise ConfigError(f"config file {p} must hold a mapping of sections (data, model, train, ...)")
    if overrides:
        data = _merge(data, parse_overrides(overrides))
    return config_from_dict(data)


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True)


def fingerprint(*parts: Any) -> str:
    """Stable short hash of config sections / values (for stage skip markers)."""
    blob = json.dumps([to_dict(p) if dataclasses.is_dataclass(p) else p for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
