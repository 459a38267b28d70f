"""Perplexity and bits-per-byte by stratum: any document `meta` field and document length.

Documents come from the clean data (the run's validation documents, chosen with the tokens stage's
own split hash) or from a `--data` file; each is encoded with the run's tokenizer exactly as the
tokens stage does (`<bos>`? + text + `<eos>`) and scored on its own (`lmforge.eval.scoring`), so
the strata of the validation documents add up to the validation split's totals.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lmforge.eval.scoring import DocScores, count_words, score_documents, summarize

OTHER = "(other)"
MISSING = "(none)"


def length_labels(edges: list[int]) -> list[str]:
    """Bucket names for token-length edges, e.g. [64, 256] -> ['<64', '64-255', '>=256']."""
    if not edges:
        return ["all"]
    labels = [f"<{edges[0]}"]
    labels += [f"{a}-{b - 1}" for a, b in zip(edges, edges[1:])]
    return labels + [f">={edges[-1]}"]


def length_bucket(n_tokens: int, edges: list[int]) -> str:
    return length_labels(edges)[int(np.searchsorted(np.asarray(edges), n_tokens, side="right"))]


def _meta_value(meta: dict[str, Any], field: str) -> str:
    v = meta.get(field)
    if v is None or v == "":
        return MISSING
    return str(v)


def _group_rows(keys: list[str], nll: np.ndarray, toks: np.ndarray, nbytes: np.ndarray, words: np.ndarray,
                max_groups: int, order: list[str] | None = None) -> list[dict[str, Any]]:
    groups: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    if order is None:  # largest groups first; the tail is folded into one "(other)" row
        names = sorted(groups, key=lambda k: (-int(toks[groups[k]].sum()), k))
        if max_groups and len(names) > max_groups:
            rest = [i for k in names[max_groups - 1:] for i in groups[k]]
            names = names[:max_groups - 1] + [OTHER]
            groups[OTHER] = rest
    else:
        names = [k for k in order if k in groups]
    rows = []
    for name in names:
        idx = groups[name]
        s = summarize(float(nll[idx].sum()), int(toks[idx].sum()), int(nbytes[idx].sum()), int(words[idx].sum()))
        rows.append({"value": name, "docs": len(idx), "tokens": s["tokens"], "bytes": s.get("bytes", 0),
                     "nll_sum": s["nll_sum"], "loss": s["loss"], "perplexity": s["perplexity"], "bpb": s.get("bpb"),
                     "word_perplexity": s.get("word_perplexity")})
    return rows


def encode_like_tokens_stage(tokenizer, docs: list, add_bos: bool = False) -> list[list[int]]:
    """Token ids per document as the tokens stage writes them: <bos>? + text + <eos>."""
    head = [tokenizer.bos_id] if add_bos else []
    return [head + list(ids) + [tokenizer.eos_id] for ids in tokenizer.encode_batch([d.text for d in docs])]


def stratified_scores(model, tokenizer, docs: list, *, fields: list[str], edges: list[int], add_bos: bool = False,
                      batch_size: int = 16, max_groups: int = 20, encoded: list[list[int]] | None = None,
                      scores: DocScores | None = None) -> dict[str, Any]:
    """Score `docs` (objects with `.text` and `.meta`) one by one; returns the overall figures and
    `strata`: {field: [row per value]} plus `length (tokens)`, each row with docs, tokens, loss,
    perplexity, bpb and word perplexity. `encoded`/`scores`: reuse an earlier pass over the same
    documents instead of scoring them again."""
    eos, bos = tokenizer.eos_id, tokenizer.bos_id
    if encoded is None:
        encoded = encode_like_tokens_stage(tokenizer, docs, add_bos)
    if scores is None:
        scores, _ = score_documents(model, encoded, len(encoded), prefix_id=eos, bos_id=bos, batch_size=batch_size)
    nbytes = np.array([len(d.text.encode("utf-8")) for d in docs], np.int64)
    words = np.array([count_words(d.text) for d in docs], np.int64)
    overall = summarize(scores.total_nll, scores.total_tokens, int(nbytes.sum()), int(words.sum()))
    overall["docs"] = len(docs)
    strata: dict[str, list[dict[str, Any]]] = {}
    for field in fields:
        keys = [_meta_value(d.meta, field) for d in docs]
        if len(set(keys)) < 2:
            continue  # one value (or the field is in no document): the overall figures say it all
        strata[field] = _group_rows(keys, scores.nll, scores.tokens, nbytes, words, max_groups)
    lengths = [length_bucket(len(e), edges) for e in encoded]
    strata["length (tokens)"] = _group_rows(lengths, scores.nll, scores.tokens, nbytes, words, 0,
                                            order=length_labels(edges))
    return {"overall": overall, "strata": strata}


def val_documents(data_dir: Path, *, val_fraction: float, split_seed: int, val_split: str = "hash") -> list:
    """The clean documents the tokens stage put in the validation split (same routing: the hash
    with its fallback — when no hash falls below val_fraction, the document with the smallest hash —
    or each source's tail)."""
    import types

    from lmforge.data.document import iter_clean_documents
    from lmforge.tokens.split import routed_documents, split_hash

    cfg = types.SimpleNamespace(val_split=val_split, val_fraction=val_fraction)
    chosen, smallest = [], None
    for d, split in routed_documents(lambda: iter_clean_documents(data_dir), cfg):
        if split is not None:
            if split == "val":
                chosen.append(d)
            continue
        h = split_hash(d.id, split_seed)
        if h < val_fraction:
            chosen.append(d)
        elif smallest is None or h < smallest[0]:
            smallest = (h, d)
    if not chosen and smallest is not None:
        chosen = [smallest[1]]
    return chosen
