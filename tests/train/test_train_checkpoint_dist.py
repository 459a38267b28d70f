"""Weights-only checkpoints and frozen parameters under torchrun (2 processes, gloo, FSDP2): rank 0
writes one consolidated file per checkpoint; the frozen tensors go to the shared file once."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lmforge import checkpoint as ck
from lmforge.train.build import train
from lmforge.train.callbacks.base import Callback

CHILD = textwrap.dedent('''
    import json, sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[3])
    from conftest import tiny_config
    from lmforge.train.callbacks import Callback
    from lmforge.train.distributed import destroy
    from lmforge.train.build import train

    class Freeze(Callback):
        def pre_train(self, trainer):
            trainer.raw_model.blocks[0].attn.c_attn.weight.requires_grad_(False)

    train(tiny_config(**json.loads(sys.argv[2])), Path(sys.argv[1]), resume="auto", extra_callbacks=[Freeze()])
    destroy()
''')


class Freeze(Callback):
    def pre_train(self, trainer) -> None:
        trainer.raw_model.blocks[0].attn.c_attn.weight.requires_grad_(False)


@pytest.mark.slow  # one torchrun launch (~20 s on 2 cores)
def test_fsdp_light_and_frozen_checkpoints_match_one_process(run_dir, tiny_cfg, tmp_path):
    common = dict(max_steps=4, ckpt_every=2, eval_every=0, grad_accum=2, light_ckpt_every=1, distributed="fsdp")
    single = tmp_path / "single"
    for sub in ("tokenizer", "tokens"):
        shutil.copytree(run_dir / sub, single / sub)
    train(tiny_cfg(batch_size=4, **common), single, extra_callbacks=[Freeze()])
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script), str(run_dir), json.dumps(dict(batch_size=2, **common)),
                           str(Path(__file__).parent)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    root = run_dir / "checkpoints"
    assert [p.name for _, p in ck.list_checkpoints(root, "any")] == ["step-000004", "weights-000003", "step-000002",
                                                                     "weights-000001"]
    [shared] = root.glob("frozen-*.safetensors")
    [ref_shared] = (single / "checkpoints").glob("frozen-*.safetensors")
    assert shared.name == ref_shared.name  # the frozen tensor is bitwise the initial one in both runs
    for name in ("weights-000003", "step-000004"):
        man = ck.verify_checkpoint(root / name)
        assert man["frozen"]["file"] == shared.name and man["frozen"]["tensors"] == ["blocks.0.attn.c_attn.weight"]
        assert "blocks.0.attn.c_attn.weight" not in load_file(root / name / "model.safetensors")
        model, _, info = ck.load_for_inference(run_dir, str(root / name))
        ref, _, _ = ck.load_for_inference(single, str(single / "checkpoints" / name))
        assert info["kind"] == ("weights" if name.startswith("weights") else "full")
        for (n, a), (_, b) in zip(model.state_dict().items(), ref.state_dict().items()):
            assert (a - b).abs().max().item() < 1e-4, n
        assert torch.equal(model.blocks[0].attn.c_attn.weight, load_file(shared)["blocks.0.attn.c_attn.weight"])
