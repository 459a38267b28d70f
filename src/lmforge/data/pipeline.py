"""Stage 1 driver: read → clean → filter → dedup → clean shards + rejects + report.

    report = run_data_stage(cfg.data, run_dir / "data")

Every input record ends up either in `clean-NNNNN.jsonl.zst` or in
`rejected/rejected-NNNNN.jsonl.zst` with `meta.reject_reason`; `report.json` counts both.
"""

from __future__ import annotations

import sys
import time
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

from lmforge.config import DataConfig
from lmforge.data.clean import CleanStep
from lmforge.data.dedup import ExactDedup
from lmforge.data.document import Document, ShardWriter
from lmforge.data.filters.base import Filter, Step, StepStats
from lmforge.data.filters.heuristic import LengthFilter
from lmforge.data.readers import ReadOptions, expand_inputs, read_source
from lmforge.data.stats import length_summary, render_markdown
from lmforge.errors import DataError
from lmforge.io import atomic_write_json, atomic_write_text

__all__ = ["Filter", "Step", "build_steps", "run_data_stage"]

# What to change when a reason rejects everything.
ADVICE = {
    "too_short": "lower data.min_chars",
    "too_long": "raise data.max_chars",
    "duplicate": "set data.dedup=false",
    "invalid_utf8": "set data.encoding_errors=replace",
    "malformed_json": "fix the JSONL lines listed in rejected/",
    "missing_field": "set data.text_field to the field that holds the text",
    "binary": "point data.inputs at text files",
}


def build_steps(cfg: DataConfig) -> list[Step]:
    """The configured steps, in order."""
    steps: list[Step] = [CleanStep(nfc=cfg.normalize_unicode, control=cfg.strip_control,
                                   whitespace=cfg.normalize_whitespace),
                         LengthFilter(min_chars=cfg.min_chars, max_chars=cfg.max_chars)]
    if cfg.dedup:
        steps.append(ExactDedup())
    return steps


def read_options(cfg: DataConfig) -> ReadOptions:
    # A record can be at most 4 bytes per character; anything longer is too_long whatever it holds.
    return ReadOptions(txt_mode=cfg.txt_mode, text_field=cfg.text_field, id_field=cfg.id_field,
                       encoding_errors=cfg.encoding_errors, on_error=cfg.on_error,
                       max_record_bytes=4 * cfg.max_chars + 64)


class _Reader(Step):
    """Step 0: sources → documents; records the reader could not use go straight to the rejects."""

    name = "read"

    def __init__(self, sources: list[str], opts: ReadOptions) -> None:
        super().__init__()
        self.sources, self.opts = sources, opts
        self.utf8_replaced = self.utf8_docs = 0
        self.empty_sources: list[str] = []

    def documents(self) -> Iterator[Document]:
        st = self.stats
        for source in self.sources:
            n0 = st.docs_in
            for doc in read_source(source, self.opts):
                st.docs_in += 1
                st.bytes_in += len(doc.text.encode("utf-8", "surrogatepass"))
                if bad := doc.meta.get("utf8_replaced"):
                    self.utf8_replaced += bad
                    self.utf8_docs += 1
                if reason := doc.meta.get("reject_reason"):
                    doc.meta.pop("reject_reason")
                    self.reject(doc, reason)
                    continue
                st.docs_out += 1
                yield doc
            if st.docs_in == n0:
                self.empty_sources.append(source)


def run_data_stage(cfg: DataConfig, out_dir: Path, *, progress: bool = True) -> dict[str, Any]:
    """Run stage 1 into `out_dir` (expected empty) and return the report (also in report.json)."""
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    reader = _Reader(expand_inputs(cfg.inputs), read_options(cfg))
    steps = build_steps(cfg)
    lengths = array("Q")
    with ShardWriter(out_dir, "clean", cfg.shard_docs) as clean, \
            ShardWriter(out_dir / "rejected", "rejected", cfg.shard_docs) as rejected:
        for s in (reader, *steps):
            s.sink = rejected.write
        stream: Iterator[Document] = reader.documents()
        for s in steps:
            stream = s.run(stream)
        bar = tqdm(stream, unit="doc", desc="data", disable=not progress, file=sys.stderr, mininterval=0.5)
        bytes_out = 0
        for doc in bar:
            clean.write(doc)
            lengths.append(len(doc.text))
            bytes_out += len(doc.text.encode("utf-8"))
    report = _report(cfg, reader, steps, lengths, bytes_out, time.perf_counter() - t0, clean, rejected)
    if reader.stats.docs_in == 0:
        raise DataError(f"the corpus is empty: data.inputs {cfg.inputs} gave {len(reader.sources)} source(s) "
                        f"but no documents (empty files: {', '.join(reader.empty_sources[:5])}); "
                        "point data.inputs at files that hold text")
    atomic_write_json(out_dir / "report.json", report)
    atomic_write_text(out_dir / "report.md", render_markdown(report))
    if report["documents_out"] == 0:
        top = sorted(report["rejected"].items(), key=lambda kv: -kv[1]["count"])[:3]
        why = "; ".join(f"{r}: {v['count']} ({ADVICE.get(r, 'see rejected/')})" for r, v in top)
        raise DataError(f"nothing left after filtering: all {report['documents_in']} documents were rejected "
                        f"— {why}. Details in {out_dir / 'report.md'}")
    return report


def _report(cfg: DataConfig, reader: _Reader, steps: list[Step], lengths: array, bytes_out: int,
            seconds: float, clean: ShardWriter, rejected: ShardWriter) -> dict[str, Any]:
    total = StepStats("all")
    for s in (reader, *steps):
        total.merge(s.stats)
    n_in = reader.stats.docs_in
    return {
        "inputs": list(cfg.inputs),
        "sources": len(reader.sources),
        "empty_sources": reader.empty_sources,
        "documents_in": n_in,
        "bytes_in": reader.stats.bytes_in,
        "documents_out": len(lengths),
        "bytes_out": bytes_out,
        "documents_rejected": sum(total.rejects.values()),
        "rejected": {r: {"count": c, "examples": total.examples.get(r, [])}
                     for r, c in sorted(total.rejects.items(), key=lambda kv: (-kv[1], kv[0]))},
        "encoding": {"policy": cfg.encoding_errors, "utf8_replaced": reader.utf8_replaced,
                     "documents": reader.utf8_docs},
        "length_chars": length_summary(lengths),
        "steps": [s.stats.to_dict() for s in (reader, *steps)],
        "shards": [p.name for p in clean.paths],
        "rejected_shards": [f"rejected/{p.name}" for p in rejected.paths],
        "seconds": round(seconds, 3),
        "docs_per_second": round(n_in / seconds, 1) if seconds > 0 else 0.0,
    }
