"""Monitoring costs, as ratios against baselines measured in the same run.

    python benchmarks/monitor_overhead.py [--events 5000] [--lines 200000]

1. Logging: one RunLogger.log("train", ...) call (metrics.jsonl + anomaly detector, then + TensorBoard)
   against the bare MetricsWriter.log baseline, in a tight loop. TensorBoard's protobuf work runs on a
   background thread, which overlaps a real step's GIL-free compute; in a tight loop it competes.
2. Dashboard live update: reading the newest 100 lines of a long metrics.jsonl by byte offset
   (what the page does every second) against re-reading and parsing the whole file.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from lmforge.config import MonitorConfig
from lmforge.monitor.dashboard.runs import read_chunk
from lmforge.monitor.logger import RunLogger
from lmforge.monitor.metrics import MetricsWriter, read_metrics


def per_event(log, n: int) -> float:
    """Seconds per logged train event (7 values), in a tight loop."""
    t = time.perf_counter()
    for s in range(n):
        log("train", s, loss=3.0 - s * 1e-4, lr=3e-4, grad_norm=0.5 + (s % 7) * 0.01, tokens=s * 4096,
            tokens_per_s=12345.6)
    return (time.perf_counter() - t) / n


def bench_logging(root: Path, n: int) -> None:
    quiet = dict(system_every=0, plots=False, console=False)
    rows = []
    for label, make in [
        ("MetricsWriter.log (baseline)", lambda d: MetricsWriter(d / "metrics.jsonl")),
        ("RunLogger: jsonl + EMA + anomaly detector",
         lambda d: RunLogger(d, MonitorConfig(tensorboard=False, **quiet))),
        ("RunLogger: + TensorBoard scalars", lambda d: RunLogger(d, MonitorConfig(tensorboard=True, **quiet))),
    ]:
        w = make(root / f"r{len(rows)}")
        t0 = time.perf_counter()
        per_event(w.log, n)
        w.close()  # TensorBoard: waits for the background thread, so all of its work is counted
        rows.append((label, (time.perf_counter() - t0) / n))
    base = rows[0][1]
    print(f"{'logging, per train event (7 values)':<46}{'us':>8}{'x baseline':>12}{'% of a 100 ms step':>20}")
    for label, t in rows:
        print(f"{label:<46}{t * 1e6:>8.1f}{t / base:>12.2f}{t / 0.1 * 100:>19.3f}%")


def bench_reading(root: Path, lines: int) -> None:
    path = root / "long" / "metrics.jsonl"
    path.parent.mkdir(parents=True)
    with open(path, "w") as f:
        for s in range(lines):
            f.write(json.dumps({"step": s, "time": 1.7e9 + s, "kind": "train", "loss": 3.0, "lr": 3e-4,
                                "grad_norm": 0.5, "tokens": s * 4096, "tokens_per_s": 12345.6}) + "\n")
    offset = path.stat().st_size
    with open(path, "a") as f:
        for s in range(lines, lines + 100):
            f.write(json.dumps({"step": s, "time": 1.7e9 + s, "kind": "train", "loss": 3.0}) + "\n")
    reps = 20
    t = time.perf_counter()
    for _ in range(reps):
        events, _, _, _ = read_chunk(path, offset)
    t_inc = (time.perf_counter() - t) / reps
    assert len(events) == 100
    t = time.perf_counter()
    full = sum(1 for _ in read_metrics(path))
    t_full = time.perf_counter() - t
    assert full == lines + 100
    print(f"\ndashboard update of {lines:,}-line metrics.jsonl: incremental {t_inc * 1e3:.2f} ms, "
          f"full re-read {t_full * 1e3:.0f} ms -> {t_full / t_inc:,.0f}x less work per poll")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=5000)
    ap.add_argument("--lines", type=int, default=200_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        bench_logging(Path(d), args.events)
        bench_reading(Path(d), args.lines)


if __name__ == "__main__":
    main()
