"""Stage 1 steps: read → extract → clean → filter → dedup → clean shards + rejects + report.
The entry point, `lmforge.data.run_data_stage`, lives with the executors (`executor.py`).

Every input record ends up either in `clean-NNNNN.jsonl.zst` or in `rejected/rejected-*.jsonl.zst`
with `meta.reject_reason`; `report.json` counts both.

Two phases (see `executor.py` for running them as N processes or N cluster tasks):
1. per rank — read its share of the inputs, extract, clean, filter, compute dedup signatures;
2. merge — one ordered pass over all ranks' documents takes the dedup decisions and writes the
   clean shards, so the output is the same for any number of workers.
"""

from __future__ import annotations

import copy
import itertools
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

from lmforge.data.clean import CleanStep
from lmforge.data.config import DataConfig
from lmforge.data.dedup import ExactDedup, NearDedup, exact_key
from lmforge.data.dedup_disk import EXACT_BAND, SignatureWriter, dedup_decisions, encode_order
from lmforge.data.document import Document, ShardWriter
from lmforge.data.extract import HtmlExtract
from lmforge.data.filters.base import Filter, Step
from lmforge.data.filters.heuristic import GopherQualityFilter, GopherRepetitionFilter, LengthFilter
from lmforge.data.readers import ReadOptions, read_source
from lmforge.data.stats import LengthRecorder, build_report, write_report
from lmforge.data.steps import check_step, load_extra_steps
from lmforge.errors import DataError

__all__ = ["Filter", "Step", "build_merge_steps", "build_rank_steps"]


def build_rank_steps(cfg: DataConfig, perplexity_lm: Callable[[], Any] | None = None,
                     work_dir: Path | None = None, extra_steps: list[Step] | None = None) -> list[Step]:
    """Steps that see one document at a time (any worker can run them), in order. `perplexity_lm`: a
    zero-argument factory of the perplexity filter's reference model (see `run_data_stage`);
    `work_dir`: where the dedup signatures go (None: into `meta`, for the in-memory filters);
    `extra_steps`: the caller's own steps, run after the built-in filters and `data.extra_steps`."""
    steps: list[Step] = [
        HtmlExtract(extractor=cfg.html_extractor, favor=cfg.html_favor, comments=cfg.html_comments),
        CleanStep(fix=cfg.fix_unicode, nfc=cfg.normalize_unicode, control=cfg.strip_control,
                  whitespace=cfg.normalize_whitespace),
        LengthFilter(min_chars=cfg.min_chars, max_chars=cfg.max_chars, min_words=cfg.min_words,
                     max_words=cfg.max_words),
    ]
    if cfg.language.enabled:
        from lmforge.data.filters.language import LanguageFilter

        steps.append(LanguageFilter(cfg.language))
    if cfg.gopher_repetition.enabled:
        steps.append(GopherRepetitionFilter(cfg.gopher_repetition))
    if cfg.gopher_quality.enabled:
        steps.append(GopherQualityFilter(cfg.gopher_quality))
    if cfg.c4.enabled or cfg.fineweb.enabled:
        from lmforge.data.filters.web import C4Filter, FineWebFilter

        steps += [C4Filter(cfg.c4)] if cfg.c4.enabled else []
        steps += [FineWebFilter(cfg.fineweb)] if cfg.fineweb.enabled else []
    if cfg.perplexity.enabled:
        from lmforge.data.filters.perplexity import PerplexityFilter

        steps.append(PerplexityFilter(cfg.perplexity, lm_factory=perplexity_lm))
    if cfg.classifier.enabled:
        from lmforge.data.filters.classifier import ClassifierFilter

        steps.append(ClassifierFilter(cfg.classifier))
    steps += load_extra_steps(cfg.extra_steps)
    steps += [check_step(copy.deepcopy(s), f"extra_steps[{i}]") for i, s in enumerate(extra_steps or [])]
    if cfg.dedup or cfg.near_dedup.enabled:
        steps.append(Signatures(cfg, work_dir))
    return steps


def build_merge_steps(cfg: DataConfig, work_dirs: list[Path] | None = None) -> list[Step]:
    """Steps that need every document in input order (the dedup decisions). With `work_dirs` (the
    ranks' folders) the decisions are read from the signature files there."""
    exact = near = None
    if work_dirs is not None:
        exact = dedup_decisions(work_dirs, [EXACT_BAND]) if cfg.dedup else None
        near = dedup_decisions(work_dirs, range(cfg.near_dedup.bands)) if cfg.near_dedup.enabled else None
    return (([ExactDedup(exact)] if cfg.dedup else [])
            + ([NearDedup(cfg.near_dedup, near)] if cfg.near_dedup.enabled else []))


class Signatures(Step):
    """Computes the dedup signatures where the document is (in parallel); the merge only compares
    them. With `work_dir` they go to sorted run files there (`dedup_disk`), else into `meta`."""

    name = "dedup_signatures"

    def __init__(self, cfg: DataConfig, work_dir: Path | None = None) -> None:
        super().__init__()
        self.exact = cfg.dedup
        self.near = NearDedup(cfg.near_dedup) if cfg.near_dedup.enabled else None
        self.writers: dict[str, Any] = {}
        if work_dir is not None:
            if self.exact:
                self.writers["exact"] = SignatureWriter(work_dir, [EXACT_BAND])
            if self.near is not None:
                self.writers["near"] = SignatureWriter(work_dir, range(cfg.near_dedup.bands))

    def process(self, doc: Document) -> Document:
        if not self.writers:
            if self.exact:
                ExactDedup.signature(doc)
            if self.near is not None:
                self.near.signature(doc)
            return doc
        order = encode_order(doc.meta["_o"])
        if self.exact:
            self.writers["exact"].add(order, [exact_key(doc.text)])
        if self.near is not None and (keys := self.near.hasher.band_keys(doc.text)):
            self.writers["near"].add(order, keys)
        return doc

    def run(self, docs: Iterator[Document], rank: int = 0, world_size: int = 1) -> Iterator[Document]:
        yield from super().run(docs, rank, world_size)
        for w in self.writers.values():  # the last, partial run of each band
            w.flush()


def read_options(cfg: DataConfig) -> ReadOptions:
    # A record can be at most 4 bytes per character; anything longer is too_long whatever it holds.
    return ReadOptions(txt_mode=cfg.txt_mode, text_field=cfg.text_field, id_field=cfg.id_field,
                       encoding_errors=cfg.encoding_errors, on_error=cfg.on_error,
                       max_record_bytes=4 * cfg.max_chars + 64)


class Reader(Step):
    """Step 0: sources → documents, each stamped with its global order `meta._o = [source, n]`;
    records the readers could not use go straight to the rejects."""

    name = "read"

    def __init__(self, sources: list[tuple[int, str]], opts: ReadOptions) -> None:
        super().__init__()
        self.sources, self.opts = sources, opts
        self.utf8_replaced = self.utf8_docs = 0
        self.empty_sources: list[str] = []
        self.skipped_records: dict[str, int] = {}
        self.on_source: Callable[[str], None] | None = None  # told each source before it is read

    def documents(self) -> Iterator[Document]:
        st = self.stats
        for index, source in self.sources:
            if self.on_source is not None:
                self.on_source(source)
            n0 = st.docs_in
            records = read_source(source, self.opts, self.skipped_records)
            for n in itertools.count():
                t0 = time.perf_counter()
                doc = next(records, None)
                st.seconds += time.perf_counter() - t0
                if doc is None:
                    break
                n_bytes = len(doc.text.encode("utf-8", "surrogatepass"))
                st.docs_in += 1
                st.bytes_in += n_bytes
                doc.meta["_o"] = [index, n]
                if bad := doc.meta.get("utf8_replaced"):
                    self.utf8_replaced += bad
                    self.utf8_docs += 1
                if reason := doc.meta.pop("reject_reason", None):
                    self.reject(doc, reason)
                    continue
                st.docs_out += 1
                st.bytes_out += n_bytes
                yield doc
            if st.docs_in == n0:
                self.empty_sources.append(source)


class RankTask:
    """Phase 1 for one rank: its sources (source i belongs to rank i % world_size) through the rank steps."""

    def __init__(self, cfg: DataConfig, sources: list[str], rank: int, world_size: int,
                 sink: Callable[[Document], None], perplexity_lm: Callable[[], Any] | None = None,
                 work_dir: Path | None = None, extra_steps: list[Step] | None = None) -> None:
        mine = [(i, s) for i, s in enumerate(sources) if i % world_size == rank]
        self.reader = Reader(mine, read_options(cfg))
        self.steps = build_rank_steps(cfg, perplexity_lm, work_dir, extra_steps)
        self.rank, self.world_size = rank, world_size
        for s in (self.reader, *self.steps):
            s.sink = _strip_private(sink)

    def documents(self) -> Iterator[Document]:
        stream = self.reader.documents()
        for s in self.steps:
            stream = s.run(stream, self.rank, self.world_size)
        return stream

    def state(self) -> dict[str, Any]:
        """Counts of this rank, JSON-serialisable, for the merge's report."""
        r = self.reader
        length = next(s for s in self.steps if isinstance(s, LengthFilter))
        langs = next((s.counts for s in self.steps if s.name == "language"), {})
        return {"steps": [s.stats.state() for s in (r, *self.steps)], "sources": len(r.sources),
                "utf8_replaced": r.utf8_replaced, "utf8_docs": r.utf8_docs, "empty_sources": r.empty_sources,
                "skipped_records": r.skipped_records, "languages_seen": langs,
                "lengths_before": length.observed.tolist()}


def _strip_private(sink: Callable[[Document], None]) -> Callable[[Document], None]:
    def write(doc: Document) -> None:
        for k in [k for k in doc.meta if k.startswith("_")]:
            del doc.meta[k]
        sink(doc)
    return write


def finish(cfg: DataConfig, out_dir: Path, stream: Iterator[Document], states: Callable[[], list[dict]],
           rejected: ShardWriter, *, progress: bool, t0: float, work_dirs: list[Path] | None = None) -> dict[str, Any]:
    """Phase 2: dedup decisions in input order, clean shards, report. `states` is called after the
    stream is exhausted (the rank counts are complete only then); `work_dirs`: the ranks' folders
    holding the dedup signature files."""
    merge_steps = build_merge_steps(cfg, work_dirs)
    for s in merge_steps:
        s.sink = _strip_private(rejected.write)
        stream = s.run(stream)
    rec = LengthRecorder(cfg.tokenizer)
    with ShardWriter(out_dir, "clean", cfg.shard_docs) as clean:
        for doc in tqdm(stream, unit="doc", desc="data", disable=not progress, file=sys.stderr, mininterval=0.5):
            for k in [k for k in doc.meta if k.startswith("_")]:
                del doc.meta[k]
            clean.write(doc)
            rec.add(doc)
        rec.flush()
    rejected.close()
    report = build_report(cfg, states(), merge_steps, rec, time.perf_counter() - t0,
                          [p.name for p in clean.paths], sorted(p.name for p in (out_dir / "rejected").glob("*.zst")))
    write_report(cfg, out_dir, report, rec)
    check_outcome(cfg, out_dir, report)
    return report


# What to change when a reason rejects everything.
ADVICE = {
    "too_short": "lower data.min_chars", "too_long": "raise data.max_chars",
    "too_few_words": "lower data.min_words", "too_many_words": "raise data.max_words",
    "duplicate": "set data.dedup=false", "near_duplicate": "set data.near_dedup.enabled=false",
    "invalid_utf8": "set data.encoding_errors=replace", "malformed_json": "fix the JSONL lines listed in rejected/",
    "missing_field": "set data.text_field to the field that holds the text", "binary": "point data.inputs at text",
    "wrong_language": "add the language to data.language.languages",
    "low_language_score": "lower data.language.min_score",
    "perplexity_too_high": "raise data.perplexity.max_perplexity", "no_text": "check the HTML inputs",
    "classifier_low_score": "lower data.classifier.min_score or set data.classifier.annotate_only=true",
}
_PREFIX_ADVICE = {"gopher_": "data.gopher_quality / data.gopher_repetition", "c4_": "data.c4",
                  "fineweb_": "data.fineweb"}


def _advice(reason: str) -> str:
    if reason in ADVICE:
        return ADVICE[reason]
    for prefix, key in _PREFIX_ADVICE.items():
        if reason.startswith(prefix):
            return f"loosen or disable {key}"
    return "see rejected/"


def check_outcome(cfg: DataConfig, out_dir: Path, report: dict[str, Any]) -> None:
    """Raise DataError when the corpus was empty or nothing survived (the report is written first)."""
    if report["documents_in"] == 0:
        empty = ", ".join(report["empty_sources"][:5])
        raise DataError(f"the corpus is empty: data.inputs {cfg.inputs} gave {report['sources']} source(s) "
                        f"but no documents (empty: {empty}); point data.inputs at files that hold text")
    if report["documents_out"] == 0:
        top = sorted(report["rejected"].items(), key=lambda kv: -kv[1]["count"])[:3]
        why = "; ".join(f"{r}: {v['count']} ({_advice(r)})" for r, v in top)
        raise DataError(f"nothing left after filtering: all {report['documents_in']} documents were rejected "
                        f"— {why}. Details in {out_dir / 'report.md'}")
