"""The `eval:` section: validation, sampling, strata and the report.

Loaded through `lmforge.config.load_config`; `lmforge.configtools` checks types and names the key at fault.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from lmforge.errors import ConfigError
from lmforge.validate import check as _check
from lmforge.validate import finite as _finite

SPLIT_SET = "split"
"""The name of the run's own validation split (`tokens.val_fraction`) among the evaluated sets."""
_SET_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")


@dataclass(kw_only=True)
class EvalSetConfig:
    """One named held-out set (`eval.sets.<name>`)."""

    inputs: list[str] = field(default_factory=list)
    """Files, directories or globs, read like `data.inputs` (same readers and cleaning; no filters)."""
    txt_mode: str = "paragraphs"
    """How a .txt input becomes documents (as `data.txt_mode`): file, paragraphs, lines or continuous."""
    text_field: str = "text"
    """JSONL/parquet field holding the text."""


def _build_sets(raw: Any) -> dict[str, EvalSetConfig]:
    from lmforge.configtools import build_section

    if not isinstance(raw, dict):
        raise ConfigError(f"config key 'eval.sets': expected a mapping of name -> {{inputs: [...]}}, got {raw!r}")
    out = {}
    for name, spec in raw.items():
        key = f"eval.sets.{name}"
        if not isinstance(name, str) or not _SET_NAME.match(name) or name == SPLIT_SET:
            raise ConfigError(f"config key '{key}': a set name is letters, digits, _ . - (max 64) and not "
                              f"{SPLIT_SET!r} (the run's own validation split)")
        if isinstance(spec, list):  # shorthand: name: [file, ...]
            spec = {"inputs": spec}
        cfg = spec if isinstance(spec, EvalSetConfig) else build_section(EvalSetConfig, spec or {}, key)
        _check(bool(cfg.inputs) and all(isinstance(x, str) and x for x in cfg.inputs), f"{key}.inputs",
               "must list at least one file, directory or glob")
        _check(cfg.txt_mode in ("file", "paragraphs", "lines", "continuous"), f"{key}.txt_mode",
               f"must be file, paragraphs, lines or continuous, got {cfg.txt_mode!r}")
        out[name] = cfg
    return out


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

    sets: dict[str, EvalSetConfig] = field(default_factory=dict)
    """Named held-out sets, e.g. `{tail: {inputs: [heldout.txt], txt_mode: continuous}}` (or the
    shorthand `{name: [file, ...]}`): tokenized into RUN/eval_sets/<name>/ by `lmforge run`, scored in
    the training loop at every `train.eval_every` (`val/<name>/loss|ppl|bpb` in metrics.jsonl and
    TensorBoard) and by `lmforge eval` (a table per set). The run's own split is the set `split`."""
    select_by: str = SPLIT_SET
    """The set whose loss drives the `best` checkpoint and early stopping: `split` (the run's own
    validation split) or a name from `eval.sets`."""
    tasks: list[str] = field(default_factory=list)
    """lm-evaluation-harness tasks (`pip install 'lmforge[lmeval]'`) run in the training loop every
    `tasks_every` steps and by `lmforge eval --tasks`. Datasets must be in the local HF cache."""
    tasks_every: int = 0
    """Run `eval.tasks` every N training steps (0 = only `lmforge eval`)."""
    tasks_limit: int = 0
    """Examples per task in the training loop (0 = all)."""
    tasks_include_path: str | None = None
    """A folder of custom lm-eval task YAMLs (as `lm_eval --include_path`)."""
    num_fewshot: int = 0
    """Few-shot examples per task prompt."""

    def __post_init__(self) -> None:
        _finite(self, "eval")
        self.sets = _build_sets(self.sets)
        _check(self.select_by == SPLIT_SET or self.select_by in self.sets, "eval.select_by",
               f"must be {SPLIT_SET!r} or one of eval.sets ({', '.join(self.sets) or 'none defined'}), "
               f"got {self.select_by!r}")
        _check(self.tasks_every >= 0, "eval.tasks_every", "must be >= 0")
        _check(self.tasks_limit >= 0, "eval.tasks_limit", "must be >= 0")
        _check(self.num_fewshot >= 0, "eval.num_fewshot", "must be >= 0")
        _check(all(isinstance(t, str) and t.strip() for t in self.tasks), "eval.tasks", "must be task names")
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
