"""Data-stage scaling: peak memory on a 1x and 4x corpus (near-dedup on), and documents/s with 1 and N workers.

Memory: the stage (dedup signatures in sorted run files, decisions in memory proportional to the
duplicates) against the previous in-memory dedup tables (`bands` keys per document), measured in the
same run on the same corpora. The corpus is Tiny Shakespeare's paragraphs with a lettered suffix
word, `--scale` copies per 1x, written as 8 files per copy (ranks get equal shares): the copies of a
paragraph differ in that one word, so a later copy of a paragraph long enough (~20+ words) is a
near-duplicate of the first — a duplicate-heavy corpus (short paragraphs stay distinct).

Speed: `--speed-scale` copies plus the shared HTML pages (trafilatura work), 1 and N workers,
interleaved and repeated (`--repeats`); the machine is shared, so the spread across repeats and the
load average are printed with the ratio. Each run pays ~1 s of process start and imports per worker
and a serial merge, so small corpora understate the speed-up.
Each run is a fresh Python process; peak memory is the largest resident set of the main process and
of its workers (ru_maxrss).

    python benchmarks/data_scaling.py [--workers 2] [--scale 2] [--speed-scale 4] [--repeats 3]
                                      [--skip memory|speed] [--shared ../shared/data]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _shared import SHARED_DATA, require

CHILD = """
import json, resource, sys, time
from lmforge.config import load_config
inputs, workers, out, mode = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
cfg = load_config(None, [f"data.inputs={json.dumps(inputs)}", f"data.workers={workers}", "data.plots=false",
                         "data.near_dedup.enabled=true"]).data
t0 = time.perf_counter()
if mode == "stage":
    from lmforge.data.executor import run_data_stage
    r = run_data_stage(cfg, out, progress=False)
else:  # the in-memory reference: one streaming pass, dedup tables in memory
    from pathlib import Path
    from lmforge.data.document import ShardWriter
    from lmforge.data.pipeline import RankTask, finish
    from lmforge.data.readers import expand_inputs
    with ShardWriter(Path(out) / "rejected", "rejected", cfg.shard_docs) as rej:
        task = RankTask(cfg, expand_inputs(cfg.inputs), 0, 1, rej.write)
        r = finish(cfg, Path(out), task.documents(), lambda: [task.state()], rej, progress=False, t0=t0)
dt = time.perf_counter() - t0
me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"docs": r["documents_in"], "out": r["documents_out"], "seconds": dt, "rss_main_mb": me / 1024,
                  "rss_worker_mb": kids / 1024}))
"""


def _tag(*key: int) -> str:
    """Letters only: MinHash shingles map digits to 0, so a numbered suffix would not make copies distinct."""
    return "".join(chr(97 + int(d)) for d in "".join(f"{k:05d}" for k in key))


def make_corpus(root: Path, shared: Path, copies: int, html: bool = True) -> list[str]:
    paras = [p for p in (shared / "tinyshakespeare.txt").read_text().split("\n\n") if p.strip()]
    root.mkdir(parents=True)
    for c in range(copies):
        for f in range(8):
            chunk = [f"{p} [{_tag(c, f, i)}]" for i, p in enumerate(paras[f::8])]
            (root / f"part-{c}-{f}.txt").write_text("\n\n".join(chunk))
    return [str(root)] + ([str(shared / "html")] if html else [])


def run(inputs: list[str], workers: int, out: Path, mode: str = "stage") -> dict:
    res = subprocess.run([sys.executable, "-c", CHILD, json.dumps(inputs), str(workers), str(out), mode],
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(res.stderr[-2000:])
    return json.loads(res.stdout.strip().splitlines()[-1])


def memory(tmp: Path, shared: Path, scale: int) -> None:
    corpora = {"1x": make_corpus(tmp / "m1", shared, scale, html=False),
               "4x": make_corpus(tmp / "m4", shared, 4 * scale, html=False)}
    rows = {}
    for mode in ("stage", "in-memory"):  # interleaved: 1x, 4x of one mode, then the other
        for name, inputs in corpora.items():
            rows[mode, name] = run(inputs, 1, tmp / f"o-{mode}-{name}", mode)
    print(f"{'dedup':10s} {'corpus':6s} {'docs':>7s} {'kept':>7s} {'seconds':>8s} {'peak MB':>8s}")
    for (mode, name), r in rows.items():
        print(f"{mode:10s} {name:6s} {r['docs']:7d} {r['out']:7d} {r['seconds']:8.1f} {r['rss_main_mb']:8.0f}")
    for mode in ("stage", "in-memory"):
        a, b = rows[mode, "1x"], rows[mode, "4x"]
        per_doc = (b["rss_main_mb"] - a["rss_main_mb"]) * 1024 / (b["docs"] - a["docs"])
        print(f"{mode}: peak memory 4x / 1x = {b['rss_main_mb'] / a['rss_main_mb']:.2f}x "
              f"({per_doc * 1024:.0f} bytes per extra document)")
    assert rows["stage", "4x"]["out"] == rows["in-memory", "4x"]["out"], "the two dedup paths disagree"


def _busy(n: int = 15_000_000) -> int:
    s = 0
    for i in range(n):
        s += i * i
    return s


def ceiling(workers: int) -> float:
    """What the machine gives N processes right now: the speed-up of N pure-Python busy loops run in
    N spawned processes over the same loops run one after another (1.0 = no free core)."""
    import multiprocessing
    import time

    t0 = time.perf_counter()
    for _ in range(workers):
        _busy()
    t1 = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        t2 = time.perf_counter()
        pool.map(_busy, [15_000_000] * workers)
    return (t1 - t0) / (time.perf_counter() - t2)


def speed(tmp: Path, shared: Path, scale: int, workers: int, repeats: int) -> None:
    import os

    inputs = make_corpus(tmp / "s1", shared, scale)
    load0 = os.getloadavg()[0]
    rates: dict[int, list[float]] = {1: [], workers: []}
    ceilings = []
    rss: dict[int, float] = {}
    docs = 0
    for rep in range(repeats):
        for w in (1, workers) if rep % 2 == 0 else (workers, 1):  # alternate the order: drift hits both
            r = run(inputs, w, tmp / f"s-{w}-{rep}")
            rates[w].append(r["docs"] / r["seconds"])
            rss[w] = max(rss.get(w, 0), r["rss_worker_mb"] if w > 1 else r["rss_main_mb"])
            docs = r["docs"]
        ceilings.append(ceiling(workers))
    print(f"\n{docs} documents (text + HTML pages), {repeats} runs each, interleaved")
    for w, xs in rates.items():
        print(f"workers={w}: docs/s median {statistics.median(xs):.0f} (runs: {', '.join(f'{x:.0f}' for x in xs)}), "
              f"peak MB per process {rss[w]:.0f}")
    ratio = [b / a for a, b in zip(rates[1], rates[workers])]
    print(f"speed-up with {workers} workers: {statistics.median(ratio):.2f}x (per pair: "
          f"{', '.join(f'{x:.2f}' for x in ratio)}); 1-minute load average {load0:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after, on {os.cpu_count()} cores (other jobs share them)")
    print(f"ceiling: {workers} busy loops in {workers} processes ran {statistics.median(ceilings):.2f}x as fast "
          f"as one after another (per pair: {', '.join(f'{x:.2f}' for x in ceilings)}), so the data stage got "
          f"{statistics.median(ratio) / statistics.median(ceilings):.0%} of the parallelism the machine offered")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=str(SHARED_DATA))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--scale", type=int, default=2, help="Shakespeare copies in the 1x corpus")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--speed-scale", type=int, default=4, help="Shakespeare copies in the speed corpus")
    ap.add_argument("--skip", choices=["memory", "speed"], default=None)
    args = ap.parse_args()
    shared = require(args.shared)
    with tempfile.TemporaryDirectory() as tmp:
        if args.skip != "memory":
            memory(Path(tmp), shared, args.scale)
        if args.skip != "speed":
            speed(Path(tmp), shared, args.speed_scale, args.workers, args.repeats)


if __name__ == "__main__":
    main()
