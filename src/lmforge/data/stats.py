"""Length statistics, the report (JSON + Markdown) and the length histograms."""

from __future__ import annotations

from array import array
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from lmforge.data.config import DataConfig
from lmforge.data.document import Document
from lmforge.data.filters.base import Step, StepStats
from lmforge.io import atomic_write_json, atomic_write_text

PERCENTILES = (50, 90, 95, 99)
FIT_TARGET = 0.95  # the recommended length holds at least this fraction of documents whole
CHARS_PER_TOKEN = 4.0  # estimate when no tokenizer is given (BPE on English: ~4 characters per token)


def length_summary(lengths: array | list[int] | np.ndarray) -> dict[str, Any]:
    """min/mean/max and nearest-rank percentiles (each value is a real document's length)."""
    a = np.asarray(lengths, dtype=np.int64)
    if a.size == 0:
        return {"count": 0}
    out: dict[str, Any] = {"count": int(a.size), "min": int(a.min()), "mean": round(float(a.mean()), 1)}
    for q in PERCENTILES:
        out[f"p{q}"] = int(np.percentile(a, q, method="inverted_cdf"))
    out["max"] = int(a.max())
    return out


class LengthRecorder:
    """Collects the lengths of kept documents: characters, words and (with a tokenizer) tokens."""

    def __init__(self, tokenizer: str | None = None, batch: int = 256) -> None:
        self.chars, self.words, self.tokens = array("Q"), array("Q"), array("Q")
        self.bytes = 0
        self.langs: Counter = Counter()
        self.tok = None
        if tokenizer:
            from tokenizers import Tokenizer

            from lmforge.errors import DataError

            try:
                self.tok = Tokenizer.from_file(str(tokenizer))
            except Exception as e:  # noqa: BLE001 - tokenizers raises plain Exception subclasses
                raise DataError(f"data.tokenizer: cannot load {tokenizer} ({e})") from e
        self._buf: list[str] = []
        self._batch = batch

    def add(self, doc: Document) -> None:
        self.chars.append(len(doc.text))
        self.words.append(len(doc.text.split()))
        self.bytes += len(doc.text.encode("utf-8"))
        if lang := doc.meta.get("lang"):
            self.langs[lang] += 1
        if self.tok is not None:
            self._buf.append(doc.text)
            if len(self._buf) >= self._batch:
                self.flush()

    def flush(self) -> None:
        if self.tok is not None and self._buf:
            self.tokens.extend(len(e.ids) for e in self.tok.encode_batch(self._buf, add_special_tokens=False))
            self._buf = []

    def token_lengths(self) -> tuple[np.ndarray, bool]:
        """(tokens per document, exact?) — estimated from characters without a tokenizer."""
        if self.tok is not None:
            return np.asarray(self.tokens, dtype=np.int64), True
        return np.ceil(np.asarray(self.chars, dtype=np.float64) / CHARS_PER_TOKEN).astype(np.int64), False


def fit_table(tokens: np.ndarray, candidates: list[int]) -> tuple[list[dict[str, Any]], int | None]:
    """For each candidate length: fraction of documents that fit whole, fraction of tokens kept when
    truncating there. Recommended: the smallest candidate that holds FIT_TARGET of documents whole."""
    rows, rec = [], None
    total = max(1, int(tokens.sum()))
    for L in sorted(candidates):
        fits = float((tokens <= L).mean()) if tokens.size else 0.0
        kept = float(np.minimum(tokens, L).sum()) / total
        rows.append({"seq_len": L, "docs_fit": round(fits, 4), "tokens_kept": round(kept, 4)})
        if rec is None and fits >= FIT_TARGET:
            rec = L
    return rows, rec if rec is not None else (max(candidates) if candidates else None)


def merge_states(states: list[dict[str, Any]]) -> tuple[list[StepStats], dict[str, Any]]:
    """Sum the per-rank step counts (every rank runs the same steps) and the reader extras."""
    steps = [StepStats.from_state(s) for s in states[0]["steps"]]
    for st in states[1:]:
        for mine, theirs in zip(steps, st["steps"]):
            mine.merge(StepStats.from_state(theirs))
    extra: dict[str, Any] = {"sources": 0, "utf8_replaced": 0, "utf8_docs": 0, "empty_sources": [],
                             "skipped_records": Counter(), "languages_seen": Counter(),
                             "lengths_before": array("Q")}  # 8 bytes per document, not a list of ints
    for st in states:
        for k in ("sources", "utf8_replaced", "utf8_docs"):
            extra[k] += st[k]
        extra["empty_sources"] += st["empty_sources"]
        extra["skipped_records"].update(st["skipped_records"])
        extra["languages_seen"].update(st["languages_seen"])
        extra["lengths_before"].extend(st["lengths_before"])
    return steps, extra


def build_report(cfg: DataConfig, states: list[dict[str, Any]], merge_steps: list[Step], rec: LengthRecorder,
                 seconds: float, shards: list[str], rejected_shards: list[str]) -> dict[str, Any]:
    steps, extra = merge_states(states)
    rec.before = extra["lengths_before"]  # for the histogram
    steps += [s.stats for s in merge_steps]
    total = StepStats("all")
    for s in steps:
        total.merge(s)
    reader = steps[0]
    tokens, exact = rec.token_lengths()
    fits, recommended = fit_table(tokens, list(cfg.seq_lengths))
    near = next((s for s in merge_steps if s.name == "near_dedup"), None)
    return {
        "inputs": list(cfg.inputs), "sources": extra["sources"], "empty_sources": sorted(extra["empty_sources"]),
        "workers": cfg.workers,
        "documents_in": reader.docs_in, "bytes_in": reader.bytes_in,
        "documents_out": len(rec.chars), "bytes_out": rec.bytes,
        "documents_rejected": sum(total.rejects.values()),
        "rejected": {r: {"count": c, "examples": total.examples.get(r, [])}
                     for r, c in sorted(total.rejects.items(), key=lambda kv: (-kv[1], kv[0]))},
        "skipped_records": dict(sorted(extra["skipped_records"].items())),
        "encoding": {"policy": cfg.encoding_errors, "utf8_replaced": extra["utf8_replaced"],
                     "documents": extra["utf8_docs"]},
        "length_chars": length_summary(rec.chars),
        "length_words": length_summary(rec.words),
        "length_tokens": {**length_summary(tokens), "exact": exact},
        "length_chars_before_filters": length_summary(extra["lengths_before"]),
        "seq_len_fit": fits, "recommended_seq_len": recommended,
        "languages": dict(rec.langs.most_common()), "languages_seen": dict(extra["languages_seen"].most_common()),
        "near_duplicate_clusters": _clusters(near),
        "steps": [s.to_dict() for s in steps],
        "shards": shards, "rejected_shards": [f"rejected/{n}" for n in rejected_shards],
        "seconds": round(seconds, 3),
        "docs_per_second": round(reader.docs_in / seconds, 1) if seconds > 0 else 0.0,
        "rank_peak_rss_mb": round(max((st.get("peak_rss_mb", 0.0) for st in states), default=0.0), 1),
        "plots": [],
    }


def _clusters(near: Step | None) -> dict[str, Any] | None:
    if near is None:
        return None
    sizes = sorted(near.clusters.items(), key=lambda kv: (-kv[1], kv[0]))
    return {"clusters": len(sizes), "documents_removed": sum(near.clusters.values()),
            "largest": [{"kept": k, "removed": v} for k, v in sizes[:5]]}


def write_report(cfg: DataConfig, out_dir: Path, report: dict[str, Any], rec: LengthRecorder) -> None:
    if cfg.plots and report["documents_out"]:
        report["plots"] = plot_lengths(out_dir, report, rec, cfg.seq_lengths)
    atomic_write_json(out_dir / "report.json", report)
    atomic_write_text(out_dir / "report.md", render_markdown(report))


def plot_lengths(out_dir: Path, report: dict[str, Any], rec: LengthRecorder, seq_lengths: list[int]) -> list[str]:
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    tokens, exact = rec.token_lengths()
    fig = Figure(figsize=(11, 4))
    ax1, ax2 = fig.subplots(1, 2)
    chars = np.asarray(rec.chars, dtype=np.float64)
    before = np.asarray(getattr(rec, "before", []) or chars, dtype=np.float64)
    lo, hi = max(1.0, float(before.min())), max(10.0, float(before.max()))
    bins = np.logspace(np.log10(lo), np.log10(hi) + 0.05, 50)
    ax1.hist(np.maximum(before, 1), bins=bins, color="0.6", histtype="step", lw=1.5, label="before filters")
    ax1.hist(np.maximum(chars, 1), bins=bins, color="tab:blue", alpha=0.8, label="kept")
    ax1.set(xscale="log", xlabel="characters per document", ylabel="documents", title="Document length")
    ax1.legend()
    tok_bins = np.logspace(np.log10(max(1, tokens.min())), np.log10(max(10, tokens.max(), *seq_lengths)) + 0.05, 50)
    ax2.hist(np.maximum(tokens, 1), bins=tok_bins, color="tab:green")
    for L in seq_lengths:
        ax2.axvline(L, color="gray", ls="--", lw=0.8)
    if report["recommended_seq_len"]:
        rec_len = report["recommended_seq_len"]
        ax2.axvline(rec_len, color="tab:red", lw=1.5, label=f"recommended {rec_len}")
        ax2.legend()
    ax2.set(xscale="log", xlabel="tokens per document" + ("" if exact else " (estimated: chars / 4)"),
            title="Tokens vs candidate sequence lengths")
    from matplotlib.ticker import NullFormatter

    for ax in (ax1, ax2):
        ax.xaxis.set_minor_formatter(NullFormatter())  # log axes over < 1 decade label every minor tick
    fig.tight_layout()
    tmp = out_dir / "lengths.png.tmp"
    fig.savefig(tmp, format="png", dpi=90)
    tmp.rename(out_dir / "lengths.png")
    return ["lengths.png"]


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def _length_row(name: str, L: dict[str, Any]) -> str:
    if not L.get("count"):
        return f"| {name} | – | – | – | – | – | – |"
    return f"| {name} | {L['min']:,} | {L['p50']:,} | {L['p90']:,} | {L['p95']:,} | {L['p99']:,} | {L['max']:,} |"


def render_markdown(report: dict[str, Any]) -> str:
    """A report a person can read in a minute: what went in, what came out, why things were dropped."""
    r = report
    kept = r["documents_out"] / r["documents_in"] * 100 if r["documents_in"] else 0.0
    lines = ["# Data report", "",
             f"- inputs: {', '.join(r['inputs'])} ({r['sources']} source(s), {r['workers']} worker(s))",
             f"- documents: {r['documents_in']:,} in → {r['documents_out']:,} kept ({kept:.1f}%), "
             f"{r['documents_rejected']:,} rejected",
             f"- bytes: {_fmt_bytes(r['bytes_in'])} in → {_fmt_bytes(r['bytes_out'])} out",
             f"- time: {r['seconds']:.1f} s ({r['docs_per_second']:,.0f} documents/s)"]
    enc = r["encoding"]
    if enc["utf8_replaced"]:
        lines.append(f"- invalid UTF-8: {enc['utf8_replaced']:,} byte sequence(s) in {enc['documents']:,} document(s), "
                     f"policy `{enc['policy']}`")
    if r["empty_sources"]:
        more = " …" if len(r["empty_sources"]) > 5 else ""
        lines.append(f"- empty inputs: {', '.join(r['empty_sources'][:5])}{more}")
    if r["skipped_records"]:
        skipped = ", ".join(f"{k} {v}" for k, v in r["skipped_records"].items())
        lines.append(f"- WARC records that are not documents: {skipped}")
    if r["recommended_seq_len"]:
        fit = next(f for f in r["seq_len_fit"] if f["seq_len"] == r["recommended_seq_len"])
        how = "tokens counted" if r["length_tokens"]["exact"] else "tokens estimated as chars / 4"
        lines.append(f"- **recommended sequence length: {r['recommended_seq_len']}** ({fit['docs_fit']:.0%} of "
                     f"documents fit whole; {how})")
    lines += ["", "## Lengths", "", "| | min | P50 | P90 | P95 | P99 | max |", "|---|---|---|---|---|---|---|",
              _length_row("chars, before filters", r["length_chars_before_filters"]),
              _length_row("chars, kept", r["length_chars"]), _length_row("words, kept", r["length_words"]),
              _length_row("tokens, kept" + ("" if r["length_tokens"]["exact"] else " (est.)"), r["length_tokens"])]
    if r["seq_len_fit"]:
        lines += ["", "| sequence length | documents that fit | tokens kept if truncated |", "|---|---|---|"]
        lines += [f"| {f['seq_len']} | {f['docs_fit']:.1%} | {f['tokens_kept']:.1%} |" for f in r["seq_len_fit"]]
    if r["rejected"]:
        lines += ["", "## Rejected", "", "| reason | documents | first example |", "|---|---|---|"]
        for reason, info in r["rejected"].items():
            ex = info["examples"][0] if info["examples"] else {}
            lines.append(f"| {reason} | {info['count']:,} | {ex.get('source')}:{ex.get('line')} |" if ex else
                         f"| {reason} | {info['count']:,} | |")
    if r["languages"]:
        top = ", ".join(f"{k} {v:,}" for k, v in list(r["languages"].items())[:8])
        lines += ["", f"Languages of kept documents: {top}."]
    if r["near_duplicate_clusters"]:
        c = r["near_duplicate_clusters"]
        lines += ["", f"Near-duplicate clusters: {c['clusters']:,} ({c['documents_removed']:,} documents removed)."]
    lines += ["", "## Steps", "", "| step | in | out | seconds | docs/s |", "|---|---|---|---|---|"]
    for s in r["steps"]:
        rate = f"{s['docs_in'] / s['seconds']:,.0f}" if s["seconds"] > 0 else "–"
        lines.append(f"| {s['name']} | {s['docs_in']:,} | {s['docs_out']:,} | {s['seconds']:.2f} | {rate} |")
    if r["plots"]:
        lines += ["", *[f"![{p}]({p})" for p in r["plots"]]]
    lines += ["", "Rejected documents, with `meta.reject_reason`, are in `rejected/`; details in `report.json`.", ""]
    return "\n".join(lines)
