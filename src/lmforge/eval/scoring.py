"""Exact per-document log-likelihood: the core of perplexity, bits-per-byte and stratified eval.

Definitions follow lm-evaluation-harness (`loglikelihood_rolling`):

* every document is scored on its own, conditioned on a prefix token (the document's own leading
  `<bos>` when it has one, else `<eos>` as the harness's end-of-text prefix), so every other token of
  the document, its closing `<eos>` included, is predicted exactly once;
* a document longer than the context is cut into disjoint windows of `block_size` predictions, each
  window seeing only its own tokens (plus the one token before it);
* figures are sums over the whole split: loss = sum(NLL) / tokens, perplexity = exp(loss),
  bits-per-byte = sum(NLL) / (UTF-8 bytes * ln 2), word perplexity = exp(sum(NLL) / words).

For speed, short windows are packed into rows of `block_size` (first-fit decreasing) and evaluated
with block-diagonal attention (`doc_ids`, positions restart per window), which gives the same
logits as scoring each window alone. Per-document sums are kept, so any stratification adds up to the split total.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

IGNORE = -100


def doc_windows(tokens: np.ndarray, block_size: int, prefix_id: int | None,
                bos_id: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(inputs, targets) windows that predict every token of one document once."""
    tokens = np.asarray(tokens, dtype=np.int64)
    if len(tokens) == 0:
        return []
    if bos_id is not None and tokens[0] == bos_id:
        seq = tokens  # its own <bos> is the prefix and is not scored
    elif prefix_id is None:
        seq = tokens  # no prefix token: the first token is not scored
    else:
        seq = np.concatenate([[prefix_id], tokens])
    out = []
    for s in range(0, len(seq) - 1, block_size):
        e = min(s + block_size, len(seq) - 1)
        out.append((seq[s:e], seq[s + 1:e + 1]))
    return out


@dataclass
class DocScores:
    """Per-document sums: `nll[i]` (nats) and `tokens[i]` (predicted tokens) of document i."""

    nll: np.ndarray
    tokens: np.ndarray

    @property
    def total_nll(self) -> float:
        return float(self.nll.sum())

    @property
    def total_tokens(self) -> int:
        return int(self.tokens.sum())


def _rows(windows: Iterable[tuple[int, np.ndarray, np.ndarray]], T: int) -> Iterator[tuple[np.ndarray, ...]]:
    """Pack (doc, inputs, targets) windows into rows of length T: (inputs, targets, doc, segment)."""
    def empty():
        return (np.zeros(T, np.int64), np.full(T, IGNORE, np.int64), np.full(T, -1, np.int64),
                np.zeros(T, np.int64))

    row, fill, nseg = empty(), 0, 0
    for doc, inp, tgt in windows:
        n = len(inp)
        if fill + n > T:
            row[3][fill:] = nseg  # padding gets its own segment id
            yield row
            row, fill, nseg = empty(), 0, 0
        row[0][fill:fill + n], row[1][fill:fill + n], row[2][fill:fill + n] = inp, tgt, doc
        row[3][fill:fill + n] = nseg
        fill, nseg = fill + n, nseg + 1
    if fill:
        row[3][fill:] = nseg
        yield row


def _rows_ffd(windows: Iterable[tuple[int, np.ndarray, np.ndarray]], T: int,
              buffer_rows: int = 64) -> Iterator[tuple[np.ndarray, ...]]:
    """Like `_rows`, but windows are placed first-fit-decreasing within a buffer of about
    `buffer_rows` rows: ~95% of each row holds tokens instead of ~80% in arrival order. Every window
    is still scored alone (its own segment), so the results do not depend on the placement."""
    def flush(buf: list[tuple[int, np.ndarray, np.ndarray]]) -> Iterator[tuple[np.ndarray, ...]]:
        bins: list[list[tuple[int, np.ndarray, np.ndarray]]] = []
        free: list[int] = []
        for w in sorted(buf, key=lambda w: -len(w[1])):
            for b, room in enumerate(free):
                if len(w[1]) <= room:
                    bins[b].append(w)
                    free[b] -= len(w[1])
                    break
            else:
                bins.append([w])
                free.append(T - len(w[1]))
        for b in bins:
            yield from _rows(b, T)

    buf, size = [], 0
    for w in windows:
        buf.append(w)
        size += len(w[1])
        if size >= buffer_rows * T:
            yield from flush(buf)
            buf, size = [], 0
    if buf:
        yield from flush(buf)


@torch.inference_mode()
def _score_batch(model, rows: list[tuple[np.ndarray, ...]], nll: np.ndarray, counts: np.ndarray,
                 device: torch.device) -> None:
    inp, tgt, doc, seg = (torch.from_numpy(np.stack(col)) for col in zip(*rows))
    inp, tgt, seg = inp.to(device), tgt.to(device), seg.to(device)
    single = bool((seg == 0).all())  # one window per row, no padding: plain causal attention
    logits = model(inp, doc_ids=None if single else seg)  # (B, T, V)
    loss = F.cross_entropy(logits.float().flatten(0, 1), tgt.flatten(), ignore_index=IGNORE, reduction="none")
    keep = (tgt.flatten() != IGNORE).cpu().numpy()
    d = doc.flatten().numpy()[keep]
    np.add.at(nll, d, loss.double().cpu().numpy()[keep])
    np.add.at(counts, d, 1)


def score_documents(model, docs: Iterable[np.ndarray | list[int]], num_docs: int, *, prefix_id: int | None,
                    bos_id: int | None = None, batch_size: int = 16, max_batches: int = 0) -> tuple[DocScores, int]:
    """Score `num_docs` documents (token arrays, in order). With `max_batches` > 0 only the leading
    documents that fit entirely into that many batches are scored. Returns (scores, docs scored)."""
    model_was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    T = model.cfg.block_size
    nll, counts = np.zeros(num_docs, np.float64), np.zeros(num_docs, np.int64)
    budget = max_batches * batch_size if max_batches > 0 else None
    taken = [0]

    def windows() -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        rows, fill = 0, 0
        for i, toks in enumerate(docs):
            ws = doc_windows(toks, T, prefix_id, bos_id)
            if budget is not None:  # simulate packing: stop before a document that would not fit
                r, f = rows, fill
                for inp, _ in ws:
                    if f + len(inp) > T:
                        r, f = r + 1, 0
                    f += len(inp)
                if r + (f > 0) > budget:
                    return
                rows, fill = r, f
            taken[0] = i + 1
            for inp, tgt in ws:
                yield i, inp, tgt

    try:
        batch: list[tuple[np.ndarray, ...]] = []
        # with a batch budget, arrival order keeps "the leading documents that fit" exact
        for row in (_rows(windows(), T) if budget is not None else _rows_ffd(windows(), T)):
            batch.append(row)
            if len(batch) == batch_size:
                _score_batch(model, batch, nll, counts, device)
                batch = []
        if batch:
            _score_batch(model, batch, nll, counts, device)
    finally:
        model.train(model_was_training)
    return DocScores(nll, counts), taken[0]


def summarize(nll: float, tokens: int, nbytes: int | None = None, words: int | None = None) -> dict[str, float]:
    """Split-level figures from sums (lm-evaluation-harness definitions)."""
    out: dict[str, float] = {"tokens": int(tokens), "nll_sum": float(nll)}
    loss = nll / tokens if tokens else float("nan")
    out["loss"] = loss
    out["perplexity"] = math.exp(loss) if math.isfinite(loss) and loss < 700 else float("inf")
    if nbytes:
        out["bytes"] = int(nbytes)
        out["bpb"] = nll / (nbytes * math.log(2))
        out["bytes_per_token"] = nbytes / tokens if tokens else float("nan")
    if words:
        out["words"] = int(words)
        wl = nll / words
        out["word_perplexity"] = math.exp(wl) if wl < 700 else float("inf")
    return out


def count_words(text: str) -> int:
    """Whitespace-separated words, as lm-evaluation-harness's word_perplexity counts them."""
    return len(text.split())


def evaluate_dataset(model, dataset, *, tokenizer=None, batch_size: int = 16, max_batches: int = 0) -> dict:
    """Loss, perplexity and bits-per-byte of `model` on a `TokenDataset` (e.g. the val split).

    Bytes: the split's UTF-8 byte count when the whole split is scored; with `max_batches` the
    scored documents are decoded with `tokenizer` to count their bytes (no bpb without one)."""
    return evaluate_dataset_docs(model, dataset, tokenizer=tokenizer, batch_size=batch_size,
                                 max_batches=max_batches)[0]


def evaluate_dataset_docs(model, dataset, *, tokenizer=None, batch_size: int = 16,
                          max_batches: int = 0) -> tuple[dict, DocScores]:
    """`evaluate_dataset` plus the per-document sums (for strata without a second pass)."""
    eos = getattr(tokenizer, "eos_id", None) if tokenizer is not None else None
    bos = getattr(tokenizer, "bos_id", None) if tokenizer is not None else None
    scores, n = score_documents(model, (dataset.doc(i) for i in range(dataset.num_docs)), dataset.num_docs,
                                prefix_id=eos, bos_id=bos, batch_size=batch_size, max_batches=max_batches)
    nbytes = dataset.bytes if n == dataset.num_docs else None
    words = None
    if tokenizer is not None:
        texts = [tokenizer.decode(dataset.doc(i).tolist()) for i in range(n)]
        words = sum(count_words(t) for t in texts)
        if nbytes is None:
            nbytes = sum(len(t.encode("utf-8")) for t in texts)
    out = summarize(scores.total_nll, scores.total_tokens, nbytes, words)
    out["docs"] = n
    out["docs_total"] = dataset.num_docs
    return out, scores


def evaluate_texts(model, tokenizer, texts: list[str], *, batch_size: int = 16,
                   append_eos: bool = True) -> tuple[dict, DocScores]:
    """Score plain texts (each one document, closed by <eos> like the token shards). Returns the
    split-level figures and the per-document sums (for stratification)."""
    eos = tokenizer.eos_id
    docs = [list(tokenizer.encode(t)) + ([eos] if append_eos else []) for t in texts]
    scores, _ = score_documents(model, docs, len(docs), prefix_id=eos, bos_id=getattr(tokenizer, "bos_id", None),
                                batch_size=batch_size)
    nbytes = sum(len(t.encode("utf-8")) for t in texts)
    out = summarize(scores.total_nll, scores.total_tokens, nbytes, sum(count_words(t) for t in texts))
    out["docs"] = len(texts)
    return out, scores
