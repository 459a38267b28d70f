"""`train.freeze`: glob patterns of parameter names that are not trained (and not optimised)."""

from __future__ import annotations

import pytest
import torch

from lmforge import checkpoint as ck
from lmforge.errors import LmforgeError
from lmforge.train.build import freeze_parameters, train
from lmforge.train.callbacks.base import Callback


class Snapshot(Callback):
    def pre_train(self, trainer) -> None:
        self.before = {n: p.detach().clone() for n, p in trainer.raw_model.named_parameters()}
        self.in_optimizer = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
        self.params = dict(trainer.raw_model.named_parameters())


def test_frozen_parameters_do_not_change_and_are_not_optimised(run_dir, tiny_cfg):
    snap = Snapshot()
    train(tiny_cfg(max_steps=4, ckpt_every=2, freeze=["blocks.0.*"]), run_dir, extra_callbacks=[snap])
    model, _, _ = ck.load_for_inference(run_dir, "latest")
    after = dict(model.named_parameters())
    frozen = [n for n in snap.before if n.startswith("blocks.0.")]
    assert frozen and all(torch.equal(after[n], snap.before[n]) for n in frozen)
    assert not torch.equal(after["blocks.1.attn.c_attn.weight"], snap.before["blocks.1.attn.c_attn.weight"])
    assert all(id(snap.params[n]) not in snap.in_optimizer for n in frozen)
    [shared] = (run_dir / "checkpoints").glob("frozen-*.safetensors")  # stored once, beside the checkpoints
    assert shared.stat().st_size > 0


def test_freeze_patterns_are_checked():
    from lmforge.config import config_from_dict
    from lmforge.model import GPT

    model = GPT(config_from_dict({"model": {"preset": "tiny", "vocab_size": 50}}).model)
    assert freeze_parameters(model, ["wte.weight"]) == ["wte.weight"] and not model.lm_head.weight.requires_grad
    with pytest.raises(LmforgeError, match="train.freeze.*'blocks.9.\\*' matches no parameter"):
        freeze_parameters(model, ["blocks.9.*"])
    with pytest.raises(LmforgeError, match="every parameter would be frozen"):
        freeze_parameters(model, ["*"])
