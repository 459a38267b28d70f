"""Dashboard server over real HTTP (uvicorn on 127.0.0.1): API, run status, security; CLI wiring."""

import argparse
import fcntl
import http.client
import json
import os
import time

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from conftest import train_line, write_run  # noqa: E402
from lmforge.errors import LmforgeError  # noqa: E402
from lmforge.monitor.dashboard.runs import RunStore, pid_alive, read_chunk  # noqa: E402
from lmforge.monitor.dashboard.server import DashboardServer  # noqa: E402


def request(srv, path, *, method="GET", host=None):
    """A raw request: http.client sends the path exactly as given (no ../ normalisation)."""
    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=10)
    conn.putrequest(method, path, skip_host=True)
    conn.putheader("Host", host or f"127.0.0.1:{srv.port}")
    conn.endheaders()
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, dict(resp.getheaders()), body


@pytest.fixture
def server(recorded_runs):
    with DashboardServer(recorded_runs) as srv:
        yield srv


def test_api_lists_runs_with_status_and_figures(server):
    status, headers, body = request(server, "/api/runs")
    assert status == 200 and "default-src 'self'" in headers["content-security-policy"]
    runs = {r["name"]: r for r in json.loads(body)["runs"]}
    assert set(runs) == {"alpha", "beta"}
    a, b = runs["alpha"], runs["beta"]
    assert a["status"] == "finished" and b["status"] == "running"  # beta: start event with our live pid
    assert a["step"] == 40 and a["tokens"] == 40 * 2048 and a["anomalies"] == 1 and a["samples"] == 1
    assert a["best_val_loss"] == pytest.approx(2.7) and a["has_eval"] and a["has_data"]
    assert b["step"] == 25 and not b["has_eval"]


def test_metrics_are_incremental_by_offset(server, recorded_runs):
    _, _, body = request(server, "/api/runs/beta/metrics?offset=0")
    first = json.loads(body)
    kinds = [e["kind"] for e in first["events"]]
    assert kinds.count("train") == 25 and kinds.count("val") == 5 and not first["more"]
    with open(recorded_runs / "beta" / "metrics.jsonl", "a") as f:
        f.write(train_line(26, 0.0) + "\n" + '{"step": 27, "kind": "tr')  # a line still being written
    _, _, body = request(server, f"/api/runs/beta/metrics?offset={first['offset']}")
    nxt = json.loads(body)
    assert [e["step"] for e in nxt["events"]] == [26]
    assert nxt["offset"] == first["offset"] + len(train_line(26, 0.0)) + 1  # the partial line waits


def test_reports_samples_and_static(server):
    status, _, body = request(server, "/api/runs/alpha/report/eval")
    assert status == 200 and json.loads(body)["perplexity"] == 10.44
    assert request(server, "/api/runs/alpha/report/data")[0] == 200
    assert request(server, "/api/runs/beta/report/eval")[0] == 404
    assert request(server, "/api/runs/alpha/report/config")[0] == 404
    assert request(server, "/api/runs/beta/config")[0] == 404  # no config.yaml in this run
    status, headers, body = request(server, "/api/runs/alpha/config")
    assert status == 200 and b"lr: 0.003" in body and headers["content-type"].startswith("text/plain")
    status, headers, body = request(server, "/static/plotly.min.js")
    assert status == 200 and len(body) > 1_000_000 and headers["content-type"].startswith("text/javascript")
    status, _, body = request(server, "/")
    assert status == 200 and b'src="/static/plotly.min.js"' in body and b"http" not in body.split(b"<body>")[0]


@pytest.mark.parametrize("path", [
    "/static/../../../../etc/passwd",
    "/static/..%2f..%2fetc%2fpasswd",
    "/api/runs/..%2f..%2f/metrics",
    "/api/runs/%2e%2e/report/eval",
    "/api/runs/alpha/../../secret/metrics",
    "/static/%252e%252e/x",
    "/static/..\\..\\etc\\passwd",
])
def test_path_traversal_refused(server, path):
    status, _, body = request(server, path)
    assert status in (400, 404) and b"root:" not in body


def test_foreign_host_and_writes_refused(server):
    assert request(server, "/api/runs", host="evil.example.com")[0] == 400
    assert request(server, "/", host="attacker.test:80")[0] == 400
    assert request(server, "/api/runs", host="localhost")[0] == 200
    assert request(server, "/api/runs", method="POST")[0] == 405
    assert request(server, "/api/runs/alpha/metrics", method="DELETE")[0] == 405
    assert request(server, "/static/index.py")[0] == 404
    assert request(server, "/api/runs/nope/metrics")[0] == 404


def test_symlink_out_of_runs_dir_is_not_a_run(tmp_path, recorded_runs):
    outside = write_run(tmp_path / "elsewhere", "secret", n_train=2, n_val=1)
    os.symlink(outside, recorded_runs / "secret")
    store = RunStore(recorded_runs)
    assert store.names() == ["alpha", "beta"] and store.path("secret") is None
    assert store.path("..") is None and store.path(".hidden") is None


def test_status_rules(tmp_path):
    root = tmp_path / "runs"
    write_run(root, "done", n_train=3, n_val=1, status="finished")
    write_run(root, "oom", n_train=3, n_val=1, status="crashed")
    dead = write_run(root, "killed", n_train=3, n_val=1, status=None)
    text = (dead / "metrics.jsonl").read_text().replace(f'"pid": {os.getpid()}', '"pid": 999999999')
    (dead / "metrics.jsonl").write_text(text)
    bare = root / "bare"
    bare.mkdir()
    (bare / "metrics.jsonl").write_text(train_line(1, time.time()) + "\n")
    stale = root / "stale"
    stale.mkdir()
    (stale / "metrics.jsonl").write_text(train_line(1, 0.0) + "\n")
    os.utime(stale / "metrics.jsonl", (time.time() - 3600, time.time() - 3600))
    # runs written by a trainer that logs no lifecycle events: lock, marker and config decide
    locked = root / "locked"
    locked.mkdir()
    (locked / "metrics.jsonl").write_text(train_line(1, 0.0) + "\n")
    os.utime(locked / "metrics.jsonl", (time.time() - 3600, time.time() - 3600))  # quiet, but the lock is held
    fd = os.open(locked / "train.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    released = root / "released"
    released.mkdir()
    (released / "metrics.jsonl").write_text(train_line(1, 0.0) + "\n")
    (released / "train.lock").write_text("12345\n")
    marked = root / "marked"
    (marked / "checkpoints").mkdir(parents=True)
    (marked / "metrics.jsonl").write_text(train_line(1, 0.0) + "\n")
    (marked / "train.lock").write_text("12345\n")
    (marked / "checkpoints" / "_SUCCESS.json").write_text("{}")
    budget = root / "budget"
    budget.mkdir()
    (budget / "metrics.jsonl").write_text(train_line(1, 0.0) + "\n" + train_line(2, 0.0) + "\n")
    (budget / "config.yaml").write_text("train:\n  max_steps: 2\n")
    os.utime(budget / "metrics.jsonl", (time.time() - 3600, time.time() - 3600))
    store = RunStore(root)
    try:
        got = {n: store.summary(n)["status"] for n in store.names()}
    finally:
        os.close(fd)
    assert got == {"bare": "running", "done": "finished", "killed": "crashed", "oom": "crashed", "stale": "crashed",
                   "locked": "running", "released": "crashed", "marked": "finished", "budget": "finished"}
    assert store.summary("locked")["status"] == "crashed"  # the lock holder is gone now
    assert pid_alive(os.getpid()) and not pid_alive(999999999)
    assert not pid_alive(os.getpid(), started=time.time() - 3600 * 24 * 365)  # pid reused by a newer process
    single = RunStore(root / "done")  # pointed at one run directory
    assert single.names() == ["done"] and single.summary("done")["status"] == "finished"


def test_read_chunk_reset_and_limits(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text('{"a": 1}\n{"a": 2}\n')
    events, off, more, reset = read_chunk(p, 0, limit=10)
    assert events == [{"a": 1}] and off == 9 and more and not reset
    p.write_text('{"b": 1}\n')  # replaced by a shorter file
    events, off, more, reset = read_chunk(p, 18)
    assert reset and events == [{"b": 1}] and off == 9


def test_cli_register_and_errors(tmp_path, recorded_runs, capsys):
    pytest.importorskip("matplotlib")
    from lmforge.monitor.commands import register

    ap = argparse.ArgumentParser(prog="lmforge")
    register(ap.add_subparsers(dest="cmd"))
    args = ap.parse_args(["plot", str(recorded_runs / "alpha"), str(recorded_runs / "beta"),
                          "--out", str(tmp_path / "cmp.png"), "--x", "time"])
    assert args.func(args) == 0 and (tmp_path / "cmp.png").read_bytes()[:4] == b"\x89PNG"
    args = ap.parse_args(["plot", str(tmp_path)])
    with pytest.raises(LmforgeError, match="has no metrics.jsonl"):
        args.func(args)
    args = ap.parse_args(["dashboard", str(tmp_path / "missing"), "--port", "8765"])
    with pytest.raises(LmforgeError, match="does not exist"):
        args.func(args)
    args = ap.parse_args(["dashboard", str(recorded_runs), "--port", "0"])
    with pytest.raises(LmforgeError, match="--port"):
        args.func(args)
