"""Configuration of the data stage (`data:` in a run config): readers, cleaning, filters, dedup.

Loaded through `lmforge.config.load_config`; see that module for how keys are checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lmforge.validate import check as _check
from lmforge.validate import frac as _frac

EXECUTORS = ("local", "ray", "slurm")


@dataclass(kw_only=True)
class GopherQualityConfig:
    """Gopher quality rules (Rae et al. 2021, appendix A); defaults are the published values.
    Words are spaCy-style English tokens (as datatrove counts them) without pure-punctuation tokens;
    stop words match case-insensitively."""

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
    """Reject documents a reference language model finds too surprising: a word n-gram model trained
    on `reference`, or an lmforge checkpoint (`model`)."""

    enabled: bool = False
    reference: list[str] = field(default_factory=lambda: ["builtin:stdlib"])
    """Inputs (files, directories, globs, builtin:stdlib) of clean reference text to train the model on."""
    order: int = 3
    """n of the word n-gram model (interpolated Kneser-Ney)."""
    max_perplexity: float = 1000.0
    """Reject (`perplexity_too_high`) above this word-level perplexity."""
    max_reference_chars: int = 20_000_000
    """Train on at most this many characters of the reference."""
    model: str | None = None
    """An lmforge model as the reference instead of the n-gram model: a run directory (its best
    checkpoint, else latest), `RUN/checkpoints/step-N` or `RUN/checkpoints/latest`; the run's
    tokenizer/tokenizer.json is needed too. Perplexity stays word-level (exp(token NLL / words)), so
    `max_perplexity` keeps its meaning. `reference` and `order` are then unused."""
    kenlm: str | None = None
    """A KenLM model file (`.arpa` or `.bin`, as CCNet/FineWeb reference models) as the reference:
    perplexity = 10^(-log10 P(doc) / tokens) over the same words as the n-gram model, </s> counted
    per line (KenLM's own definition). `pip install 'lmforge[kenlm]'`. `reference`/`order` are then unused."""
    device: str = "cpu"
    """Where the reference model runs: `cpu`, `cuda` or `auto` (with `model` only)."""
    batch_size: int = 16
    """Rows of `block_size` tokens per forward pass when scoring with `model`."""
    threads: int = 0
    """torch CPU threads while scoring with `model`; 0 = the cores divided by `data.workers` (with one
    worker: torch's default). On a busy machine small models run far faster with 1."""

    def __post_init__(self) -> None:
        _check(1 <= self.order <= 6, "data.perplexity.order", "must be in 1..6")
        _check(self.max_perplexity > 1, "data.perplexity.max_perplexity", "must be > 1")
        _check(not (self.model and self.kenlm), "data.perplexity.kenlm", "set either kenlm or model, not both")
        _check(bool(self.reference) or bool(self.model) or bool(self.kenlm) or not self.enabled,
               "data.perplexity.reference",
               "needs at least one input (or set data.perplexity.model)")
        _check(self.model is None or bool(str(self.model).strip()), "data.perplexity.model",
               "must be a path or null")
        _check(self.device in ("cpu", "cuda", "auto"), "data.perplexity.device",
               f"must be cpu, cuda or auto, got {self.device!r}")
        _check(self.batch_size > 0, "data.perplexity.batch_size", "must be > 0")
        _check(self.threads >= 0, "data.perplexity.threads", "must be >= 0 (0 = automatic)")


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
        _check(1 <= self.ngram <= 64, "data.near_dedup.ngram", "must be in 1..64")
        _check(1 <= self.bands <= 99, "data.near_dedup.bands", "must be in 1..99")
        _check(1 <= self.rows <= 64, "data.near_dedup.rows", "must be in 1..64")


@dataclass(kw_only=True)
class RayConfig:
    """Rank tasks as Ray tasks (`executor: ray`; `pip install 'lmforge[ray]'`)."""

    address: str | None = None
    """Cluster to join (`HOST:PORT`, `ray://HOST:PORT` or `auto`); null = start a Ray on this machine for
    the run. Ray's ports are not loopback-only: on a shared machine, firewall them."""
    num_cpus: float = 1.0
    """CPUs reserved per rank task."""
    memory_gb: float | None = None
    """Memory reserved per rank task (GB); null = no reservation."""
    max_retries: int = 3
    """Attempts after the first when a worker process dies or raises an OSError (a crashed node, a flaky
    file system); other errors (a bad input under on_error=fail, a bug) stop the stage at once."""
    local_cpus: int | None = None
    """CPUs of the Ray started for the run when `address` is null (null = every core)."""

    def __post_init__(self) -> None:
        _check(self.num_cpus > 0, "ray.num_cpus", "must be > 0")
        _check(self.memory_gb is None or self.memory_gb > 0, "ray.memory_gb", "must be > 0 or null")
        _check(self.max_retries >= 0, "ray.max_retries", "must be >= 0")
        _check(self.local_cpus is None or self.local_cpus >= 1, "ray.local_cpus", "must be >= 1 or null")


@dataclass(kw_only=True)
class SlurmConfig:
    """Rank tasks as a Slurm job array plus a merge job that depends on it, through submitit
    (`executor: slurm`; `pip install 'lmforge[slurm]'`). The run directory must be on a file system the
    nodes share; the command waits for the jobs and prints their progress."""

    partition: str | None = None
    """`--partition`; null = the cluster's default."""
    time: int = 60
    """Time limit of each job, in minutes."""
    cpus_per_task: int = 1
    mem: str | None = None
    """`--mem` of each job, e.g. `8G`; null = the partition's default."""
    array_parallelism: int = 256
    """At most this many rank tasks run at once (`--array=0-N%P`)."""
    extra: dict = field(default_factory=dict)
    """Further `#SBATCH` options, e.g. `{account: proj, qos: high}`."""
    max_retries: int = 1
    """Times a failed rank is resubmitted (finished ranks are kept) before the stage stops."""
    backend: str = "slurm"
    """`slurm`, or `local`: the same jobs as processes on this machine (submitit's local executor)."""
    poll_s: float = 5.0
    """Seconds between job-state checks."""

    def __post_init__(self) -> None:
        _check(self.time > 0, "slurm.time", "must be > 0 (minutes)")
        _check(self.cpus_per_task >= 1, "slurm.cpus_per_task", "must be >= 1")
        _check(self.array_parallelism >= 1, "slurm.array_parallelism", "must be >= 1")
        _check(isinstance(self.extra, dict), "slurm.extra", "must be a mapping of sbatch options")
        _check(self.max_retries >= 0, "slurm.max_retries", "must be >= 0")
        _check(self.backend in ("slurm", "local"), "slurm.backend", f"must be slurm or local, got {self.backend!r}")
        _check(self.poll_s > 0, "slurm.poll_s", "must be > 0")


@dataclass(kw_only=True)
class ClassifierConfig:
    """Content classification with a fastText model (the format of FineWeb-Edu/DCLM-style quality
    classifiers), e.g. one made by `lmforge classifier train`. `pip install 'lmforge[classifier]'`."""

    enabled: bool = False
    model: str | None = None
    """Path of the fastText `.bin` model."""
    label: str = "hq"
    """The label whose probability is the score (`__label__` prefix optional)."""
    min_score: float = 0.5
    """Reject (`classifier_low_score`) below this probability."""
    annotate_only: bool = False
    """Only write the score to `meta` (key `classifier_<label>`); reject nothing."""

    def __post_init__(self) -> None:
        _check(not self.enabled or bool(self.model), "data.classifier.model", "needs a fastText model file")
        _frac(self.min_score, "data.classifier.min_score")
        _check(bool(self.label.strip()), "data.classifier.label", "must not be empty")


@dataclass(kw_only=True)
class DataConfig:
    inputs: list[str] = field(default_factory=list)
    """Files, directories or globs. `builtin:stdlib` is the corpus every Python carries
    (pydoc topics + standard-library docstrings)."""
    txt_mode: str = "paragraphs"
    """How a .txt file becomes documents: `file` (one per file), `paragraphs` (one per
    blank-line-separated block), `lines` (one per non-empty line) or `continuous` (the whole text,
    blank lines kept, in pieces the tokens stage joins again: a book or a play trains as one stream,
    cut into training sequences like nanoGPT; pair it with `tokens.val_split: tail`)."""
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
    where it finds nothing; most accurate), `selectolax` (all body text minus scripts and page chrome;
    faster) or `resiliparse` (main-content heuristics in C++, DCLM's web-scale choice; fastest,
    `pip install 'lmforge[resiliparse]'`)."""
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
    """Rank tasks: inputs are split between them (source i goes to rank i % workers); the `executor`
    runs them. The output is the same for any executor; for another number of ranks only the order
    of the rejects' files differs."""
    executor: str = "local"
    """What runs the rank tasks: `local` (processes on this machine), `ray` (tasks on a Ray cluster, see
    `ray`) or `slurm` (a job array, see `slurm`)."""
    ray: RayConfig = field(default_factory=RayConfig)
    slurm: SlurmConfig = field(default_factory=SlurmConfig)
    extra_steps: list[str | dict] = field(default_factory=list)
    """Your own steps, after the built-in filters: `"my_pkg.filters:MyFilter"` or
    `{step: "my_pkg.filters:MyFilter", KEYWORD: VALUE, ...}` (the class is called with the keywords)."""
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    seq_lengths: list[int] = field(default_factory=lambda: [256, 512, 1024, 2048, 4096])
    """Candidate sequence lengths for the report's "fraction of documents that fit" table."""
    tokenizer: str | None = None
    """Optional tokenizer.json (Hugging Face tokenizers) to measure lengths in tokens too."""
    plots: bool = True
    """Write length histograms (PNG) next to the report."""

    def __post_init__(self) -> None:
        _check(self.txt_mode in ("file", "paragraphs", "lines", "continuous"), "data.txt_mode",
               f"must be file, paragraphs, lines or continuous, got {self.txt_mode!r}")
        _check(self.encoding_errors in ("replace", "reject"), "data.encoding_errors",
               f"must be replace or reject, got {self.encoding_errors!r}")
        _check(self.min_chars >= 0, "data.min_chars", "must be >= 0")
        _check(self.max_chars >= max(1, self.min_chars), "data.max_chars", "must be >= data.min_chars and >= 1")
        _check(self.shard_docs > 0, "data.shard_docs", "must be > 0")
        _check(self.on_error in ("skip", "fail"), "data.on_error", f"must be skip or fail, got {self.on_error!r}")
        _check(self.min_words >= 0 and self.max_words >= 0, "data.min_words", "must be >= 0")
        _check(self.max_words == 0 or self.max_words >= self.min_words, "data.max_words", "must be >= data.min_words")
        _check(self.html_extractor in ("trafilatura", "selectolax", "resiliparse"), "data.html_extractor",
               f"must be trafilatura, selectolax or resiliparse, got {self.html_extractor!r}")
        _check(self.html_favor in ("balanced", "precision", "recall"), "data.html_favor",
               f"must be balanced, precision or recall, got {self.html_favor!r}")
        _check(self.workers >= 1, "data.workers", "must be >= 1")
        _check(self.executor in EXECUTORS, "data.executor", f"must be local, ray or slurm, got {self.executor!r}")
        for i, spec in enumerate(self.extra_steps):
            target = spec.get("step") if isinstance(spec, dict) else spec
            _check(isinstance(target, str) and ":" in target, f"data.extra_steps[{i}]",
                   f"must be 'module:Class' or {{step: 'module:Class', ...keywords}}, got {spec!r}")
        _check(all(n > 0 for n in self.seq_lengths), "data.seq_lengths", "must all be > 0")
