"""Issue 12, `lmforge run` and the stages that write: the run lock, changed inputs on a trained run
detected before anything is rebuilt, and SIGTERM saving without the full evaluation."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from lmforge import checkpoint as ck
from lmforge.cli import main
from lmforge.io import read_marker


def _corpus(d: Path) -> Path:
    from pydoc_data.topics import topics

    d.mkdir(parents=True)
    paras = [p.strip() for k in sorted(topics) for p in topics[k].split("\n\n") if 40 < len(p.strip()) <= 300]
    (d / "a.txt").write_text("\n\n".join(paras[:150]), encoding="utf-8")
    return d


def _config(tmp: Path, **train) -> Path:
    t = {"batch_size": 4, "max_steps": 4, "warmup_steps": 1, "eval_every": 0, "eval_batches": 1, "ckpt_every": 2,
         "log_every": 1, "progress": False, "precision": "fp32", "device": "cpu", **train}
    cfg = {"name": "rel", "data": {"inputs": [str(_corpus(tmp / "in"))], "min_chars": 20, "plots": False},
           "tokenizer": {"kind": "char"}, "model": {"preset": "tiny", "block_size": 32}, "train": t,
           "eval": {"max_batches": 1, "report_samples": 0, "num_samples": 1, "max_new_tokens": 4, "stratify": False},
           "monitor": {"tensorboard": False, "plots": False, "system_every": 0}}
    path = tmp / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("runrel")
    cfg = _config(tmp)
    run = tmp / "run"
    assert main(["run", str(cfg), "--run-dir", str(run)]) == 0
    return cfg, run


def _hold_lock(run: Path) -> subprocess.Popen:
    code = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
            "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, b'%d' % os.getpid()); print('locked', flush=True); "
            "time.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", code, str(run / "train.lock")], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "locked"
    return p


@pytest.mark.parametrize("stage", ["tokenize", "tokenizer", "data", "run"])
def test_stages_that_write_take_the_run_lock(trained, capsys, stage):
    """Defect 5: `lmforge tokenize` rewrote tokens/ while training held the run."""
    cfg, run = trained
    marker = read_marker(run / "tokens")
    holder = _hold_lock(run)
    try:
        assert main([stage, str(cfg), "--run-dir", str(run)]) == 2
        err = capsys.readouterr().err
        assert "in use by another lmforge process" in err and f"pid {holder.pid}" in err
    finally:
        holder.kill()
        holder.wait()
    assert read_marker(run / "tokens") == marker


def test_changed_inputs_on_a_trained_run_are_refused_before_rebuilding(trained, tmp_path, capsys):
    """Defect 4b: changed data.inputs rebuilt data, tokenizer and tokens, then train refused."""
    cfg, run = trained
    markers = {d: read_marker(run / d) for d in ("data", "tokenizer", "tokens")}
    mtimes = {p: p.stat().st_mtime_ns for p in (run / "tokens").iterdir()}
    extra = _corpus(tmp_path / "more")
    code = main(["run", str(cfg), "--run-dir", str(run), f"data.inputs=[{extra}]"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "data" in err and "--run-dir" in err and "new run" in err
    assert {d: read_marker(run / d) for d in markers} == markers
    assert {p: p.stat().st_mtime_ns for p in (run / "tokens").iterdir()} == mtimes
    assert ck.find_resume(run / "checkpoints", "auto") is not None


def test_sigterm_during_run_saves_and_skips_the_full_eval(tmp_path):
    """SIGTERM during `lmforge run`: the checkpoint is written and the run exits without the
    evaluation (which would take as long as it likes); the next `lmforge run` continues."""
    cfg = _config(tmp_path, max_steps=100000, ckpt_every=0)
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "lmforge.cli", "run", str(cfg), "--run-dir", str(run)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline:
        m = run / "metrics.jsonl"
        if m.is_file() and m.read_text().count('"kind": "train"') >= 3:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "eval: running" not in err and "interrupted" in err
    assert not (run / "eval" / "report.json").exists()
    latest = ck.read_pointer(run / "checkpoints", "latest")
    assert latest is not None and ck.verify_checkpoint(latest)["step"] >= 3
    assert "Traceback" not in err
