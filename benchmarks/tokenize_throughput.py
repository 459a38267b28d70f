"""Tokenize-stage throughput and memory against raw HF `tokenizers.encode_batch`, same text, same run.

    python benchmarks/tokenize_throughput.py                 # 20 MB corpora, 3 rounds; RSS at 10 and 40 MB
    python benchmarks/tokenize_throughput.py --mb 50 --rounds 5 --rss-sizes 100,400

Prints MB/s of the whole stage (reading clean shards, encoding, splitting, writing token shards
and the manifest) with 1 and 2 workers and 2 ranks, the raw `encode_batch` MB/s on the same in-memory
texts (HF's default thread pool; the same with the ids read out of the Encodings, the least work that
gives tokens; one thread), their ratios, rank scaling with one core per rank (1 rank pinned to one
core vs 2 ranks on two: how ranks scale when each has its own cores, as on a cluster), and the stage's
peak RSS (main process and workers) for two corpus sizes. Each measurement runs in a fresh subprocess
so RSS is its own.

These machines drift by 20-30% within minutes, so every row runs `--rounds` times, the runs of a round
back to back; a ratio is the median over rounds of that round's ratio, and MB/s the median. Two corpora
of the same text: short documents (the play's paragraphs, ~190 bytes: the worst case for per-document
work) and web-page-sized ones (paragraphs joined to ~3 KB, about a FineWeb document).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
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


def make_corpus(out: Path, mb: float, doc_bytes: int = 0) -> int:
    """Clean shards of about `mb` MB of text: the source documents cycled (each with a new id), or with
    `doc_bytes`, consecutive ones joined by blank lines into documents of at least that many bytes."""
    from lmforge.data.document import Document, ShardWriter

    src, total, i, n = _source_docs(), 0, 0, 0
    per_shard = 5_000 if not doc_bytes else max(50, 1_000_000 // doc_bytes)  # ~20 shards to balance 2 ranks
    with ShardWriter(out, "clean", max_docs=per_shard, level=1) as w:
        while total < mb * 1e6:
            parts, size = [], 0
            while not parts or size < doc_bytes:
                parts.append(src[i % len(src)])
                size += len(parts[-1].encode()) + 2
                i += 1
            text = "\n\n".join(parts)
            w.write(Document(f"d{n}", text))
            total += len(text.encode())
            n += 1
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


def _rounds(d: str, t: str, rounds: int) -> dict[str, list[float]]:
    """MB/s of every row, `rounds` times; within a round the rows run back to back."""
    one = {"RAYON_NUM_THREADS": "1"}
    runs = {
        "raw": lambda: _child(["raw", d, t]),
        "raw_ids": lambda: _child(["raw", d, t, "ids"]),
        "raw1": lambda: _child(["raw", d, t], one),
        "w1": lambda: _child(["stage", d, t, "1", "1"]),
        "w2": lambda: _child(["stage", d, t, "2", "1"]),
        "ranks2": lambda: _child(["stage", d, t, "1", "2"]),
    }
    if len(os.sched_getaffinity(0)) >= 2:
        runs["pin1"] = lambda: _child(["stage", d, t, "1", "1", "1"], one)
        runs["pin2"] = lambda: _child(["stage", d, t, "1", "2", "2"], one)
    out: dict[str, list[float]] = {k: [] for k in runs}
    tokens: set[int] = set()
    for _ in range(rounds):
        for k, run in runs.items():
            r = run()
            out[k].append(r["mb_s"])
            if "tokens" in r:
                tokens.add(r["tokens"])
    if len(tokens) != 1:
        raise SystemExit(f"the stage runs disagree on the token count: {sorted(tokens)}")
    return out


def _table(res: dict[str, list[float]]) -> None:
    med = lambda xs: statistics.median(xs)  # noqa: E731
    ratio = lambda a, b: med([x / y for x, y in zip(res[a], res[b])])  # noqa: E731
    names = {"raw": "raw encode_batch (HF thread pool)", "raw_ids": "raw encode_batch + ids (thread pool)",
             "raw1": "raw encode_batch (1 thread)", "w1": "stage, 1 worker, shards written",
             "w2": "stage, 2 workers, shards written", "ranks2": "stage, 2 ranks (local processes)",
             "pin1": "stage, 1 rank on 1 core", "pin2": "stage, 2 ranks on 2 cores (1 each)"}
    print(f"{'run':38s} {'MB/s':>6s} {'(min-max)':>11s} {'vs raw':>7s} {'vs raw+ids':>11s} {'vs raw 1 thread':>16s}")
    for k, xs in res.items():
        print(f"{names[k]:38s} {med(xs):6.2f} {min(xs):5.2f}-{max(xs):<5.2f} {ratio(k, 'raw'):7.2f} "
              f"{ratio(k, 'raw_ids'):11.2f} {ratio(k, 'raw1'):16.2f}")
    print(f"1 worker vs raw HF thread pool: {ratio('w1', 'raw'):.2f}x (rounds: "
          f"{', '.join(f'{x / y:.2f}' for x, y in zip(res['w1'], res['raw']))}); vs raw + ids: "
          f"{ratio('w1', 'raw_ids'):.2f}x")
    print(f"2 ranks vs 1 rank, all cores: {ratio('ranks2', 'w1'):.2f}x (one rank already uses every core: "
          "its threads)")
    if "pin1" in res:
        print(f"2 ranks vs 1 rank, one core per rank: {ratio('pin2', 'pin1'):.2f}x (rounds: "
              f"{', '.join(f'{x / y:.2f}' for x, y in zip(res['pin2'], res['pin1']))})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=20)
    ap.add_argument("--rounds", type=int, default=3)
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

    for title, doc_bytes in (("short documents (paragraphs, ~190 bytes)", 0),
                             ("web-page-sized documents (~3 KB)", 3000)):
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            nbytes = make_corpus(tmp / "data", a.mb, doc_bytes)
            train_tokenizer(TokenizerConfig(vocab_size=a.vocab, max_train_bytes=5_000_000),
                            (d.text for d in iter_clean_documents(tmp / "data")), tmp / "tok")
            res = _rounds(str(tmp / "data"), str(tmp / "tok"), a.rounds)
        print(f"\n{title}: corpus {nbytes / 1e6:.1f} MB, byte-level BPE vocab {a.vocab}, {os.cpu_count()} CPUs, "
              f"median of {a.rounds} rounds (same token count in every stage run)")
        _table(res)
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
