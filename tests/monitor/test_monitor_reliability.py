"""Dashboard hardening (issue 12): files served only from inside RUNS_DIR, non-finite numbers in
metrics.jsonl, and a warning/opt-in before the dashboard listens beyond this machine."""

import argparse
import json

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from test_monitor_dashboard import request  # noqa: E402

from conftest import write_run  # noqa: E402
from lmforge.errors import LmforgeError  # noqa: E402
from lmforge.monitor.dashboard.runs import RunStore, read_chunk  # noqa: E402
from lmforge.monitor.dashboard.server import DashboardServer  # noqa: E402


@pytest.fixture
def secret(tmp_path):
    s = tmp_path / "outside" / "secret.txt"
    s.parent.mkdir()
    s.write_text("root:x:0:0:TOPSECRET\n")
    return s


def test_symlinks_out_of_runs_dir_are_never_served(tmp_path, secret):
    """Defect 6: config.yaml -> /etc/passwd (any file outside RUNS_DIR) was served."""
    runs = tmp_path / "runs"
    run = write_run(runs, "evil", n_train=3, n_val=1)
    (run / "config.yaml").symlink_to(secret)
    (run / "eval").mkdir()
    (run / "eval" / "report.json").symlink_to(secret.parent / "report.json")
    (secret.parent / "report.json").write_text('{"secret": "TOPSECRET"}')
    (run / "eval" / "samples.jsonl").symlink_to(secret.parent / "samples.jsonl")
    (secret.parent / "samples.jsonl").write_text('{"prompt": "TOPSECRET"}\n')
    with DashboardServer(runs) as srv:
        for path in ("/api/runs/evil/config", "/api/runs/evil/report/eval", "/api/runs/evil/samples"):
            status, _, body = request(srv, path)
            assert b"TOPSECRET" not in body, path
        status, _, _ = request(srv, "/api/runs/evil/config")
        assert status == 404


def test_metrics_file_symlinked_outside_is_not_a_run(tmp_path, secret):
    runs = tmp_path / "runs"
    run = write_run(runs, "evil", n_train=3, n_val=1)
    (run / "metrics.jsonl").unlink()
    outside = secret.parent / "metrics.jsonl"
    outside.write_text('{"step": 1, "time": 1, "kind": "train", "loss": 1.0, "secret": "TOPSECRET"}\n')
    (run / "metrics.jsonl").symlink_to(outside)
    store = RunStore(runs)
    assert store.path("evil") is None and "evil" not in store.names()


def test_links_inside_runs_dir_still_work(tmp_path):
    runs = tmp_path / "runs"
    run = write_run(runs, "ok", n_train=3, n_val=1)
    (runs / "shared.yaml").write_text("name: shared\n")
    (run / "config.yaml").symlink_to(runs / "shared.yaml")
    with DashboardServer(runs) as srv:
        status, _, body = request(srv, "/api/runs/ok/config")
    assert status == 200 and b"name: shared" in body


def test_non_finite_numbers_in_metrics_do_not_break_the_api(tmp_path):
    """Defect 8: one `1e400` (or NaN) made /metrics answer 500 on every retry."""
    runs = tmp_path / "runs"
    run = write_run(runs, "inf", n_train=3, n_val=1)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "time": 1e9, "kind": "train", "loss": 1e400, "lr": NaN, "x": [-Infinity, 1]}\n')
        f.write('{"step": 5, "time": 1e9, "kind": "train", "loss": 2.5}\n')
    with DashboardServer(runs) as srv:
        status, _, body = request(srv, "/api/runs/inf/metrics?offset=0")
        assert status == 200
        events = json.loads(body)["events"]
        bad = [e for e in events if e["step"] == 4][0]
        assert bad["loss"] == "inf" and bad["lr"] == "nan" and bad["x"] == ["-inf", 1]
        assert [e for e in events if e["step"] == 5][0]["loss"] == 2.5
        status, _, body = request(srv, "/api/runs")
        assert status == 200 and json.loads(body)["runs"][0]["step"] == 5
    events, *_ = read_chunk(run / "metrics.jsonl", 0)
    json.dumps(events, allow_nan=False)  # what the JSON response does


def _dash_args(tmp_path, host, allow_remote=False):
    return argparse.Namespace(runs_dir=str(tmp_path), host=host, port=8765, allow_host=None,
                              allow_remote=allow_remote)


def test_dashboard_on_all_interfaces_needs_allow_remote(tmp_path, monkeypatch, capsys):
    """`--host 0.0.0.0` exposes an unauthenticated page: refused unless --allow-remote, then warned."""
    from lmforge.cli import main
    from lmforge.monitor import commands
    from lmforge.monitor.dashboard import server

    served = []
    monkeypatch.setattr(server, "serve", lambda *a, **k: served.append((a, k)))
    with pytest.raises(LmforgeError, match="no authentication.*--allow-remote"):
        commands.cmd_dashboard(_dash_args(tmp_path, "0.0.0.0"))
    assert main(["dashboard", str(tmp_path), "--host", "0.0.0.0"]) == 2
    assert not served
    assert main(["dashboard", str(tmp_path), "--host", "0.0.0.0", "--allow-remote"]) == 0
    assert len(served) == 1 and "no authentication" in capsys.readouterr().err
    assert main(["dashboard", str(tmp_path), "--host", "127.0.0.1"]) == 0 and len(served) == 2
