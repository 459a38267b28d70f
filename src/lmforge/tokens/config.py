"""The `tokens:` section: the train/val split, shards, packing and the loader.

Loaded through `lmforge.config.load_config`; `lmforge.configtools` checks types and names the key at fault.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lmforge.data.config import EXECUTORS, RayConfig, SlurmConfig
from lmforge.validate import check as _check


@dataclass(kw_only=True)
class TokensConfig:
    val_fraction: float = 0.05
    """Fraction held out for validation: of the documents (`val_split: hash`) or of each source's
    characters (`val_split: tail`)."""
    val_split: str = "hash"
    """`hash`: documents chosen by a hash of their id (deterministic; for collections of documents).
    `tail`: the last `val_fraction` of each source's text, contiguous, as nanoGPT splits a single
    text (a hash split of one text's paragraphs is easier: neighbours share scenes and names)."""
    split_seed: int = 0
    """Salt of the train/val split hash."""
    shard_tokens: int = 100_000_000
    """Tokens per .bin shard before a new one is started."""
    add_bos: bool = False
    """Prepend <bos> to every document (<eos> is always appended)."""
    workers: int = 1
    """Encoding worker processes per rank task (1 = encode in the rank's process with HF tokenizers' own
    thread pool, two batches in flight; N > 1 = N spawned processes with one tokenizer thread each)."""
    ranks: int = 1
    """Rank tasks: clean shard i is tokenized by rank i % ranks; the tokens are the same for any number."""
    executor: str = "local"
    """What runs the rank tasks: `local` (processes here), `ray` or `slurm` (see `data.executor`)."""
    ray: RayConfig = field(default_factory=RayConfig)
    slurm: SlurmConfig = field(default_factory=SlurmConfig)
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
    mix: dict[str, float] = field(default_factory=dict)
    """Weighted data mixture `{SOURCE_OR_GLOB: weight}`: a share weight / sum(weights) of the training
    sequences comes from the group whose key matches the documents' `mix_field` (exactly or as a glob;
    first key wins); every source must match a key (weight 0 leaves it out). {} = one stream, sources in
    proportion to their size. Deterministic per seed and rank, exactly resumable; changing it does not
    re-tokenize (see `lmforge.tokens.mixture`)."""
    mix_field: str = "source"
    """The document meta field recorded per document at tokenize time, which `mix` keys match (readers
    set `source` to the input file; JSONL fields such as `dataset` are kept in meta)."""
    mmap: bool = True
    """Memory-map token shards (fastest). false = read them with pread: slower, but an I/O error on
    a network file system becomes a retried read error instead of killing the process (SIGBUS)."""

    def __post_init__(self) -> None:
        _check(0.0 < self.val_fraction < 1.0, "tokens.val_fraction", "must be in (0, 1)")
        _check(self.val_split in ("hash", "tail"), "tokens.val_split", f"must be hash or tail, got {self.val_split!r}")
        _check(self.shard_tokens >= 1024, "tokens.shard_tokens", "must be >= 1024")
        _check(self.workers >= 1, "tokens.workers", "must be >= 1")
        _check(self.ranks >= 1, "tokens.ranks", "must be >= 1")
        _check(self.executor in EXECUTORS, "tokens.executor", f"must be local, ray or slurm, got {self.executor!r}")
        _check(self.batch_bytes >= 1, "tokens.batch_bytes", "must be >= 1")
        _check(self.packing in ("concat", "best_fit", "budget"), "tokens.packing",
               f"must be concat, best_fit or budget, got {self.packing!r}")
        _check(0 <= self.prefetch <= 8, "tokens.prefetch", "must be in [0, 8]")
        _check(self.read_retries >= 0, "tokens.read_retries", "must be >= 0")
        _check(self.retry_backoff >= 0, "tokens.retry_backoff", "must be >= 0")
        _check(isinstance(self.mix, dict) and all(isinstance(k, str) and isinstance(v, (int, float))
                                                  and not isinstance(v, bool) and v >= 0 for k, v in self.mix.items()),
               "tokens.mix", "must map source names or globs to weights >= 0")
        _check(not self.mix or sum(self.mix.values()) > 0, "tokens.mix", "needs at least one weight > 0")
        _check(not self.mix or self.packing != "budget", "tokens.mix",
               "works with tokens.packing concat or best_fit, not budget")
        _check(bool(self.mix_field), "tokens.mix_field", "must name a document meta field")
