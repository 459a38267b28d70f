"""Weights-only ("light") checkpoints between full ones: kinds, retention, resume never uses them,
corruption is detected, eval/generate/export-side loading works."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lmforge import checkpoint as ck
from lmforge.errors import ConfigError
from lmforge.monitor.metrics import read_metrics
from lmforge.train.build import train
from lmforge.train.callbacks.base import Callback


def _copy_data(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for sub in ("tokenizer", "tokens"):
        shutil.copytree(src / sub, dst / sub)
    return dst


def _names(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir())


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path / "model.safetensors")


class _CrashAt(Callback):
    """Raise after the checkpoint callback ran for `step` (a crash between full checkpoints)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def post_step(self, trainer, result) -> None:
        if trainer.state.step == self.step:
            raise RuntimeError("simulated crash")


@pytest.mark.parametrize("asynchronous", [False, True])
def test_kinds_contents_and_retention(run_dir, tiny_cfg, tmp_path, asynchronous):
    cfg = tiny_cfg(max_steps=6, ckpt_every=3, eval_every=3, keep_last=2, light_ckpt_every=1, light_keep_last=2,
                   async_checkpoint=asynchronous)
    train(cfg, run_dir)
    root = run_dir / "checkpoints"
    # full at 3 and 6; light at 1, 2, 4, 5 of which the newest two are kept; no light one at a full step
    assert _names(root) == ["best", "latest", "newest", "step-000003", "step-000006", "weights-000004",
                            "weights-000005"]
    assert ck.read_pointer(root, "latest").name == ck.read_pointer(root, "newest").name == "step-000006"
    for name in ("weights-000004", "weights-000005"):
        man = ck.verify_checkpoint(root / name)
        assert man["kind"] == "weights" and man["step"] == int(name[-6:])
        assert set(man["files"]) == {"model.safetensors", "state.json"}
        state = ck.read_state(root / name)
        assert state["kind"] == "weights" and state["step"] == man["step"] and "rng" not in state
        assert state["tokens_seen"] == man["step"] * 4 * 32 and state["config"]["model"]["n_layer"] == 2
    assert ck.verify_checkpoint(root / "step-000006")["kind"] == ck.read_state(root / "step-000006")["kind"] == "full"
    events = [e for e in read_metrics(run_dir / "metrics.jsonl", "event") if e.get("event") == "checkpoint"]
    assert [(e["step"], e.get("ckpt_kind", "full")) for e in events] == [
        (1, "weights"), (2, "weights"), (3, "full"), (4, "weights"), (5, "weights"), (6, "full")]

    # the light weights are the model of that step, and writing them does not perturb training:
    # a run with a full checkpoint at every step has bitwise the same tensors
    ref = _copy_data(run_dir, tmp_path / "ref")
    train(tiny_cfg(max_steps=6, ckpt_every=1, eval_every=3, keep_last=10), ref)
    for step in (4, 5, 6):
        kind = "full" if step == 6 else "weights"
        a = _tensors(root / ck.step_dir_name(step, kind))
        b = _tensors(ref / "checkpoints" / ck.step_dir_name(step))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(_tensors(root / "weights-000004")["blocks.0.attn.c_attn.weight"],
                           _tensors(root / "weights-000005")["blocks.0.attn.c_attn.weight"])


def test_light_retention_never_deletes_full_ones(run_dir, tiny_cfg):
    train(tiny_cfg(max_steps=8, ckpt_every=2, keep_last=3, eval_every=0, light_ckpt_every=1, light_keep_last=1),
          run_dir)
    root = run_dir / "checkpoints"
    assert [s for s, _ in ck.list_checkpoints(root)] == [8, 6, 4]
    assert [s for s, _ in ck.list_checkpoints(root, "weights")] == [7]
    assert [p.name for _, p in ck.list_checkpoints(root, "any")] == ["step-000008", "weights-000007",
                                                                     "step-000006", "step-000004"]


def _writer_model():
    from lmforge.config import config_from_dict
    from lmforge.model import GPT

    torch.manual_seed(0)
    return GPT(config_from_dict({"model": {"preset": "tiny", "block_size": 16, "vocab_size": 40}}).model)


def test_best_light_checkpoint_survives_pruning_and_stale_ones_go(tmp_path):
    from lmforge.train.ckpt_writer import CheckpointWriter

    model, root = _writer_model(), tmp_path / "checkpoints"
    w = CheckpointWriter(root, keep_last=1)
    root.mkdir()
    (root / "weights-000009").mkdir()  # left by an abandoned trajectory (crash, rollback, earlier run)
    (root / "weights-000009" / "model.safetensors").write_bytes(b"old")
    for step, best in ((1, True), (2, False), (3, False)):
        w.save_weights(step, model, {"step": step}, keep_last=1, is_best=best)
    assert _names(root) == ["best", "newest", "weights-000001", "weights-000003"]
    assert ck.read_pointer(root, "best").name == "weights-000001"
    assert ck.read_pointer(root, "newest").name == "weights-000003" and ck.read_pointer(root, "latest") is None
    w.save(4, model, {"optimizer": {}}, {"step": 4}, is_best=False)  # a full one does not prune light ones
    assert _names(root) == ["best", "latest", "newest", "step-000004", "weights-000001", "weights-000003"]
    assert w.last_bytes == sum(f.stat().st_size for f in (root / "step-000004").iterdir())


def test_resume_auto_ignores_light_and_says_so(run_dir, tiny_cfg, tmp_path, caplog):
    cfg = tiny_cfg(max_steps=7, ckpt_every=3, eval_every=0, light_ckpt_every=1, light_keep_last=2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg, run_dir, extra_callbacks=[_CrashAt(5)])
    root = run_dir / "checkpoints"
    assert ck.read_pointer(root, "latest").name == "step-000003"
    assert ck.read_pointer(root, "newest").name == "weights-000005"
    before = {s: _tensors(p) for s, p in ck.list_checkpoints(root, "weights")}
    assert sorted(before) == [4, 5]
    with caplog.at_level(logging.WARNING, logger="lmforge.checkpoint"):
        assert ck.find_resume(root, "auto") == root / "step-000003"
    assert "resuming from the full checkpoint step-000003" in caplog.text
    assert "weights-000004, weights-000005" in caplog.text
    with pytest.raises(ck.CheckpointError, match="weights-only.*cannot resume"):
        ck.find_resume(root, str(root / "weights-000005"))
    with pytest.raises(ck.CheckpointError, match="weights-only"):
        train(cfg, run_dir, resume=str(root / "weights-000005"))
    summary = train(cfg, run_dir, resume="auto")
    assert summary["step"] == 7
    events = [e for e in read_metrics(run_dir / "metrics.jsonl", "event") if e.get("what") == "resume"]
    assert events[-1]["step"] == 3 and events[-1]["checkpoint"] == str(root / "step-000003")
    # exact resume: the re-trained steps 4, 5 give bitwise the same weights as before the crash;
    # no light checkpoint at the last step (a full one is written there)
    after = {s: _tensors(p) for s, p in ck.list_checkpoints(root, "weights")}
    assert sorted(after) == [4, 5] and [s for s, _ in ck.list_checkpoints(root)] == [7, 6]
    for step in (4, 5):
        assert after[step].keys() == before[step].keys()
        assert all(torch.equal(before[step][k], after[step][k]) for k in after[step])


@pytest.mark.parametrize("damage", ["flip", "truncate_state", "missing_manifest"])
def test_corrupted_light_checkpoint_is_detected(run_dir, tiny_cfg, damage):
    train(tiny_cfg(max_steps=4, ckpt_every=3, eval_every=0, light_ckpt_every=2), run_dir)
    root = run_dir / "checkpoints"
    light = root / "weights-000002"
    ck.verify_checkpoint(light)
    if damage == "flip":
        f = light / "model.safetensors"
        data = bytearray(f.read_bytes())
        data[-10] ^= 0x01
        f.write_bytes(bytes(data))
        match = "model.safetensors fails its sha256"
    elif damage == "truncate_state":
        f = light / "state.json"
        f.write_bytes(f.read_bytes()[:20])
        match = "state.json has 20 bytes"
    else:
        (light / "manifest.json").unlink()
        match = "incomplete"
    with pytest.raises(ck.CheckpointError, match=match):
        ck.verify_checkpoint(light)
    with pytest.raises(ck.CheckpointError, match=match):
        ck.load_for_inference(run_dir, str(light))


def test_eval_side_loads_a_light_checkpoint(run_dir, tiny_cfg):
    from lmforge.config import EvalConfig
    from lmforge.eval.perplexity import evaluate_run

    train(tiny_cfg(max_steps=5, ckpt_every=4, eval_every=0, light_ckpt_every=2, light_keep_last=1), run_dir)
    root = run_dir / "checkpoints"
    # light at 2 only (4 is a full step; 5 is the last one, where the final full checkpoint goes)
    assert ck.read_pointer(root, "newest").name == "step-000005"
    light = root / "weights-000002"
    assert light.is_dir()
    model, tok, info = ck.load_for_inference(run_dir, str(light))
    assert info["kind"] == "weights" and info["step"] == 2 and tok is not None and not model.training
    w = _tensors(light)
    assert all(torch.equal(model.state_dict()[k], w[k]) for k in w)
    report = evaluate_run(run_dir, checkpoint=str(light), cfg=EvalConfig(batch_size=4, max_batches=2,
                                                                        report_samples=0))
    assert report["checkpoint"]["step"] == 2 and report["checkpoint"]["path"] == str(light)
    full_model, _, _ = ck.load_for_inference(run_dir, "latest")
    assert not torch.equal(full_model.wte.weight, model.wte.weight)


def test_export_and_generate_from_a_light_checkpoint(run_dir, tiny_cfg, tmp_path):
    from lmforge.export.hf import export_run
    from lmforge.infer.generate import generate

    train(tiny_cfg(max_steps=3, ckpt_every=0, eval_every=0, light_ckpt_every=2), run_dir)
    light = run_dir / "checkpoints" / "weights-000002"
    model, tok, _ = ck.load_for_inference(run_dir, str(light))
    text = generate(model, tok, ["ROMEO:"], max_new_tokens=5, temperature=0.0, top_k=0, top_p=1.0, seed=0)
    assert len(text) == 1 and isinstance(text[0], str)
    summary = export_run(run_dir, tmp_path / "hf", checkpoint=str(light))
    exported = load_file(tmp_path / "hf" / "model.safetensors")
    assert summary is not None and exported  # the exported tensors are the light checkpoint's weights
    w = _tensors(light)
    assert any(torch.equal(v, w["blocks.1.attn.c_proj.weight"]) for v in exported.values())


def test_newest_pointer_names_a_light_checkpoint(run_dir, tiny_cfg):
    with pytest.raises(RuntimeError):
        train(tiny_cfg(max_steps=6, ckpt_every=2, eval_every=0, light_ckpt_every=1), run_dir,
              extra_callbacks=[_CrashAt(3)])
    model, _, info = ck.load_for_inference(run_dir, "newest")
    assert info["kind"] == "weights" and info["step"] == 3
    assert ck.load_for_inference(run_dir, "latest")[2]["step"] == 2
    assert ck.load_for_inference(run_dir, "best")[2]["step"] == 2  # no eval yet: best falls back to latest


@pytest.mark.parametrize("key,value", [("light_ckpt_every", -1), ("light_keep_last", 0)])
def test_light_config_is_validated(tiny_cfg, key, value):
    with pytest.raises(ConfigError, match=f"train.{key}"):
        tiny_cfg(**{key: value})


def test_async_staging_buffers_are_reused_and_saves_stay_exact(tmp_path):
    from lmforge.train.ckpt_writer import CheckpointWriter

    model, root = _writer_model(), tmp_path / "checkpoints"
    w = CheckpointWriter(root, keep_last=3, asynchronous=True)
    expected, ptrs = {}, []
    for step in (1, 2, 3):
        with torch.no_grad():
            model.ln_f.weight.add_(1.0)  # new weights each save
        expected[step] = {k: v.clone() for k, v in model.state_dict().items()}
        opt = {"optimizer": {"state": {0: {"exp_avg": torch.full((3,), float(step))}}, "param_groups": []}}
        if step == 2:
            w.save_weights(step, model, {"step": step}, keep_last=2, is_best=False)
        else:
            w.save(step, model, opt, {"step": step}, is_best=False)
        ptrs.append({k: b.data_ptr() for k, b in w._staging.buffers.items()})
        with torch.no_grad():
            model.ln_f.weight.zero_()  # changing the live model after save() must not reach the file
    w.wait()
    # the model's buffers were allocated once (tied wte/lm_head copied once) and reused
    model_ptrs = [{k: v for k, v in p.items() if k[0] == "model"} for p in ptrs]
    assert model_ptrs[0] == model_ptrs[1] == model_ptrs[2] and len(model_ptrs[0]) == len(model.state_dict()) - 1
    for step, kind in ((1, "full"), (2, "weights"), (3, "full")):
        path = root / ck.step_dir_name(step, kind)
        ck.verify_checkpoint(path)
        got = ck.read_weights(path)
        assert all(torch.equal(got[k], expected[step][k]) for k in got)
        if kind == "full":
            assert torch.equal(ck.load_optimizer_file(path)["optimizer"]["state"][0]["exp_avg"],
                               torch.full((3,), float(step)))
