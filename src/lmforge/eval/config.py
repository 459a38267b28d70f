"""The `eval:` section: validation, sampling, strata and the report.

Loaded through `lmforge.config.load_config`; `lmforge.configtools` checks types and names the key at fault.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lmforge.validate import check as _check
from lmforge.validate import finite as _finite


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
        _finite(self, "eval")
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
