"""The train/validation split of the tokens stage (`tokens.val_split`).

* `hash` (default): a document goes to validation when a hash of its id falls below
  `val_fraction`: deterministic, independent of order, right for collections of documents.
* `tail`: the last `val_fraction` of each source's text (by characters, cut exactly where the
  fraction falls, as nanoGPT's `data[int(n * 0.9):]`): contiguous, right for one continuous text,
  where neighbouring paragraphs share scenes and names and a hash split is measurably easier.

Pieces of a `data.txt_mode: continuous` source (`meta["continues"]`) are joined again with the
newline they were cut at, so a book trains as one stream: one `<eos>` at its end, no document
boundary inside. With `hash` the joined text is one document (it goes to one split); use `tail`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from lmforge.data.document import Document


def split_hash(doc_id: str, seed: int) -> float:
    """Deterministic value in [0, 1) for a document id; documents below val_fraction go to val."""
    digest = hashlib.blake2b(f"{seed}\0{doc_id}".encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2.0**64


def split_hashes(doc_ids: Iterable[str], seed: int) -> np.ndarray:
    """`split_hash` of many ids as a float64 array (the tokens stage's per-batch form)."""
    blake, prefix = hashlib.blake2b, f"{seed}\0".encode()
    raw = b"".join(blake(prefix + i.encode("utf-8", "surrogatepass"), digest_size=8).digest() for i in doc_ids)
    return np.frombuffer(raw, dtype="<u8") / 2.0**64


def _source(doc: Document) -> str:
    return str(doc.meta.get("source", doc.id))


def join_continuations(docs: Iterable[Document]) -> Iterator[Document]:
    """Join consecutive pieces of one continuous source (piece k+1 right after piece k) into one
    document; other documents pass through unchanged."""
    held: Document | None = None
    for d in docs:
        if (held is not None and d.meta.get("continues") and _source(d) == _source(held)
                and d.meta.get("piece") == held.meta.get("last_piece", held.meta.get("piece", -9)) + 1):
            held.text += "\n" + d.text
            held.meta["last_piece"] = d.meta.get("piece")
            continue
        if held is not None:
            yield held
            held = None
        if "piece" not in d.meta:  # nothing continues it: passed on as it is, not copied
            yield d
            continue
        held = Document(d.id.rsplit("#", 1)[0] if d.meta["piece"] == 0 else d.id, d.text, dict(d.meta))
    if held is not None:
        yield held


def _cut(doc: Document, at: int, split_first: str, split_second: str) -> Iterator[tuple[Document, str]]:
    """`doc` cut at character `at`: its head goes to `split_first`, the rest to `split_second`."""
    head, tail = doc.text[:at], doc.text[at:]
    if head:
        yield Document(f"{doc.id}#head", head, {**doc.meta, "cut_at": at}), split_first
    if tail:
        yield Document(f"{doc.id}#tail", tail, {**doc.meta, "cut_at": at}), split_second


def tail_split(make_docs: Callable[[], Iterable[Document]], val_fraction: float) -> Iterator[tuple[Document, str]]:
    """(document, split) with the last `val_fraction` of each source's characters in "val".
    Two passes over `make_docs()`: the first counts each source's characters."""
    totals: dict[str, int] = {}
    for d in join_continuations(make_docs()):
        totals[_source(d)] = totals.get(_source(d), 0) + len(d.text)
    pos: dict[str, int] = {}
    for d in join_continuations(make_docs()):
        src = _source(d)
        start = pos.get(src, 0)
        end = start + len(d.text)
        pos[src] = end
        cut = int(totals[src] * (1.0 - val_fraction))
        if end <= cut:
            yield d, "train"
        elif start >= cut:
            yield d, "val"
        else:
            yield from _cut(d, cut - start, "train", "val")


def routed_documents(make_docs: Callable[[], Iterable[Document]], cfg: Any) -> Iterator[tuple[Document, str | None]]:
    """(document, split) in corpus order for a TokensConfig-like `cfg` (`val_split`, `val_fraction`).
    With `hash` the split is None: the caller hashes (and may force one validation document)."""
    if getattr(cfg, "val_split", "hash") == "tail":
        yield from tail_split(make_docs, cfg.val_fraction)
        return
    for d in join_continuations(make_docs()):
        yield d, None
