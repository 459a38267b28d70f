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

    def __post_init__(self) -> None:
        _check(self.txt_mode in ("file", "paragraphs", "lines"), "data.txt_mode",
               f"must be file, paragraphs or lines, got {self.txt_mode!r}")
        _check(self.encoding_errors in ("replace", "reject"), "data.encoding_errors",
               f"must be replace or reject, got {self.encoding_errors!r}")
        _check(self.min_chars >= 0, "data.min_chars", "must be >= 0")
        _check(self.max_chars >= max(1, self.min_chars), "data.max_chars", "must be >= data.min_chars and >= 1")
        _check(self.shard_docs > 0, "data.shard_docs", "must be > 0")
        _check(self.on_error in ("skip", "fail"), "data.on_error", f"must be skip or fail, got {self.on_error!r}")


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
    """Encoding worker processes."""

    def __post_init__(self) -> None:
        _check(0.0 < self.val_fraction < 1.0, "tokens.val_fraction", "must be in (0, 1)")
        _check(self.shard_tokens >= 1024, "tokens.shard_tokens", "must be >= 1024")
        _check(self.workers >= 1, "tokens.workers", "must be >= 1")


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
    decay_fraction: float = 0.2
    """`wsd`: fraction of the total steps spent in the final linear decay to min_lr."""
    milestones: list[int] = field(default_factory=list)
    """`step`: optimiser steps at which the rate is multiplied by `gamma`."""
    gamma: float = 0.1
    """`step`: factor at each milestone; `exponential`: factor per step (floored at min_lr)."""
    weight_decay: float = 0.1
    """Applied to matmul weights only (not norms, biases, embeddings)."""
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
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
    the offending batches, or `abort` (checkpoint-free exit with an error)."""
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
    precision: str = "auto"
    """`auto` (bf16 where supported, else fp32), `fp32`, `bf16` or `fp16` (CUDA)."""
    device: str = "auto"
    """`auto`, `cpu`, `cuda` or `cuda:N`."""
    compile: bool = False
    """torch.compile the model."""
    seed: int = 1337
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
    max_batches: int = 0
    """Validation batches for `lmforge eval` (0 = the whole split)."""
    prompts: list[str] = field(default_factory=lambda: ["The "])
    """Prompts for the samples printed at the end of `lmforge run`."""
    num_samples: int = 3
    max_new_tokens: int = 100
    temperature: float = 0.8
    top_k: int = 0
    """0 = off."""
    top_p: float = 1.0
    """1.0 = off."""
    seed: int = 0

    def __post_init__(self) -> None:
        _check(self.batch_size > 0, "eval.batch_size", "must be > 0")
        _check(self.max_new_tokens > 0, "eval.max_new_tokens", "must be > 0")
        _check(self.temperature >= 0, "eval.temperature", "must be >= 0 (0 = greedy)")
        _check(self.top_k >= 0, "eval.top_k", "must be >= 0")
        _check(0 < self.top_p <= 1, "eval.top_p", "must be in (0, 1]")


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
