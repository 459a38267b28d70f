"""Recorded runs for the dashboard tests: metrics.jsonl files written line by line, as a trainer would."""

import json
import math
import os
import socket
import time
from pathlib import Path

import pytest


def train_line(step: int, t0: float, scale: float = 1.0) -> str:
    loss = scale * (2.0 + 3.0 * math.exp(-step / 15)) + 0.05 * math.sin(step)
    return json.dumps({"step": step, "time": t0 + step, "kind": "train", "loss": loss, "lr": 1e-3 * min(1, step / 10),
                       "grad_norm": 0.6 + 0.1 * math.cos(step), "tokens": step * 2048, "tokens_per_s": 9000 + step})


def write_run(root: Path, name: str, *, n_train: int, n_val: int, status: str | None = "finished",
              scale: float = 1.0, extras: bool = False) -> Path:
    """A run with `n_train` train events (steps 1..n), `n_val` val events, a system event every 5 steps.
    status None = still running (start event with this process's pid, no end event)."""
    run = root / name
    run.mkdir(parents=True)
    t0 = time.time()  # the start event must not predate this process (pid-reuse check)
    lines = [json.dumps({"step": 0, "time": t0, "kind": "event", "event": "start", "pid": os.getpid(),
                         "host": socket.gethostname()})]
    for s in range(1, n_train + 1):
        lines.append(train_line(s, t0, scale))
        if s % 5 == 0:
            lines.append(json.dumps({"step": s, "time": t0 + s, "kind": "system", "rss_mb": 500 + s}))
    for i in range(1, n_val + 1):
        s = i * n_train // n_val
        lines.append(json.dumps({"step": s, "time": t0 + s, "kind": "val", "loss": scale * (2.2 + 2.0 / i)}))
    if extras:
        for s in range(10, n_train + 1, 10):  # per-layer statistics, as monitor.layer_stats_every writes them
            groups = ["wte", *(f"blocks.{i}" for i in range(12)), "ln_f"]
            lines.append(json.dumps({"step": s, "time": t0 + s, "kind": "layers",
                                     **{f"grad_norm/{g}": 0.1 * (i + 1) / s for i, g in enumerate(groups)},
                                     **{f"update_ratio/{g}": 1e-3 * (i + 1) for i, g in enumerate(groups)}}))
        lines.append(json.dumps({"step": 20, "time": t0 + 20, "kind": "anomaly", "type": "grad_explosion",
                                 "message": "gradient norm 12 > 10: <b>exploding</b>", "value": 12.0}))
        lines.append(json.dumps({"step": 30, "time": t0 + 30, "kind": "sample", "prompt": "To be",
                                 "text": ", or not to be <script>alert(1)</script>"}))
        (run / "eval").mkdir()
        (run / "eval" / "report.json").write_text(json.dumps(
            {"val_loss": 2.345678, "perplexity": 10.44, "bits_per_byte": 1.23,
             "diversity": {"distinct_1": 0.61, "distinct_2": 0.9}}))
        (run / "config.yaml").write_text("name: alpha\ntrain:\n  lr: 0.003\n")
        (run / "data").mkdir()
        (run / "data" / "report.json").write_text(json.dumps(
            {"documents_in": 1200, "documents_kept": 1100, "rejected": {"too_short": 60, "duplicate": 40}}))
    if status is not None:
        lines.append(json.dumps({"step": n_train, "time": t0 + n_train, "kind": "event", "event": "end",
                                 "status": status}))
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return run


@pytest.fixture
def recorded_runs(tmp_path):
    """runs/alpha (finished, 40 steps, 4 evals, eval+data reports) and runs/beta (running, 25 steps, 5 evals)."""
    root = tmp_path / "runs"
    write_run(root, "alpha", n_train=40, n_val=4, status="finished", extras=True)
    write_run(root, "beta", n_train=25, n_val=5, status=None, scale=1.2)
    return root
