"""lmforge's data steps vs datatrove's on the same documents: throughput per core and agreement.

Inputs: the shared WARC + HTML pages (extraction), and for the filters those pages' main text plus
other real text of varied quality (standard-library docs, Tiny Shakespeare cut into ~3 KB pieces,
language-ID sentences grouped by five), so the filters see both keepers and rejects.
Thresholds are set equal on both sides (FineWeb's duplicated-line ratio at datatrove's 0.01).
Language ID is compared separately (datatrove's fastText model is a run-time download; see
benchmarks/data_langid.py). Everything runs in this one process, one core.

    pip install datatrove spacy   # optional benchmark extra
    python benchmarks/data_vs_datatrove.py [--shared ../shared/data]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from _shared import SHARED_DATA, require

from lmforge.config import C4Config, FineWebConfig, NearDedupConfig
from lmforge.data.builtin import iter_stdlib_documents
from lmforge.data.clean import clean_text
from lmforge.data.dedup import NearDedup
from lmforge.data.document import Document
from lmforge.data.extract import HtmlExtract
from lmforge.data.filters.heuristic import GopherQualityFilter, GopherRepetitionFilter
from lmforge.data.filters.web import C4Filter, FineWebFilter
from lmforge.data.readers import ReadOptions, expand_inputs, read_source


def timed(fn, items, repeat=1):
    t0 = time.perf_counter()
    for _ in range(repeat):
        out = [fn(x) for x in items]
    return out, len(items) * repeat / (time.perf_counter() - t0)


def web_pages(shared: Path) -> list[Document]:
    docs = []
    for src in expand_inputs([str(shared / "warc"), str(shared / "html")]):
        docs += [d for d in read_source(src, ReadOptions(warn=lambda m: None)) if d.meta.get("format") == "html"]
    return docs


def filter_corpus(shared: Path, extracted: list[str]) -> list[str]:
    texts = list(extracted) + [clean_text(d.text) for d in iter_stdlib_documents()]
    play = (shared / "tinyshakespeare.txt").read_text()
    texts += [play[i:i + 3000] for i in range(0, len(play), 3000)]
    for p in sorted((shared / "langid").glob("*.txt")):
        lines = p.read_text().splitlines()
        texts += [" ".join(lines[i:i + 5]) for i in range(0, len(lines), 5)]
    return [t for t in texts if t.strip()]


def compare_extraction(pages: list[Document]) -> None:
    from datatrove.data import Document as DTDoc
    from datatrove.pipeline.extractors import Trafilatura

    ours = HtmlExtract(favor="precision")  # datatrove's setting: favour_precision, no comments
    mine, ours_rate = timed(lambda d: ours.process(Document(d.id, d.text, dict(d.meta))), pages)
    dt = Trafilatura(favour_precision=True, deduplicate=False, timeout=10)
    t0 = time.perf_counter()
    theirs = list(dt.run(iter(DTDoc(text=d.text, id=d.id) for d in pages)))
    dt_rate = len(pages) / (time.perf_counter() - t0)
    kept_dt = {d.id: d.text for d in theirs}
    same_text = sum(1 for d, m in zip(pages, mine) if m is not None and kept_dt.get(d.id, "").split() == m.text.split())
    agree = sum((m is not None) == (d.id in kept_dt) for d, m in zip(pages, mine))
    print(f"{'extraction (trafilatura)':28s} {ours_rate:9.1f} {dt_rate:10.1f} {ours_rate / dt_rate:6.2f}x "
          f"{agree / len(pages):8.1%}   identical text on {same_text}/{len(pages)} pages")


# Why a kind of disagreement remains (ours / datatrove reason). Word splitting is no longer one:
# lmforge.data.filters.words follows spaCy's English tokenizer, which datatrove uses.
EXPLAIN = {
    ("keep", "gopher_enough_stop_words"): "datatrove matches the stop words case-sensitively (a text whose only "
    "stop words are 'The', 'To', 'And' fails); lmforge lowercases: the Gopher rule asks for the words",
}


def compare_filter(name: str, ours, theirs, texts: list[str], repeat: int) -> list[str]:
    from datatrove.data import Document as DTDoc

    def ours_fn(t):
        r = ours.filter(Document("x", t, {}))
        return (True, "") if r is True else r

    def theirs_fn(t):
        r = theirs.filter(DTDoc(text=t, id="x"))
        return (True, "") if r is True else (r if isinstance(r, tuple) else (False, "?"))

    a, ours_rate = timed(ours_fn, texts, repeat)
    b, dt_rate = timed(theirs_fn, texts, repeat)
    agree = sum(x[0] == y[0] for x, y in zip(a, b))
    kinds = Counter((x[1] or "keep", y[1] or "keep") for x, y in zip(a, b) if x[0] != y[0])
    print(f"{name:28s} {ours_rate:9.1f} {dt_rate:10.1f} {ours_rate / dt_rate:6.2f}x {agree / len(texts):8.1%}"
          f"   kept {sum(x[0] for x in a)} vs {sum(y[0] for y in b)}")
    notes = []
    for k, n in kinds.most_common(6):
        notes.append(f"    {name}: ours {k[0]} / datatrove {k[1]}: {n}")
        if k in EXPLAIN:
            notes.append(f"      why: {EXPLAIN[k]}")
        examples = [t for t, x, y in zip(texts, a, b) if x[0] != y[0] and (x[1] or "keep", y[1] or "keep") == k]
        notes += [f"      e.g. {t[:100]!r}" for t in examples[:2]]
    return notes


def compare_minhash(texts: list[str]) -> None:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    # near-duplicates to find: every 4th text again with ~2% of its words changed
    docs = [Document(f"d{i:05d}", t, {}) for i, t in enumerate(texts)]
    for i, t in enumerate(texts[::4]):
        w = t.split()
        for k in range(0, len(w), 50):
            w[k] = "changed"
        docs.append(Document(f"v{i:05d}", " ".join(w), {}))
    near = NearDedup(NearDedupConfig())
    t0 = time.perf_counter()
    ours_removed = {d.id for d in docs if near.filter(d) is not True}
    ours_rate = len(docs) / (time.perf_counter() - t0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        w = JsonlWriter(str(tmp / "in"), output_filename="docs.jsonl", compression=None)
        from datatrove.data import Document as DTDoc
        with w:
            for d in docs:
                w.write(DTDoc(text=d.text, id=d.id), rank=0)
        from datatrove.utils.hashing import HashConfig

        cfg = MinhashConfig(hash_config=HashConfig(hash_fc="sha1"))  # its xxhash path fails with xxhash 3.x
        runs = iter(range(100))

        def execute(pipeline, **kw):  # logging_dir=None would make datatrove write ./logs/<time>
            LocalPipelineExecutor(pipeline, skip_completed=False, logging_dir=str(tmp / f"logs{next(runs)}"),
                                  **kw).run()

        quiet = contextlib.ExitStack()  # datatrove prints a stats table per stage and task
        quiet.enter_context(contextlib.redirect_stdout(io.StringIO()))
        quiet.enter_context(contextlib.redirect_stderr(io.StringIO()))
        t0 = time.perf_counter()
        execute([JsonlReader(str(tmp / "in")), MinhashDedupSignature(str(tmp / "sig"), config=cfg)], tasks=1)
        execute([MinhashDedupBuckets(str(tmp / "sig"), str(tmp / "buckets"), config=cfg)],
                tasks=cfg.num_buckets, workers=1)
        execute([MinhashDedupCluster(str(tmp / "buckets"), str(tmp / "ids"), config=cfg)], tasks=1)
        execute([JsonlReader(str(tmp / "in")),
                 MinhashDedupFilter(str(tmp / "ids"), exclusion_writer=JsonlWriter(str(tmp / "rm"))),
                 JsonlWriter(str(tmp / "out"))], tasks=1)
        dt_rate = len(docs) / (time.perf_counter() - t0)
        quiet.close()
        dt_removed = {d.id for d in JsonlReader(str(tmp / "rm")).run()}
    agree = sum((d.id in ours_removed) == (d.id in dt_removed) for d in docs)
    print(f"{'minhash dedup (14x8, 5-gram)':28s} {ours_rate:9.1f} {dt_rate:10.1f} {ours_rate / dt_rate:6.2f}x "
          f"{agree / len(docs):8.1%}   removed {len(ours_removed)} vs {len(dt_removed)} "
          f"(planted {len(texts[::4])})")
    only_ours = sorted(ours_removed - dt_removed)
    only_dt = sorted(dt_removed - ours_removed)
    print(f"    removed only by lmforge: {len(only_ours)} {only_ours[:4]}; only by datatrove: {len(only_dt)} "
          f"{only_dt[:4]} (datatrove shingles normalised text: digits -> 0, punctuation and accents removed)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=str(SHARED_DATA))
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    shared = require(args.shared)
    try:
        from loguru import logger
    except ImportError:
        sys.exit("data_vs_datatrove.py compares with datatrove: pip install -e '.[bench]'")
    logging.disable(logging.WARNING)

    logger.remove()  # datatrove's progress logging
    from datatrove.pipeline.filters import C4QualityFilter, FineWebQualityFilter
    from datatrove.pipeline.filters import GopherQualityFilter as DTGQ
    from datatrove.pipeline.filters import GopherRepetitionFilter as DTGR

    pages = web_pages(shared)
    extractor = HtmlExtract(favor="precision")
    extracted = [d.text for d in (extractor.process(p) for p in web_pages(shared)) if d is not None]
    texts = filter_corpus(shared, [clean_text(t) for t in extracted])
    print(f"{len(pages)} web pages; {len(texts)} texts for the filters ({sum(map(len, texts)) / 1e6:.1f} MB)\n")
    print(f"{'step':28s} {'lmforge/s':>9s} {'datatrove/s':>10s} {'ratio':>7s} {'agree':>8s}")
    compare_extraction(pages)
    notes = []
    notes += compare_filter("gopher quality", GopherQualityFilter(), DTGQ(), texts, args.repeat)
    notes += compare_filter("gopher repetition", GopherRepetitionFilter(), DTGR(), texts, args.repeat)
    notes += compare_filter("c4 (line mode)", C4Filter(C4Config()), C4QualityFilter(), texts, args.repeat)
    notes += compare_filter("fineweb", FineWebFilter(FineWebConfig(max_dup_line_char_ratio=0.01)),
                            FineWebQualityFilter(), texts, args.repeat)
    compare_minhash(texts)
    print("\ndisagreements (ours / datatrove reason: count):")
    print("\n".join(notes) or "    none")


if __name__ == "__main__":
    main()
