"""Frozen parameters (requires_grad=False) are stored once, in a shared content-addressed file that
each manifest names with its sha256; loading reassembles them; retention and checksums cover it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lmforge import checkpoint as ck
from lmforge.monitor.metrics import read_metrics
from lmforge.train.build import train
from lmforge.train.callbacks.base import Callback
from lmforge.train.ckpt_writer import CheckpointWriter, cpu_snapshot

FROZEN = ("wte.weight", "blocks.0.attn.c_attn.weight")  # wte is tied: lm_head.weight is frozen with it
ALL_FROZEN = sorted(["wte.weight", "lm_head.weight", "blocks.0.attn.c_attn.weight"])


class Freeze(Callback):
    def pre_train(self, trainer) -> None:
        for name, p in trainer.raw_model.named_parameters():
            if name in FROZEN:
                p.requires_grad_(False)


def _frozen_files(root: Path) -> list[Path]:
    return sorted(root.glob("frozen-*.safetensors"))


def _count_frozen_writes(monkeypatch) -> list[str]:
    written: list[str] = []
    real = ck.atomic_write_bytes

    def spy(path, data):
        written.append(Path(path).name)
        return real(path, data)

    monkeypatch.setattr(ck, "atomic_write_bytes", spy)
    return written


@pytest.mark.parametrize("asynchronous", [False, True])
def test_frozen_tensors_are_written_once(run_dir, tiny_cfg, monkeypatch, asynchronous):
    written = _count_frozen_writes(monkeypatch)
    train(tiny_cfg(max_steps=6, ckpt_every=2, eval_every=2, keep_last=2, light_ckpt_every=1,
                   async_checkpoint=asynchronous), run_dir, extra_callbacks=[Freeze()])
    root = run_dir / "checkpoints"
    [shared] = _frozen_files(root)
    assert written == [shared.name]  # one write for 6 checkpoints (3 full, 3 light)
    on_disk = load_file(shared)
    assert sorted(on_disk) == ["blocks.0.attn.c_attn.weight", "lm_head.weight"]  # tied twin stored once
    ckpts = [p for _, p in ck.list_checkpoints(root, "any")]
    assert [p.name for p in ckpts] == ["step-000006", "weights-000005", "step-000004",
                                    "weights-000003"]
    for path in ckpts:
        man = ck.verify_checkpoint(path)
        assert man["frozen"]["file"] == shared.name and man["frozen"]["tensors"] == ALL_FROZEN
        assert man["frozen"]["sha256"] == ck.sha256_file(shared) and man["frozen"]["bytes"] == shared.stat().st_size
        own = load_file(path / "model.safetensors")
        assert not set(own) & set(ALL_FROZEN) and "blocks.1.attn.c_attn.weight" in own
        model, _, _ = ck.load_for_inference(run_dir, str(path))  # reassembled: every tensor in place
        assert torch.equal(model.wte.weight, on_disk["lm_head.weight"]) and model.lm_head.weight is model.wte.weight
        assert torch.equal(model.blocks[0].attn.c_attn.weight, on_disk["blocks.0.attn.c_attn.weight"])
        assert torch.equal(model.blocks[1].attn.c_attn.weight, own["blocks.1.attn.c_attn.weight"])


def test_resume_with_frozen_parameters_is_bitwise_exact(run_dir, tiny_cfg, tmp_path, stop_at):
    cfg = tiny_cfg(max_steps=6, ckpt_every=3, eval_every=3)
    train(cfg, run_dir, extra_callbacks=[Freeze()])
    other = tmp_path / "other"
    other.mkdir()
    for sub in ("tokenizer", "tokens"):
        shutil.copytree(run_dir / sub, other / sub)
    assert train(cfg, other, extra_callbacks=[Freeze(), stop_at(3)])["step"] == 3
    assert train(cfg, other, resume="auto", extra_callbacks=[Freeze()])["step"] == 6

    def losses(d: Path) -> dict[int, float]:
        return {e["step"]: e["loss"] for e in read_metrics(d / "metrics.jsonl", "train")}

    assert losses(other) == losses(run_dir) and len(losses(run_dir)) == 6
    a = ck.read_weights(run_dir / "checkpoints" / "step-000006")
    b = ck.read_weights(other / "checkpoints" / "step-000006")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [p.name for p in _frozen_files(run_dir / "checkpoints")] == [p.name for p in _frozen_files(
        other / "checkpoints")]  # same content, same name


@pytest.mark.parametrize("damage", ["flip", "missing"])
def test_damaged_shared_file_is_detected(run_dir, tiny_cfg, damage):
    train(tiny_cfg(max_steps=4, ckpt_every=2, eval_every=0), run_dir, extra_callbacks=[Freeze()])
    root = run_dir / "checkpoints"
    [shared] = _frozen_files(root)
    if damage == "flip":
        data = bytearray(shared.read_bytes())
        data[-3] ^= 0x10
        shared.write_bytes(bytes(data))
        match = f"shared frozen-parameter file {shared.name} fails its sha256"
    else:
        shared.unlink()
        match = f"shared frozen-parameter file {shared.name} listed in the manifest is missing.*next to"
    for step in (2, 4):
        with pytest.raises(ck.CheckpointError, match=match):
            ck.verify_checkpoint(root / f"step-00000{step}")
    with pytest.raises(ck.CheckpointError, match=match):
        ck.load_for_inference(run_dir, "latest")
    assert ck.find_resume(root, "auto") is None  # never resumes from a checkpoint it cannot verify


def _model():
    from lmforge.config import config_from_dict
    from lmforge.model import GPT

    torch.manual_seed(0)
    m = GPT(config_from_dict({"model": {"preset": "tiny", "block_size": 16, "vocab_size": 40}}).model)
    m.wte.weight.requires_grad_(False)
    return m


@pytest.mark.parametrize("asynchronous", [False, True])
def test_retention_keeps_referenced_frozen_files_only(tmp_path, asynchronous):
    model, root = _model(), tmp_path / "checkpoints"
    w = CheckpointWriter(root, keep_last=2, asynchronous=asynchronous)
    sizes = []
    for step in (1, 2):
        w.save(step, model, {"optimizer": {}}, {"step": step}, is_best=step == 1)
        w.wait()
        sizes.append(w.last_bytes)
    [a] = _frozen_files(root)
    # the second save wrote exactly the frozen file's bytes less (same trainable tensors and state
    # size; the manifests may differ by a digit of their time stamp)
    m1, m2 = ((root / f"step-00000{s}" / "manifest.json").stat().st_size for s in (1, 2))
    assert sizes[0] - sizes[1] == a.stat().st_size + m1 - m2
    with torch.no_grad():
        model.wte.weight.mul_(2.0)  # a new frozen content (version bump): a second file
    for step in (3, 4):
        w.save(step, model, {"optimizer": {}}, {"step": step}, is_best=False)
    w.wait()
    files = _frozen_files(root)
    assert len(files) == 2 and a in files  # step-1 is `best`: kept with its frozen file
    assert [s for s, _ in ck.list_checkpoints(root)] == [4, 3, 1]
    ck.set_pointer(root, "best", root / "step-000004")
    w.save(5, model, {"optimizer": {}}, {"step": 5}, is_best=False)
    w.wait()
    assert [s for s, _ in ck.list_checkpoints(root)] == [5, 4] and _frozen_files(root) == [f for f in files
                                                                                           if f != a]
    b = _frozen_files(root)[0]
    assert torch.equal(load_file(b)["lm_head.weight"], model.wte.weight)
    # an unreadable manifest: its references are unknown, so no frozen file is deleted
    (root / "step-000005" / "manifest.json").write_text("{not json")
    orphan = root / "frozen-0123456789abcdef.safetensors"
    orphan.write_bytes(b"x")
    assert ck.prune_frozen(root) == [] and orphan.exists()
    (root / "step-000005" / "manifest.json").unlink()
    assert ck.prune_frozen(root) == [orphan]


def test_no_frozen_parameters_no_shared_file(tmp_path):
    model, root = _model(), tmp_path / "checkpoints"
    model.wte.weight.requires_grad_(True)
    path = CheckpointWriter(root, keep_last=2).save(1, model, {"optimizer": {}}, {"step": 1}, is_best=False)
    assert "frozen" not in json.loads((path / "manifest.json").read_text()) and not _frozen_files(root)
    m2 = _model()
    ck.load_weights(m2, path)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), m2.state_dict().values()))


def test_snapshot_shares_frozen_tensors_instead_of_copying():
    model = _model()
    snap = cpu_snapshot(model, {"wte.weight", "lm_head.weight"})
    assert snap.wte.weight.data_ptr() == model.wte.weight.data_ptr() and not snap.wte.weight.requires_grad
    assert snap.lm_head.weight is snap.wte.weight
    assert snap.ln_f.weight.data_ptr() != model.ln_f.weight.data_ptr() and snap.ln_f.weight.requires_grad
    assert ck.frozen_param_names(snap) == ["lm_head.weight", "wte.weight"]


def test_a_damaged_frozen_file_is_rewritten_by_the_next_save(tmp_path):
    model, root = _model(), tmp_path / "checkpoints"
    CheckpointWriter(root, keep_last=2).save(1, model, {"optimizer": {}}, {"step": 1}, is_best=False)
    [shared] = _frozen_files(root)
    shared.write_bytes(b"garbage")
    CheckpointWriter(root, keep_last=2).save(2, model, {"optimizer": {}}, {"step": 2}, is_best=False)
    for step in (1, 2):  # a fresh writer (no cache) checks the file and repairs it
        ck.verify_checkpoint(root / f"step-00000{step}")


def test_clean_partial_removes_interrupted_light_and_frozen_writes(tmp_path):
    root = tmp_path / "checkpoints"
    (root / "weights-000004.tmp").mkdir(parents=True)
    (root / "step-000004.old").mkdir()
    (root / ".frozen-0123456789abcdef.safetensors.x1y2.tmp").write_bytes(b"half")
    (root / "weights-000002").mkdir()
    keep = root / "frozen-0123456789abcdef.safetensors"
    keep.write_bytes(b"x")
    removed = sorted(p.name for p in ck.clean_partial(root))
    assert removed == [".frozen-0123456789abcdef.safetensors.x1y2.tmp", "step-000004.old", "weights-000004.tmp"]
    assert sorted(p.name for p in root.iterdir()) == ["frozen-0123456789abcdef.safetensors", "weights-000002"]
