"""Monitoring costs, as ratios against baselines measured in the same run.

    python benchmarks/monitor_overhead.py [--events 5000] [--lines 200000]

1. Logging: one RunLogger.log("train", ...) call (metrics.jsonl + anomaly detector, then + TensorBoard)
   against the bare MetricsWriter.log baseline: in a tight loop (total CPU work), and between 5 ms
   GIL-free waits standing in for a training step (the wall-clock overhead the loop feels; TensorBoard
   work runs on a background thread).
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


def per_event(log, n: int, step_s: float = 0.0) -> float:
    """Seconds per logged event; with `step_s`, each event follows a GIL-free wait of that length
    (a GPU step as the host sees it) and the wait is subtracted: the overhead the loop feels."""
    t = time.perf_counter()
    for s in range(n):
        if step_s:
            time.sleep(step_s)
        log("train", s, loss=3.0 - s * 1e-4, lr=3e-4, grad_norm=0.5 + (s % 7) * 0.01, tokens=s * 4096,
            tokens_per_s=12345.6)
    return (time.perf_counter() - t) / n - step_s


def bench_logging(root: Path, n: int) -> None:
    quiet = dict(system_every=0, plots=False, console=False)
    step = 0.005
    rows = []
    for label, make in [
        ("MetricsWriter.log (baseline)", lambda d: MetricsWriter(d / "metrics.jsonl")),
        ("RunLogger: jsonl + EMA + anomaly detector",
         lambda d: RunLogger(d, MonitorConfig(tensorboard=False, **quiet))),
        ("RunLogger: + TensorBoard scalars", lambda d: RunLogger(d, MonitorConfig(tensorboard=True, **quiet))),
    ]:
        w = make(root / f"r{len(rows)}a")
        tight = per_event(w.log, n)
        w.close()
        w = make(root / f"r{len(rows)}b")
        overlapped = per_event(w.log, max(50, n // 20), step)
        w.close()
        rows.append((label, tight, overlapped))
    idle = per_event(lambda *a, **k: None, max(50, n // 20), step)  # sleep overshoot: subtract it
    base = rows[0][1]
    print(f"(a 5 ms step loop without logging overshoots by {idle * 1e6:.0f} us; subtracted below)")
    print(f"logging, per train event (7 values){'':<11}{'tight loop us':>14}{'x baseline':>11}"
          f"{'in a 5 ms step loop: us':>25}{'% of step':>10}")
    for label, tight, over in rows:
        felt = over - idle
        print(f"{label:<46}{tight * 1e6:>14.1f}{tight / base:>11.2f}{felt * 1e6:>25.1f}{felt / step * 100:>9.2f}%")


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
