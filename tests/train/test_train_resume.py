"""Exact resume: an interrupted + resumed run logs bitwise the same per-step losses as a straight one."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lmforge import checkpoint as ck
from lmforge.monitor.metrics import read_metrics
from lmforge.train.build import train


def losses(run_dir: Path) -> dict[int, float]:
    """Per-step train loss; a step logged twice (re-run after a crash) keeps its last value."""
    return {e["step"]: e["loss"] for e in read_metrics(run_dir / "metrics.jsonl", "train")}


def val_losses(run_dir: Path) -> dict[int, float]:
    return {e["step"]: e["val_loss"] for e in read_metrics(run_dir / "metrics.jsonl", "val")}



def _copy_data(src: Path, dst: Path) -> Path:
    import shutil

    dst.mkdir()
    for sub in ("tokenizer", "tokens"):
        shutil.copytree(src / sub, dst / sub)
    return dst


def test_resume_matches_uninterrupted_bitwise(run_dir, tiny_cfg, tmp_path, stop_at):
    cfg = tiny_cfg(max_steps=6, ckpt_every=2, eval_every=2, grad_accum=2)
    cfg.model.dropout = 0.1  # dropout draws from the torch RNG: it must be restored too
    straight = train(cfg, run_dir)
    other = _copy_data(run_dir, tmp_path / "other")
    first = train(cfg, other, extra_callbacks=[stop_at(3)])
    assert first["step"] == 3
    second = train(cfg, other, resume="auto")
    assert second["step"] == 6
    assert losses(other) == losses(run_dir)  # exact float equality, every step
    assert val_losses(other) == val_losses(run_dir)
    assert second["val_loss"] == straight["val_loss"]
    a = ck.read_state(run_dir / "checkpoints" / "step-000006")
    b = ck.read_state(other / "checkpoints" / "step-000006")
    assert a["loader"] == b["loader"] and a["tokens_seen"] == b["tokens_seen"] == 6 * 2 * 4 * 32


def test_resume_refuses_other_data(run_dir, tiny_cfg):
    train(tiny_cfg(max_steps=2, ckpt_every=2), run_dir)
    man = run_dir / "tokens" / "manifest.json"
    data = json.loads(man.read_text())
    data["note"] = "re-tokenised"
    man.write_text(json.dumps(data))
    with pytest.raises(ck.CheckpointError, match="trained on other data"):
        train(tiny_cfg(max_steps=4), run_dir, resume="auto")


CHILD = textwrap.dedent('''
    import json, os, signal, sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[5])
    import torch
    torch.set_num_threads(1)
    from conftest import tiny_config
    from lmforge import checkpoint as ck
    from lmforge.train.callbacks import Callback
    from lmforge.train.build import train

    run_dir, mode, at, overrides = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])

    class Signal(Callback):
        def post_step(self, trainer, result):
            if trainer.state.step == at:
                os.kill(os.getpid(), signal.SIGKILL if mode == "kill" else signal.SIGTERM)

    write_json, fsync_dir = ck.atomic_write_json, ck.fsync_dir
    def manifest_hook(path, obj):  # dies just before the manifest of step `at` is written
        if mode == "before_manifest" and obj.get("step") == at:
            os.kill(os.getpid(), signal.SIGKILL)
        return write_json(path, obj)
    def rename_hook(path):  # dies after the manifest, just before step-N.tmp is renamed
        if mode == "before_rename" and str(path).endswith(f"step-{at:06d}.tmp"):
            os.kill(os.getpid(), signal.SIGKILL)
        return fsync_dir(path)
    ck.atomic_write_json, ck.fsync_dir = manifest_hook, rename_hook
    cfg = tiny_config(**overrides)
    cfg.model.dropout = 0.1
    train(cfg, run_dir, resume="auto", extra_callbacks=[Signal()] if mode in ("kill", "term") else [])
''')


def _child(run_dir: Path, mode: str, at: int, overrides: dict) -> subprocess.CompletedProcess:
    script = run_dir.parent / "child.py"
    script.write_text(CHILD)
    return subprocess.run([sys.executable, str(script), str(run_dir), mode, str(at), json.dumps(overrides),
                           str(Path(__file__).parent)], capture_output=True, text=True, timeout=300)


OVR = dict(max_steps=6, ckpt_every=2, eval_every=2)


@pytest.fixture(scope="module")
def reference(_template_run, tmp_path_factory, tiny_cfg) -> tuple[dict, dict]:
    """(train losses, val losses) of the uninterrupted run, computed once for the module."""
    import torch

    ref = _copy_data(_template_run, tmp_path_factory.mktemp("ref") / "run")
    cfg = tiny_cfg(**OVR)
    cfg.model.dropout = 0.1
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # module scope: set up before the autouse one-thread fixture
    try:
        train(cfg, ref)
    finally:
        torch.set_num_threads(n)
    return losses(ref), val_losses(ref)


@pytest.mark.parametrize("mode,at,resumed_from", [("kill", 3, 2), ("before_manifest", 4, 2),
                                                  pytest.param("before_rename", 4, 2, marks=pytest.mark.slow)])
def test_kill9_then_resume_is_exact(run_dir, tiny_cfg, reference, mode, at, resumed_from):
    proc = _child(run_dir, mode, at, OVR)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    root = run_dir / "checkpoints"
    if mode != "kill":
        assert (root / f"step-{at:06d}.tmp").is_dir()  # the partial write is there ...
        assert not (root / f"step-{at:06d}").exists()
    assert ck.find_resume(root, "auto").name == f"step-{resumed_from:06d}"
    assert ck.read_pointer(root, "latest").name == f"step-{resumed_from:06d}"
    cfg = tiny_cfg(**OVR)
    cfg.model.dropout = 0.1
    summary = train(cfg, run_dir, resume="auto")
    assert not (root / f"step-{at:06d}.tmp").exists()  # ... and cleaned on resume
    assert summary["step"] == 6
    assert (losses(run_dir), val_losses(run_dir)) == reference


def test_sigterm_saves_exits_zero_and_resumes_exactly(run_dir, tiny_cfg, reference):
    t0 = time.time()
    proc = _child(run_dir, "term", 3, OVR)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert time.time() - t0 < 60
    root = run_dir / "checkpoints"
    assert ck.read_pointer(root, "latest").name == "step-000003"
    ck.verify_checkpoint(root / "step-000003")
    cfg = tiny_cfg(**OVR)
    cfg.model.dropout = 0.1
    train(cfg, run_dir, resume="auto")
    assert losses(run_dir) == reference[0]
