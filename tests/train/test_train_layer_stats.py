"""Per-layer gradient norms, update/weight ratios and histograms, read back from a real training run's
metrics.jsonl, checkpoints and TensorBoard event files (monitor.layer_stats_every, monitor.histogram_every)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from safetensors.torch import load_file

from lmforge.monitor.metrics import read_metrics
from lmforge.train.build import train

BLOCKS = ["blocks.0", "blocks.1"]


def _run(run_dir, tiny_cfg, **monitor):
    cfg = tiny_cfg(max_steps=4, ckpt_every=1, keep_last=10, eval_every=0, grad_clip=0.05)
    cfg = dataclasses.replace(cfg, monitor=dataclasses.replace(cfg.monitor, **monitor))
    train(cfg, run_dir)
    return list(read_metrics(run_dir / "metrics.jsonl"))


def _ratio(after: dict, before: dict, prefix: str = "") -> float:
    names = [n for n in before if n.startswith(prefix)]
    upd = sum(float((after[n].double() - before[n].double()).pow(2).sum()) for n in names)
    ref = sum(float(before[n].double().pow(2).sum()) for n in names)
    return math.sqrt(upd / ref)


def test_layer_stats_in_metrics_match_the_run(run_dir, tiny_cfg):
    events = _run(run_dir, tiny_cfg, layer_stats_every=2)
    layers = [e for e in events if e["kind"] == "layers"]
    assert [e["step"] for e in layers] == [2, 4]
    train_norm = {e["step"]: e["grad_norm"] for e in events if e["kind"] == "train"}
    ckpt = run_dir / "checkpoints"
    for ev in layers:
        groups = sorted(k.split("/", 1)[1] for k in ev if k.startswith("grad_norm/"))
        assert groups == sorted(["wte", *BLOCKS, "ln_f"])
        # the layers' norms make up the step's total norm, taken before clipping (grad_clip is tiny here)
        total = math.sqrt(sum(ev[f"grad_norm/{g}"] ** 2 for g in groups))
        assert total == pytest.approx(train_norm[ev["step"]], rel=1e-4) and total > 0.05
        # the update ratio is what the step did to the weights, as the checkpoints on each side show
        before = load_file(ckpt / f"step-{ev['step'] - 1:06d}" / "model.safetensors")
        after = load_file(ckpt / f"step-{ev['step']:06d}" / "model.safetensors")
        for block in BLOCKS:
            assert ev[f"update_ratio/{block}"] == pytest.approx(_ratio(after, before, block + "."), rel=1e-4)
        assert ev["update_ratio"] == pytest.approx(_ratio(after, before), rel=1e-4)
        assert 0 < ev["update_ratio"] < 1


def test_layer_stats_and_histograms_in_tensorboard(run_dir, tiny_cfg):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = _run(run_dir, tiny_cfg, layer_stats_every=2, histogram_every=4, tensorboard=True)
    acc = EventAccumulator(str(run_dir / "tb"), size_guidance={"histograms": 0, "scalars": 0})
    acc.Reload()
    tags = acc.Tags()
    assert "layers/grad_norm/blocks.1" in tags["scalars"] and "layers/update_ratio/wte" in tags["scalars"]
    logged = [e["grad_norm/blocks.1"] for e in events if e["kind"] == "layers"]
    assert [s.value for s in acc.Scalars("layers/grad_norm/blocks.1")] == pytest.approx(logged)
    hist = "grads/blocks.0.attn.c_attn.weight"
    assert hist in tags["histograms"] and "weights/ln_f.weight" in tags["histograms"]
    assert [h.step for h in acc.Histograms(hist)] == [4]
    assert acc.Histograms(hist)[0].histogram_value.num == torch.Size([96, 32]).numel()


def test_off_means_no_layer_events(run_dir, tiny_cfg):
    events = _run(run_dir, tiny_cfg, layer_stats_every=0)
    assert not [e for e in events if e["kind"] == "layers"]
