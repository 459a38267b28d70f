"""Checkpoints: round trip, checksums, partial writes, unsafe pickles, pruning, pointers, lock."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from lmforge import checkpoint as ck
from lmforge.errors import LmforgeError
from lmforge.io import sha256_file
from lmforge.train.build import train
from lmforge.train.lock import RunLock


def test_round_trip_and_load_for_inference(run_dir, tiny_cfg):
    summary = train(tiny_cfg(max_steps=3, ckpt_every=0), run_dir)
    root = run_dir / "checkpoints"
    assert summary["step"] == 3 and summary["checkpoint"] == str(root / "step-000003")
    man = ck.verify_checkpoint(root / "step-000003")
    assert set(man["files"]) == {"model.safetensors", "optimizer.pt", "state.json"}
    model, tok, info = ck.load_for_inference(run_dir, "latest")
    assert info["step"] == 3 and info["val_loss"] == pytest.approx(summary["val_loss"])
    assert tok.vocab_size == model.cfg.vocab_size and not model.training
    # the weights produce the logged validation loss again
    from lmforge.tokens.loader import TokenLoader
    from lmforge.tokens.shards import open_split
    from lmforge.train.loss import lm_loss

    val = TokenLoader.for_eval(open_split(run_dir / "tokens", "val"), seq_len=32, batch_size=4)
    ce = n = 0.0
    with torch.no_grad():
        for i, b in enumerate(val):
            if i == 2:
                break
            s = lm_loss(model(b.input_ids, doc_ids=b.doc_ids), b.targets)
            ce, n = ce + s.ce.item(), n + s.count.item()
    assert ce / n == pytest.approx(summary["val_loss"], rel=1e-5)
    assert ck.resolve(run_dir, "best") == root / "step-000003"


def test_no_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(LmforgeError, match="no best checkpoint"):
        ck.load_for_inference(tmp_path, "best")
    with pytest.raises(LmforgeError, match="does not exist"):
        ck.load_for_inference(tmp_path, str(tmp_path / "nope"))


def _two_checkpoints(run_dir, tiny_cfg) -> Path:
    train(tiny_cfg(max_steps=6, ckpt_every=3, eval_every=3), run_dir)
    return run_dir / "checkpoints"


@pytest.mark.parametrize("damage", ["flip", "truncate", "missing_manifest"])
def test_damaged_checkpoint_is_detected_and_skipped(run_dir, tiny_cfg, damage):
    root = _two_checkpoints(run_dir, tiny_cfg)
    newest = root / "step-000006"
    if damage == "flip":
        f = newest / "model.safetensors"
        data = bytearray(f.read_bytes())
        data[len(data) // 2] ^= 0xFF
        f.write_bytes(bytes(data))
        match = "model.safetensors fails its sha256"
    elif damage == "truncate":
        f = newest / "optimizer.pt"
        f.write_bytes(f.read_bytes()[:100])
        match = "optimizer.pt has 100 bytes"
    else:
        (newest / "manifest.json").unlink()
        match = "incomplete"
    with pytest.raises(ck.CheckpointError, match=match):
        ck.verify_checkpoint(newest)
    with pytest.raises(ck.CheckpointError, match=match):
        ck.load_for_inference(run_dir, str(newest))
    assert ck.find_resume(root, "auto") == root / "step-000003"  # falls back, never loads the bad one
    with pytest.raises(ck.CheckpointError):
        ck.find_resume(root, str(newest))  # an explicit path must verify


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED_BY_PICKLE",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_malicious_pickle_is_refused(run_dir, tiny_cfg, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    root = _two_checkpoints(run_dir, tiny_cfg)
    newest = root / "step-000006"
    with open(newest / "optimizer.pt", "wb") as f:
        pickle.dump({"optimizer": _Evil()}, f)
    man = json.loads((newest / "manifest.json").read_text())  # the attacker fixes the checksums too
    man["files"]["optimizer.pt"] = {"sha256": sha256_file(newest / "optimizer.pt"),
                                    "bytes": (newest / "optimizer.pt").stat().st_size}
    (newest / "manifest.json").write_text(json.dumps(man))
    ck.verify_checkpoint(newest)
    with pytest.raises(ck.CheckpointError, match="refused by the safe loader"):
        ck.load_optimizer_file(newest)
    with pytest.raises(ck.CheckpointError, match="refused"):
        train(tiny_cfg(max_steps=8), run_dir, resume="auto")
    assert not (tmp_path / "PWNED_BY_PICKLE").exists()


def test_partial_write_is_ignored_and_cleaned(run_dir, tiny_cfg):
    root = _two_checkpoints(run_dir, tiny_cfg)
    (root / "step-000009.tmp").mkdir()
    (root / "step-000009.tmp" / "model.safetensors").write_bytes(b"half")
    summary = train(tiny_cfg(max_steps=9, ckpt_every=3), run_dir, resume="auto")
    assert summary["step"] == 9
    assert not (root / "step-000009.tmp").exists()
    ck.verify_checkpoint(root / "step-000009")


def test_prune_keeps_last_k_and_best(run_dir, tiny_cfg):
    root = run_dir / "checkpoints"
    train(tiny_cfg(max_steps=8, ckpt_every=2, eval_every=2, keep_last=2), run_dir)
    steps = sorted(s for s, _ in ck.list_checkpoints(root))
    best = ck.read_pointer(root, "best")
    assert steps[-2:] == [6, 8]
    assert best is not None and best.is_dir()
    assert set(steps) == {6, 8} | {int(best.name.split("-")[1])}
    assert ck.read_pointer(root, "latest") == root / "step-000008"


def test_stop_request_saves_and_resumes(run_dir, tiny_cfg, stop_at):
    s = train(tiny_cfg(max_steps=6, ckpt_every=0), run_dir, extra_callbacks=[stop_at(2)])
    assert s["stopped_by"] == "test" and s["step"] == 2
    assert ck.find_resume(run_dir / "checkpoints", "auto").name == "step-000002"


def test_fresh_start_over_old_checkpoints_is_refused(run_dir, tiny_cfg):
    train(tiny_cfg(max_steps=1), run_dir)
    with pytest.raises(LmforgeError, match="already holds checkpoints.*--resume auto"):
        train(tiny_cfg(max_steps=2), run_dir)
    assert train(tiny_cfg(max_steps=2), run_dir, resume="auto")["step"] == 2


def test_lock_blocks_a_second_run(run_dir, tiny_cfg):
    import subprocess
    import sys

    code = ("import sys; from lmforge.train.lock import RunLock; RunLock(sys.argv[1]).acquire(); print('ok', "
            "flush=True); sys.stdin.read()")
    env = {**os.environ, "PYTHONPATH": str(Path(ck.__file__).parents[1])}  # this tree's lmforge
    holder = subprocess.Popen([sys.executable, "-c", code, str(run_dir)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env)
    assert holder.stdout.readline().strip() == "ok"
    with pytest.raises(LmforgeError, match=f"in use by another lmforge process \\(pid {holder.pid}"):
        train(tiny_cfg(max_steps=1), run_dir)
    holder.communicate("")
    assert train(tiny_cfg(max_steps=1), run_dir)["step"] == 1  # released
    with RunLock(run_dir), RunLock(run_dir):  # re-entrant within one process (`lmforge run` and its stages)
        assert train(tiny_cfg(max_steps=2), run_dir, resume="auto")["step"] == 2


def test_async_checkpoints_equal_sync_ones(run_dir, tiny_cfg, tmp_path):
    import shutil

    from safetensors.torch import load_file

    from lmforge.monitor.metrics import read_metrics

    other = tmp_path / "async"
    shutil.copytree(run_dir / "tokenizer", other / "tokenizer")
    shutil.copytree(run_dir / "tokens", other / "tokens")
    train(tiny_cfg(max_steps=4, ckpt_every=2, eval_every=2), run_dir)
    s = train(tiny_cfg(max_steps=4, ckpt_every=2, eval_every=2, async_checkpoint=True), other)
    for step in (2, 4):
        a, b = (d / "checkpoints" / f"step-{step:06d}" for d in (run_dir, other))
        ck.verify_checkpoint(b)
        wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
        oa, ob = ck.load_optimizer_file(a)["optimizer"], ck.load_optimizer_file(b)["optimizer"]
        assert oa["param_groups"] == ob["param_groups"] and oa["state"].keys() == ob["state"].keys()
        for i in oa["state"]:
            assert all(torch.equal(oa["state"][i][k], ob["state"][i][k]) for k in oa["state"][i])
    assert s["best_checkpoint"] == str(other / "checkpoints" / "step-000004")
    events = [e for e in read_metrics(other / "metrics.jsonl", "event") if e.get("event") == "checkpoint"]
    assert [e["step"] for e in events] == [2, 4] and all(e["asynchronous"] and e["stall_s"] >= 0 for e in events)
