"""Length statistics and the human-readable report."""

from __future__ import annotations

from array import array
from typing import Any

import numpy as np

PERCENTILES = (50, 90, 95, 99)


def length_summary(lengths: array | list[int]) -> dict[str, Any]:
    """min/mean/max and nearest-rank percentiles (each value is a real document's length)."""
    if len(lengths) == 0:
        return {"count": 0}
    a = np.frombuffer(lengths, dtype=np.uint64) if isinstance(lengths, array) else np.asarray(lengths)
    out: dict[str, Any] = {"count": int(a.size), "min": int(a.min()), "mean": round(float(a.mean()), 1)}
    for q in PERCENTILES:
        out[f"p{q}"] = int(np.percentile(a, q, method="inverted_cdf"))
    out["max"] = int(a.max())
    return out


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def render_markdown(report: dict[str, Any]) -> str:
    """A report a person can read in a minute: what went in, what came out, why things were dropped."""
    r = report
    kept = r["documents_out"] / r["documents_in"] * 100 if r["documents_in"] else 0.0
    lines = [
        "# Data report", "",
        f"- inputs: {', '.join(r['inputs'])} ({r['sources']} source(s))",
        f"- documents: {r['documents_in']:,} in → {r['documents_out']:,} kept ({kept:.1f}%), "
        f"{r['documents_rejected']:,} rejected",
        f"- bytes: {_fmt_bytes(r['bytes_in'])} in → {_fmt_bytes(r['bytes_out'])} out",
        f"- time: {r['seconds']:.1f} s ({r['docs_per_second']:,.0f} documents/s)",
    ]
    enc = r["encoding"]
    if enc["utf8_replaced"]:
        lines.append(f"- invalid UTF-8: {enc['utf8_replaced']:,} byte sequence(s) in {enc['documents']:,} document(s), "
                     f"policy `{enc['policy']}`")
    if r.get("empty_sources"):
        lines.append(f"- empty inputs (no documents): {', '.join(r['empty_sources'][:5])}"
                     + (" …" if len(r["empty_sources"]) > 5 else ""))
    L = r["length_chars"]
    if L.get("count"):
        lines += ["", "## Length of kept documents (characters)", "",
                  "| min | P50 | P90 | P95 | P99 | max | mean |", "|---|---|---|---|---|---|---|",
                  f"| {L['min']:,} | {L['p50']:,} | {L['p90']:,} | {L['p95']:,} | {L['p99']:,} | {L['max']:,} "
                  f"| {L['mean']:,} |"]
    if r["rejected"]:
        lines += ["", "## Rejected", "", "| reason | documents | example |", "|---|---|---|"]
        for reason, info in r["rejected"].items():
            ex = info["examples"][0] if info["examples"] else {}
            where = f"{ex.get('source')}:{ex.get('line')}" if ex else ""
            lines.append(f"| {reason} | {info['count']:,} | {where} |")
    lines += ["", "## Steps", "", "| step | in | out | seconds |", "|---|---|---|---|"]
    for s in r["steps"]:
        lines.append(f"| {s['name']} | {s['docs_in']:,} | {s['docs_out']:,} | {s['seconds']:.2f} |")
    lines += ["", "Rejected documents, with `meta.reject_reason`, are in `rejected/`; details in `report.json`.", ""]
    return "\n".join(lines)
