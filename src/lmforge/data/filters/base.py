"""The data-step protocol (docs/design.md §4).

A step maps a stream of documents to a stream of documents:
`run(docs, rank, world_size) -> Iterator[Document]`. A `Filter` overrides only
`filter(doc) -> bool | tuple[bool, str]` (the string names the reject reason); the base class counts
documents and bytes in and out, keeps a few examples per reason, stamps `meta["reject_reason"]` and
hands the rejected document to the pipeline's reject sink, so nothing is lost.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from lmforge.data.document import Document

EXAMPLES_PER_REASON = 3
PREVIEW_CHARS = 200


@dataclass
class StepStats:
    name: str
    docs_in: int = 0
    docs_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    seconds: float = 0.0
    rejects: Counter = field(default_factory=Counter)
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def add_reject(self, doc: Document, reason: str) -> None:
        self.rejects[reason] += 1
        ex = self.examples.setdefault(reason, [])
        if len(ex) < EXAMPLES_PER_REASON:
            ex.append(example(doc))

    def merge(self, other: StepStats) -> None:
        """Fold another rank's counts into this one (examples: first ranks first)."""
        for f in ("docs_in", "docs_out", "bytes_in", "bytes_out", "seconds"):
            setattr(self, f, getattr(self, f) + getattr(other, f))
        self.rejects.update(other.rejects)
        for reason, exs in other.examples.items():
            mine = self.examples.setdefault(reason, [])
            mine.extend(exs[: EXAMPLES_PER_REASON - len(mine)])

    def state(self) -> dict[str, Any]:
        """Everything, examples included, as JSON (to carry a worker's counts to the merge)."""
        return {**self.to_dict(), "seconds": self.seconds, "examples": self.examples}

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> StepStats:
        return cls(d["name"], d["docs_in"], d["docs_out"], d["bytes_in"], d["bytes_out"], d["seconds"],
                   Counter(d["rejected"]), {k: list(v) for k, v in d["examples"].items()})

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "docs_in": self.docs_in, "docs_out": self.docs_out,
                "bytes_in": self.bytes_in, "bytes_out": self.bytes_out, "seconds": round(self.seconds, 3),
                "rejected": dict(sorted(self.rejects.items()))}


def example(doc: Document) -> dict[str, Any]:
    """A short, JSON-safe picture of a document for the report."""
    text = doc.text if len(doc.text) <= PREVIEW_CHARS else doc.text[:PREVIEW_CHARS] + "…"
    ex = {"id": doc.id, "source": doc.meta.get("source"), "line": doc.meta.get("line", doc.meta.get("record")),
          "text": text}
    for key in ("reject_detail", "duplicate_of"):
        if key in doc.meta:
            ex[key] = doc.meta[key]
    return ex


RejectSink = Callable[[Document], None]


class Step:
    """Base of every data step. Subclasses override `process` (mappers) or, for filters, `filter`."""

    name = "step"

    def __init__(self) -> None:
        self.stats = StepStats(self.name)
        self.sink: RejectSink | None = None

    def reject(self, doc: Document, reason: str) -> None:
        doc.meta["reject_reason"] = reason
        doc.meta["reject_step"] = self.name
        self.stats.add_reject(doc, reason)
        if self.sink is not None:
            self.sink(doc)

    def process(self, doc: Document) -> Document | None:
        """Map one document; return None after calling `self.reject` to drop it."""
        return doc

    def run(self, docs: Iterator[Document], rank: int = 0, world_size: int = 1) -> Iterator[Document]:
        st = self.stats
        for doc in docs:
            t0 = time.perf_counter()
            st.docs_in += 1
            st.bytes_in += _nbytes(doc.text)
            out = self.process(doc)
            st.seconds += time.perf_counter() - t0
            if out is not None:
                st.docs_out += 1
                st.bytes_out += _nbytes(out.text)
                yield out


class Filter(Step):
    """Keep or reject; override `filter`. A bare `False` is rejected with reason `self.name`."""

    name = "filter"

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        raise NotImplementedError

    def process(self, doc: Document) -> Document | None:
        result = self.filter(doc)
        keep, reason = (result, self.name) if isinstance(result, bool) else result
        if keep:
            return doc
        self.reject(doc, reason)
        return None


def _nbytes(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
