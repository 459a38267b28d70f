"""Data-stage scaling: documents/s with 1 and N workers, and peak memory on a 1x and 4x corpus.

The corpus is Tiny Shakespeare's paragraphs, each made distinct by a lettered suffix, written as
8 files per 1x (so ranks get equal shares), plus the shared HTML pages (trafilatura work). Each run
is a fresh Python process; peak memory is the largest resident set of the main process and of its
workers. On a machine shared with other jobs the worker speed-up is capped by the free cores.

    python benchmarks/data_scaling.py [--workers 2] [--shared ../shared/data]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import json, resource, sys, time
from lmforge.config import load_config
from lmforge.data.pipeline import run_data_stage
inputs, workers, out = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
cfg = load_config(None, [f"data.inputs={json.dumps(inputs)}", f"data.workers={workers}", "data.plots=false",
                         "data.near_dedup.enabled=true"]).data
t0 = time.perf_counter()
r = run_data_stage(cfg, out, progress=False)
dt = time.perf_counter() - t0
me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"docs": r["documents_in"], "seconds": dt, "rss_main_mb": me / 1024, "rss_worker_mb": kids / 1024}))
"""


def _tag(*key: int) -> str:
    """Letters only: MinHash shingles map digits to 0, so a numbered suffix would not make copies distinct."""
    return "".join(chr(97 + int(d)) for d in "".join(f"{k:05d}" for k in key))


def make_corpus(root: Path, shared: Path, copies: int) -> list[str]:
    paras = [p for p in (shared / "tinyshakespeare.txt").read_text().split("\n\n") if p.strip()]
    root.mkdir(parents=True)
    for c in range(copies):
        for f in range(8):
            chunk = paras[f::8]
            (root / f"part-{c}-{f}.txt").write_text("\n\n".join(f"{p} [{_tag(c, f, i)}]" for i, p in enumerate(chunk)))
    return [str(root), str(shared / "html")]


def run(inputs: list[str], workers: int, out: Path) -> dict:
    res = subprocess.run([sys.executable, "-c", CHILD, json.dumps(inputs), str(workers), str(out)],
                         capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    shared = Path(args.shared)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        one, four = make_corpus(tmp / "c1", shared, 1), make_corpus(tmp / "c4", shared, 4)
        rows = [("1x", 1, run(one, 1, tmp / "o1")), ("1x", args.workers, run(one, args.workers, tmp / "o2")),
                ("4x", 1, run(four, 1, tmp / "o3"))]
    print(f"{'corpus':7s} {'workers':>7s} {'docs':>7s} {'seconds':>8s} {'docs/s':>8s} {'peak MB main':>13s} "
          f"{'peak MB worker':>15s}")
    for name, w, r in rows:
        print(f"{name:7s} {w:7d} {r['docs']:7d} {r['seconds']:8.1f} {r['docs'] / r['seconds']:8.0f} "
              f"{r['rss_main_mb']:13.0f} {r['rss_worker_mb'] if w > 1 else 0:15.0f}")
    base = rows[0][2]["docs"] / rows[0][2]["seconds"]
    print(f"\nspeed-up with {args.workers} workers: {rows[1][2]['docs'] / rows[1][2]['seconds'] / base:.2f}x; "
          f"peak memory 4x / 1x corpus: {rows[2][2]['rss_main_mb'] / rows[0][2]['rss_main_mb']:.2f}x")


if __name__ == "__main__":
    main()
