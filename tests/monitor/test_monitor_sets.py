"""The dashboard's validation chart draws one curve per held-out set (`val/<name>/loss`), for every
selected run, so sets and runs overlay; runs without named sets keep their single curve."""

import json
import time

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from test_monitor_browser import page, points  # noqa: E402, F401  (the Chromium fixture)

from conftest import write_run  # noqa: E402
from lmforge.monitor.dashboard.server import DashboardServer  # noqa: E402


def _with_sets(root, name, n_val, scale):
    run = write_run(root, name, n_train=20, n_val=0, status="finished", scale=scale)
    t0 = time.time()
    lines = [json.dumps({"step": 5 * i, "time": t0 + i, "kind": "val", "loss": scale * 3 / i, "select_by": "held",
                         "val/split/loss": scale * 2 / i, "val/held/loss": scale * 3 / i,
                         "val/held/bpb": scale / i, "val/web/loss": scale * 4 / i}) for i in range(1, n_val + 1)]
    with open(run / "metrics.jsonl", "a") as f:
        f.write("\n".join(lines) + "\n")


def test_validation_curve_per_set_and_run(page, tmp_path):  # noqa: F811
    root = tmp_path / "runs"
    _with_sets(root, "alpha", 4, 1.0)
    _with_sets(root, "beta", 3, 1.3)
    write_run(root, "plain", n_train=20, n_val=2, status="finished")
    with DashboardServer(root) as srv:
        page.goto(srv.url + "/")
        page.wait_for_function("() => window.lmforge && window.lmforge.draws > 0", timeout=30_000)
        page.wait_for_function("() => (document.getElementById('chart-val').data || []).length >= 7")
        for role in ("set:split", "set:held", "set:web"):
            assert points(page, "chart-val", "alpha", role) == [4]
            assert points(page, "chart-val", "beta", role) == [3]
        assert points(page, "chart-val", "plain") == [2]  # no named sets: the one val curve
        ys = page.evaluate("""() => document.getElementById('chart-val').data
            .filter(t => t.meta.run === 'alpha' && t.meta.set === 'web').map(t => t.y)""")
        assert ys == [[4.0, 2.0, 4 / 3, 1.0]]
        dashes = page.evaluate("""() => document.getElementById('chart-val').data
            .filter(t => t.meta.run === 'alpha').map(t => [t.meta.set, t.line.dash])""")
        assert dict(dashes) == {"split": "solid", "held": "dash", "web": "dot"}
        assert "per set" in page.evaluate("document.getElementById('chart-val').layout.title.text")
        assert not page.errors
