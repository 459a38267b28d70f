"""Tokenize-stage throughput and memory against raw HF `tokenizers.encode_batch`, same text, same run.

    python benchmarks/tokenize_throughput.py                 # 20 MB corpus; RSS at 10 and 40 MB
    python benchmarks/tokenize_throughput.py --mb 50 --rss-sizes 100,400

Prints MB/s of the whole stage (reading clean shards, encoding, splitting, writing token shards
and the manifest) with 1 and 2 workers and 2 ranks, the raw `encode_batch` MB/s on the same in-memory
texts (HF's default thread pool; the same with the ids read out of the Encodings, the least work that
gives tokens; one thread), their ratios, rank scaling with one core per rank (1 rank pinned to one
core vs 2 ranks on two: how ranks scale when each has its own cores, as on a cluster), and the stage's
peak RSS (main process and workers) for two corpus sizes. Each measurement runs in a fresh subprocess
so RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _source_docs() -> list[str]:
    text = (DATA / "tinyshakespeare.txt").read_text(encoding="utf-8")
    docs = [d for d in text.split("\n\n") if d.strip()]
    for f in sorted((DATA / "langid").glob("*.txt")):
        lines = f.read_text(encoding="utf-8").splitlines()
        docs += ["\n".join(lines[i:i + 5]) for i in range(0, len(lines), 5)]
    return docs


def make_corpus(out: Path, mb: float) -> int:
    """Clean shards of about `mb` MB of text (the source documents cycled, each with a new id)."""
    from lmforge.data.document import Document, ShardWriter

    src, total, i = _source_docs(), 0, 0
    with ShardWriter(out, "clean", max_docs=5_000, level=1) as w:  # enough shards to balance 2 ranks
        while total < mb * 1e6:
            text = src[i % len(src)]
            w.write(Document(f"d{i}", text))
            total += len(text.encode())
            i += 1
    return total


def _peak_rss_mb() -> tuple[float, float]:
    self_ = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return round(self_, 1), round(kids, 1)


def child_stage(data: str, tok: str, workers: int, ranks: int = 1, cores: int = 0) -> dict:
    if cores:  # this many cores for the whole stage (the rank processes inherit it)
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:cores])
    from lmforge.config import TokensConfig
    from lmforge.tokens.stage import run_tokenize_stage

    with tempfile.TemporaryDirectory() as out:
        man = run_tokenize_stage(TokensConfig(workers=workers, ranks=ranks), Path(data), Path(tok), Path(out),
                                 progress=False)
    rss, kids = _peak_rss_mb()
    return {"mb_s": man["stats"]["mb_per_s"], "bytes": man["stats"]["bytes"], "rss_mb": rss, "workers_rss_mb": kids,
            "tokens": man["splits"]["train"]["tokens"] + man["splits"]["val"]["tokens"]}


def child_raw(data: str, tok: str, ids: str = "") -> dict:
    """Raw HF encode_batch on the same texts, ~1 MB per call, texts already in memory; with `ids`, the
    token ids are also read out of each Encoding (what any consumer of the tokens has to do)."""
    from lmforge.data.document import iter_clean_documents
    from lmforge.tokenizer import load_tokenizer

    hf = load_tokenizer(tok).hf
    texts = [d.text for d in iter_clean_documents(data)]
    batches, cur, size = [], [], 0
    for t in texts:
        cur.append(t)
        size += len(t.encode())
        if size >= 1_000_000:
            batches.append(cur)
            cur, size = [], 0
    batches.append(cur)
    nbytes = sum(len(t.encode()) for t in texts)
    t0 = time.perf_counter()
    for b in batches:
        enc = hf.encode_batch(b, add_special_tokens=False)
        if ids:
            [e.ids for e in enc]
    return {"mb_s": round(nbytes / 1e6 / (time.perf_counter() - t0), 3)}


def _child(args: list[str], env: dict | None = None) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True,
                         env={**os.environ, **(env or {})}, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=20)
    ap.add_argument("--rss-sizes", default="10,40")
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--child", nargs="+")
    ap.add_argument("--no-rss", action="store_true", help="skip the memory table")
    ap.add_argument("--data", type=Path, default=DATA, help="folder holding tinyshakespeare.txt and langid/")
    a = ap.parse_args()
    globals()["DATA"] = a.data
    if a.child:
        kind, *rest = a.child
        res = child_raw(*rest) if kind == "raw" else child_stage(rest[0], rest[1], *map(int, rest[2:]))
        print(json.dumps(res))
        return
    if not (DATA / "tinyshakespeare.txt").is_file():
        print(f"no benchmark text at {DATA}: nothing to measure")
        return
    from lmforge.config import TokenizerConfig
    from lmforge.data.document import iter_clean_documents
    from lmforge.tokenizer import train_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        nbytes = make_corpus(tmp / "data", a.mb)
        train_tokenizer(TokenizerConfig(vocab_size=a.vocab, max_train_bytes=5_000_000),
                        (d.text for d in iter_clean_documents(tmp / "data")), tmp / "tok")
        d, t = str(tmp / "data"), str(tmp / "tok")
        raw = _child(["raw", d, t])
        raw_ids = _child(["raw", d, t, "ids"])
        raw1 = _child(["raw", d, t], {"RAYON_NUM_THREADS": "1"})
        st = {w: _child(["stage", d, t, str(w), "1"]) for w in (1, 2)}
        ranks2 = _child(["stage", d, t, "1", "2"])
        one = {"RAYON_NUM_THREADS": "1"}
        pinned = {r: _child(["stage", d, t, "1", str(r), str(r)], one) for r in (1, 2)} if len(
            os.sched_getaffinity(0)) >= 2 else None
        print(f"corpus {nbytes / 1e6:.1f} MB, byte-level BPE vocab {a.vocab}, {os.cpu_count()} CPUs")
        print(f"{'run':38s} {'MB/s':>8s} {'vs raw':>8s} {'vs raw+ids':>11s} {'vs raw 1 thread':>16s}")

        def row(name: str, mb_s: float) -> None:
            print(f"{name:38s} {mb_s:8.2f} {mb_s / raw['mb_s']:8.2f} {mb_s / raw_ids['mb_s']:11.2f} "
                  f"{mb_s / raw1['mb_s']:16.2f}")

        row("raw encode_batch (HF thread pool)", raw["mb_s"])
        row("raw encode_batch + ids (thread pool)", raw_ids["mb_s"])
        row("raw encode_batch (1 thread)", raw1["mb_s"])
        for w, r in st.items():
            row(f"stage, {w} worker(s), shards written", r["mb_s"])
        row("stage, 2 ranks (local processes)", ranks2["mb_s"])
        if pinned:
            row("stage, 1 rank on 1 core", pinned[1]["mb_s"])
            row("stage, 2 ranks on 2 cores (1 each)", pinned[2]["mb_s"])
        print(f"2 ranks vs 1 rank, all cores: {ranks2['mb_s'] / st[1]['mb_s']:.2f}x (same tokens: "
              f"{ranks2['tokens'] == st[1]['tokens']}; one rank already uses every core through HF's thread pool)")
        if pinned:
            print(f"2 ranks vs 1 rank, one core per rank: {pinned[2]['mb_s'] / pinned[1]['mb_s']:.2f}x (same tokens: "
                  f"{pinned[2]['tokens'] == pinned[1]['tokens'] == st[1]['tokens']})")
        print(f"1 worker vs raw HF thread pool: {st[1]['mb_s'] / raw['mb_s']:.2f}x; vs raw + ids: "
              f"{st[1]['mb_s'] / raw_ids['mb_s']:.2f}x")
    if a.no_rss:
        return
    print()
    print(f"{'corpus MB':>10s} {'workers':>8s} {'stage MB/s':>11s} {'peak RSS main MB':>17s} "
          f"{'peak RSS worker MB':>19s}")
    for mb in (float(x) for x in a.rss_sizes.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            make_corpus(tmp / "data", mb)
            train_tokenizer(TokenizerConfig(vocab_size=a.vocab, max_train_bytes=5_000_000),
                            (d.text for d in iter_clean_documents(tmp / "data")), tmp / "tok")
            for w in (1, 2):
                r = _child(["stage", str(tmp / "data"), str(tmp / "tok"), str(w), "1"])
                print(f"{mb:10.0f} {w:8d} {r['mb_s']:11.2f} {r['rss_mb']:17.1f} {r['workers_rss_mb']:19.1f}")


if __name__ == "__main__":
    main()
