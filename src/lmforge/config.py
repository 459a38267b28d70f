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

from lmforge.data.config import (  # noqa: F401  (re-exported)
    C4Config,
    DataConfig,
    FineWebConfig,
    GopherQualityConfig,
    GopherRepetitionConfig,
    LanguageConfig,
    NearDedupConfig,
    PerplexityConfig,
)
from lmforge.errors import ConfigError
from lmforge.monitor.config import MonitorConfig  # noqa: F401  (re-exported)
from lmforge.train.config import TrainConfig  # noqa: F401  (re-exported)
from lmforge.validate import check as _check


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
