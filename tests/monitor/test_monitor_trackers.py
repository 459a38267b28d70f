"""`monitor.trackers`: W&B (offline), MLflow (sqlite) and trackio (local sqlite) get the run's scalars,
config and eval artifacts, read back from their local stores; a missing package or dead server warns
once and training goes on; only rank 0 logs."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import struct
import sys
import tempfile
import uuid
from pathlib import Path

import pytest
import yaml

if "trackio" not in sys.modules:  # trackio reads TRACKIO_DIR once, at import: keep it out of the home directory
    os.environ["TRACKIO_DIR"] = tempfile.mkdtemp(prefix="lmforge-trackio-")

from lmforge.config import MonitorConfig  # noqa: E402
from lmforge.errors import ConfigError  # noqa: E402
from lmforge.monitor.logger import RunLogger  # noqa: E402
from lmforge.monitor.metrics import read_metrics  # noqa: E402


@pytest.fixture(autouse=True)
def _local_only(tmp_path, monkeypatch):
    for k, v in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_CONFIG_DIR": str(tmp_path / "wbcfg"),
                 "WANDB_CACHE_DIR": str(tmp_path / "wbcache"), "WANDB_DATA_DIR": str(tmp_path / "wbdata"),
                 "MLFLOW_DISABLE_TELEMETRY": "true", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def wandb_records(run_dir: Path) -> list:
    """Records of W&B offline runs under RUN_DIR/wandb (its LevelDB-style log: 32 KiB blocks, 7-byte
    record headers CRC/length/type, chunks FULL=1 FIRST=2 MIDDLE=3 LAST=4)."""
    from wandb.proto import wandb_internal_pb2 as pb

    out = []
    for f in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb")):
        data, pos, buf = f.read_bytes(), 7, b""
        assert data[:4] == b":W&B"
        while pos + 7 <= len(data):
            left = 32768 - pos % 32768
            if left < 7:
                pos += left
                continue
            _, n, typ = struct.unpack("<IHB", data[pos:pos + 7])
            if n == 0 and typ == 0:
                pos += left
                continue
            chunk, pos = data[pos + 7:pos + 7 + n], pos + 7 + n
            if typ in (1, 4):
                r = pb.Record()
                r.ParseFromString(buf + chunk if typ == 4 else chunk)
                out.append(r)
            buf = chunk if typ == 2 else buf + chunk if typ == 3 else b""
    return out


def _corpus(d: Path) -> Path:
    import numpy as np

    rng = np.random.default_rng(0)
    d.mkdir()
    words = "river stone light market winter garden copper signal harbor lantern".split()
    (d / "a.jsonl").write_text("".join(json.dumps({"text": " ".join(rng.choice(words, 30))}) + "\n"
                                       for _ in range(80)))
    return d


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory):
    pytest.importorskip("wandb")
    pytest.importorskip("mlflow")
    pytest.importorskip("trackio")
    tmp = tmp_path_factory.mktemp("trk")
    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_CONFIG_DIR": str(tmp / "wbcfg"),
           "MLFLOW_DISABLE_TELEMETRY": "true"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    project = f"lmforge-test-{uuid.uuid4().hex[:8]}"
    cfg = {"data": {"inputs": [str(_corpus(tmp / "corpus"))]}, "tokenizer": {"kind": "byte"},
           "tokens": {"val_fraction": 0.1}, "model": {"preset": "tiny", "block_size": 16},
           "train": {"batch_size": 4, "max_steps": 4, "warmup_steps": 1, "eval_every": 2, "eval_batches": 2,
                     "ckpt_every": 0, "log_every": 1, "sample_every": 2, "progress": False, "device": "cpu",
                     "precision": "fp32"},
           "eval": {"num_samples": 1, "max_new_tokens": 4, "prompts": ["river"], "report_samples": 2},
           "monitor": {"tensorboard": False, "plots": False, "system_every": 0, "trackers": ["wandb", "mlflow",
                                                                                             "trackio"],
                       "tracker_project": project, "wandb_mode": "offline"}}
    (tmp / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    from lmforge.cli import main

    try:
        assert main(["run", str(tmp / "cfg.yaml"), "--run-dir", str(tmp / "run")]) == 0
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    run = tmp / "run"
    return run, project, [e["loss"] for e in read_metrics(run / "metrics.jsonl", "train")]


def test_mlflow_sqlite_store_holds_the_run(tracked_run):
    from mlflow import MlflowClient

    run, project, losses = tracked_run
    client = MlflowClient(tracking_uri=f"sqlite:///{run / 'mlflow.db'}")
    exp = client.get_experiment_by_name(project)
    (r,) = client.search_runs([exp.experiment_id])
    assert r.info.status == "FINISHED" and r.info.run_name == "run"
    hist = sorted(client.get_metric_history(r.info.run_id, "train/loss"), key=lambda m: m.step)
    assert [m.value for m in hist] == pytest.approx(losses) and [m.step for m in hist] == [1, 2, 3, 4]
    assert [m.step for m in client.get_metric_history(r.info.run_id, "val/loss")] == [2, 4]
    assert r.data.params["train.max_steps"] == "4" and r.data.params["model.n_layer"] == "2"
    assert any(k.startswith("eval/") for k in r.data.metrics)
    names = {a.path for a in client.list_artifacts(r.info.run_id, "eval")}
    assert {"eval/report.json", "eval/report.md"} <= names
    assert client.list_artifacts(r.info.run_id, "samples")  # samples as text files
    assert (run / "mlartifacts").is_dir()  # artifacts stay in the run directory


def test_wandb_offline_run_holds_the_values(tracked_run):
    run, _, losses = tracked_run
    recs = wandb_records(run)
    hist = {}
    for r in recs:
        if r.WhichOneof("record_type") == "history":
            items = {(i.key or "/".join(i.nested_key)): i.value_json for i in r.history.item}
            if "train/loss" in items:
                hist[int(items["_step"])] = float(items["train/loss"])
    assert [hist[s] for s in sorted(hist)] == pytest.approx(losses)
    config = [r.run.config for r in recs if r.WhichOneof("record_type") == "run"]  # config given to init
    keys = {(u.key or "/".join(u.nested_key)) for c in config for u in c.update}
    assert {"train", "model", "tokens"} <= keys
    types = {r.artifact.type for r in recs if r.WhichOneof("record_type") == "artifact"}
    assert "eval" in types  # the eval report (a second offline-run dir of the same run id)
    ids = json.loads((run / "trackers.json").read_text())
    assert all(ids["wandb"] in p.name for p in run.glob("wandb/offline-run-*"))


def test_trackio_local_store_holds_the_values(tracked_run):
    import trackio.utils

    run, project, losses = tracked_run
    db = Path(trackio.utils.TRACKIO_DIR) / f"{project}.db"
    with sqlite3.connect(db) as c:
        rows = c.execute("select step, metrics from metrics where run_name = 'run' order by id").fetchall()
        cfg = c.execute("select config from configs where run_name = 'run'").fetchone()
    got = {s: json.loads(m)["train/loss"] for s, m in rows if "train/loss" in json.loads(m)}
    assert [got[s] for s in sorted(got)] == pytest.approx(losses)
    assert any("samples" in json.loads(m) for _, m in rows)
    assert json.loads(cfg[0]).get("train.max_steps") == 4, cfg[0][:300]
    db.unlink()


def test_missing_package_warns_once_and_logging_goes_on(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
    cfg = MonitorConfig(tensorboard=False, plots=False, system_every=0, trackers=["wandb"])
    with caplog.at_level(logging.WARNING, logger="lmforge.monitor"):
        with RunLogger(tmp_path, cfg) as mon:
            for s in range(5):
                mon.log("train", s, loss=1.0)
    warns = [r for r in caplog.records if "wandb is not installed" in r.getMessage()]
    assert len(warns) == 1 and "lmforge[wandb]" in warns[0].getMessage()
    assert len(list(read_metrics(tmp_path / "metrics.jsonl", "train"))) == 5


def test_unreachable_server_and_failing_tracker_warn_once(tmp_path, caplog):
    pytest.importorskip("mlflow")
    cfg = MonitorConfig(tensorboard=False, plots=False, system_every=0, trackers=["mlflow"],
                        mlflow_tracking_uri="http://127.0.0.1:9")  # discard port: nothing listens
    with caplog.at_level(logging.WARNING, logger="lmforge.monitor"):
        with RunLogger(tmp_path / "a", cfg) as mon:
            mon.log("train", 1, loss=1.0)
    assert sum("mlflow could not start" in r.getMessage() for r in caplog.records) == 1
    caplog.clear()
    ok = MonitorConfig(tensorboard=False, plots=False, system_every=0, trackers=["mlflow"])
    with caplog.at_level(logging.WARNING, logger="lmforge.monitor"):
        with RunLogger(tmp_path / "b", ok) as mon:
            (t,) = mon.trackers.active
            t.log = lambda *a: (_ for _ in ()).throw(OSError("disk full"))
            for s in range(4):
                mon.log("train", s, loss=1.0)
    assert sum("mlflow failed while logging (OSError: disk full)" in r.getMessage() for r in caplog.records) == 1
    assert len(list(read_metrics(tmp_path / "b" / "metrics.jsonl", "train"))) == 4


def test_only_rank_zero_logs(tmp_path):
    pytest.importorskip("mlflow")
    cfg = MonitorConfig(tensorboard=False, plots=False, system_every=0, trackers=["mlflow"])
    with RunLogger(tmp_path, cfg, enabled=False) as mon:
        mon.log("train", 1, loss=1.0)
        assert mon.trackers is None
    assert not (tmp_path / "trackers.json").exists() and not (tmp_path / "mlflow.db").exists()
    with pytest.raises(ConfigError, match="monitor.trackers"):
        MonitorConfig(trackers=["neptune"])
