"""Muon (train.optimizer: muon): the update rule, which parameters it takes, the schedule, and
checkpoints that resume exactly."""

from __future__ import annotations

import io
import math
import shutil

import pytest
import torch

from lmforge import checkpoint as ck
from lmforge.config import config_from_dict
from lmforge.errors import ConfigError
from lmforge.model import GPT
from lmforge.monitor.metrics import read_metrics
from lmforge.train.build import train
from lmforge.train.muon import MuonAdamW, newton_schulz
from lmforge.train.optim import build_optimizer, set_lr


def _model(**kw):
    cfg = config_from_dict({"model": {"preset": "tiny", "vocab_size": 61, "n_kv_head": 1, **kw},
                            "train": {"optimizer": "muon", "lr": 1e-3, "muon_lr": 0.02, "muon_weight_decay": 0.1}})
    torch.manual_seed(0)
    return cfg, GPT(cfg.model)


def _keller_ns(G, steps=5):
    """Keller Jordan's zeropower_via_newtonschulz5 (KellerJordan/Muon, muon.py), in fp32."""
    a, b, c = (3.4445, -4.7750, 2.0315)
    X = G.float()
    if G.size(-2) > G.size(-1):
        X = X.mT
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    for _ in range(steps):
        A = X @ X.mT
        B = b * A + c * A @ A
        X = a * X + B @ X
    if G.size(-2) > G.size(-1):
        X = X.mT
    return X


@pytest.mark.parametrize("shape", [(64, 32), (32, 128), (48, 48)])
def test_newton_schulz_matches_the_reference_and_orthogonalises(shape):
    g = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    o = newton_schulz(g)
    torch.testing.assert_close(o, _keller_ns(g), atol=1e-5, rtol=1e-5)
    s = torch.linalg.svdvals(o)
    assert s.min() > 0.5 and s.max() < 1.3  # U S' V^T with S' near 1 (not exactly: 5 quintic steps)


def test_groups_muon_for_hidden_matrices_adamw_for_the_rest():
    cfg, m = _model(tie_embeddings=False)
    opt = build_optimizer(m, cfg.train, torch.device("cpu"))
    kinds = {id(p): g["kind"] for g in opt.param_groups for p in g["params"]}
    names = {n: kinds[id(p)] for n, p in m.named_parameters()}
    assert names["wte.weight"] == names["lm_head.weight"] == names["ln_f.weight"] == "adamw"
    assert names["blocks.0.ln_1.weight"] == "adamw"
    for n in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
        assert names[f"blocks.1.{n}.weight"] == "muon", n
    assert len(kinds) == len(list(m.parameters()))  # every parameter once
    splits = {g["name"]: g["splits"] for g in opt.param_groups if g["kind"] == "muon"}
    assert splits["muon[32, 16, 16]"] == [32, 16, 16]  # q | k | v with one kv head of 16
    assert splits["muon[128, 128]"] == [128, 128]  # SwiGLU gate | up
    assert opt.param_groups[0]["kind"] == "adamw"  # the logged lr stays train.lr
    set_lr(opt, 5e-4)
    assert {g["kind"]: g["lr"] for g in opt.param_groups} == {"adamw": 5e-4, "muon": pytest.approx(0.01)}


def test_one_step_equals_keller_muon_and_torch_adamw():
    cfg, m = _model()
    opt = build_optimizer(m, cfg.train, torch.device("cpu"))
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    ref_adam = torch.optim.AdamW([torch.nn.Parameter(before["wte.weight"].clone())], lr=1e-3, betas=(0.9, 0.95),
                                 eps=1e-8, weight_decay=0.0)
    x = torch.randint(0, 61, (2, 33), generator=torch.Generator().manual_seed(1))
    torch.nn.functional.cross_entropy(m(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten()).backward()
    grads = {n: p.grad.clone() for n, p in m.named_parameters()}
    opt.step()
    # Muon, first step: buf = 0.05 g; nesterov u = lerp(g, buf, 0.95); decoupled decay, then -lr * NS(u) * scale
    w, g = before["blocks.0.attn.c_proj.weight"], grads["blocks.0.attn.c_proj.weight"]
    u = g.lerp(0.05 * g, 0.95)
    want = w * (1 - 0.02 * 0.1) - 0.02 * _keller_ns(u)
    torch.testing.assert_close(m.blocks[0].attn.c_proj.weight.detach(), want, atol=1e-6, rtol=1e-5)
    w, g = before["blocks.0.mlp.c_proj.weight"], grads["blocks.0.mlp.c_proj.weight"]  # (32, 128): wide, scale 1
    u = g.lerp(0.05 * g, 0.95)
    torch.testing.assert_close(m.blocks[0].mlp.c_proj.weight.detach(), w * 0.998 - 0.02 * _keller_ns(u),
                               atol=1e-6, rtol=1e-5)
    w, g = before["blocks.0.mlp.c_fc.weight"], grads["blocks.0.mlp.c_fc.weight"]  # gate | up, each (128, 32)
    u = g.lerp(0.05 * g, 0.95)
    parts = [_keller_ns(p) * math.sqrt(128 / 32) for p in u.split([128, 128])]
    torch.testing.assert_close(m.blocks[0].mlp.c_fc.weight.detach(), w * 0.998 - 0.02 * torch.cat(parts),
                               atol=1e-6, rtol=1e-5)
    ref_adam.param_groups[0]["params"][0].grad = grads["wte.weight"]
    ref_adam.step()
    torch.testing.assert_close(m.wte.weight.detach(), ref_adam.param_groups[0]["params"][0].detach(),
                               atol=1e-7, rtol=1e-6)


def test_state_dict_round_trip_continues_identically():
    cfg, m = _model()
    opt = build_optimizer(m, cfg.train, torch.device("cpu"))
    x = torch.randint(0, 61, (2, 33), generator=torch.Generator().manual_seed(1))

    def step(model, o):
        torch.nn.functional.cross_entropy(model(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten()).backward()
        o.step()
        o.zero_grad()

    step(m, opt)
    _, m2 = _model()
    m2.load_state_dict(m.state_dict())
    opt2 = build_optimizer(m2, cfg.train, torch.device("cpu"))
    buf = io.BytesIO()  # through bytes, as a checkpoint does (an in-memory dict would share tensors)
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    opt2.load_state_dict(torch.load(buf, weights_only=True))
    step(m, opt)
    step(m2, opt2)
    for a, b in zip(m.parameters(), m2.parameters()):
        assert torch.equal(a, b)


def test_muon_refuses_non_matrices():
    with pytest.raises(ValueError, match="2-D"):
        MuonAdamW([{"params": [torch.nn.Parameter(torch.zeros(3))], "kind": "muon"}])


def test_config_checks_the_optimizer_keys():
    with pytest.raises(ConfigError, match="train.optimizer"):
        config_from_dict({"train": {"optimizer": "sgd"}})
    with pytest.raises(ConfigError, match="train.muon_momentum"):
        config_from_dict({"train": {"muon_momentum": 1.0}})


def test_muon_run_learns_and_resumes_exactly(run_dir, tiny_cfg, tmp_path, stop_at):
    cfg = tiny_cfg(max_steps=6, ckpt_every=2, eval_every=2, optimizer="muon", muon_lr=0.05, muon_weight_decay=0.01)
    other = tmp_path / "other"
    other.mkdir()
    for sub in ("tokenizer", "tokens"):
        shutil.copytree(run_dir / sub, other / sub)
    train(cfg, run_dir)
    first = train(cfg, other, extra_callbacks=[stop_at(3)])
    assert first["step"] == 3
    assert train(cfg, other, resume="auto")["step"] == 6

    def losses(d):
        return {e["step"]: e["loss"] for e in read_metrics(d / "metrics.jsonl", "train")}

    straight, resumed = losses(run_dir), losses(other)
    assert straight[6] < straight[1] - 0.2  # it learns
    assert resumed == pytest.approx(straight, abs=1e-5)  # in-process resume (PITFALLS: order may differ)
    blob = torch.load(run_dir / "checkpoints" / "step-000006" / "optimizer.pt", weights_only=True)
    groups = blob["optimizer"]["param_groups"]
    assert {g["kind"] for g in groups} == {"adamw", "muon"}
    assert any("momentum_buffer" in s for s in blob["optimizer"]["state"].values())
    model, _, info = ck.load_for_inference(other, "latest")
    assert info["step"] == 6
