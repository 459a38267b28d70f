"""torchrun on CPU (gloo): 2-process DDP and FSDP2 match 1 process with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lmforge import checkpoint as ck
from lmforge.monitor.metrics import read_metrics
from lmforge.train.build import train

CHILD = textwrap.dedent('''
    import json, os, sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[3])
    from conftest import tiny_config
    from lmforge.errors import LmforgeError
    from lmforge.train.callbacks import Callback
    from lmforge.train.build import train
    from lmforge.train.distributed import destroy

    class Poison(Callback):  # NaN logits at optimiser step `step` on rank `rank` only
        def __init__(self, step, rank):
            self.step, self.rank, self.left = step, rank, 1
        def pre_train(self, trainer):
            def hook(module, inputs, out):
                if module.training and trainer.rank == self.rank and trainer.state.step + 1 == self.step and self.left:
                    self.left -= 1
                    return out * float("nan")
            trainer.raw_model.ln_f.register_forward_hook(hook)

    overrides = json.loads(sys.argv[2])
    poison = overrides.pop("_poison", None)
    extra = [Poison(**poison)] if poison else []
    try:
        train(tiny_config(**overrides), Path(sys.argv[1]), resume="auto", extra_callbacks=extra)
    except LmforgeError as e:
        print(f"rank {os.environ['RANK']}: LmforgeError: {e}", file=sys.stderr)
        destroy()
        sys.exit(3)
    destroy()
''')


def _torchrun(run_dir: Path, overrides: dict, nproc: int = 2) -> subprocess.CompletedProcess:
    script = run_dir.parent / "dist_child.py"
    script.write_text(CHILD)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc_per_node={nproc}", str(script), str(run_dir), json.dumps(overrides),
                           str(Path(__file__).parent)], capture_output=True, text=True, timeout=300, env=env)


def _losses(run_dir: Path, kind: str = "train", key: str = "loss") -> dict[int, float]:
    return {e["step"]: e[key] for e in read_metrics(run_dir / "metrics.jsonl", kind)}


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    for sub in ("tokenizer", "tokens"):
        shutil.copytree(src / sub, dst / sub)
    return dst


@pytest.mark.parametrize("mode", ["ddp", pytest.param("fsdp", marks=pytest.mark.slow)])
def test_two_processes_match_one_process_with_the_same_global_batch(run_dir, tiny_cfg, tmp_path, mode):
    common = dict(max_steps=4, ckpt_every=2, eval_every=2, grad_accum=2, distributed=mode)
    single = _copy(run_dir, tmp_path / "single")
    train(tiny_cfg(batch_size=4, **common), single)
    proc = _torchrun(run_dir, dict(batch_size=2, **common))
    assert proc.returncode == 0, "\n".join(x for x in proc.stderr.splitlines() if "rank0" in x)[-3000:]
    one, two = _losses(single), _losses(run_dir)
    assert sorted(one) == sorted(two) == [1, 2, 3, 4]
    for step in one:
        assert two[step] == pytest.approx(one[step], abs=1e-5), step
    v1, v2 = _losses(single, "val", "val_loss"), _losses(run_dir, "val", "val_loss")
    assert v2[4] == pytest.approx(v1[4], abs=1e-5)
    # rank 0 wrote one consolidated checkpoint that loads in a single process
    model, _, info = ck.load_for_inference(run_dir, "latest")
    ref, _, _ = ck.load_for_inference(single, "latest")
    assert info["step"] == 4
    for (n, a), (_, b) in zip(model.state_dict().items(), ref.state_dict().items()):
        assert (a - b).abs().max().item() < 1e-4, n
    state = ck.read_state(run_dir / "checkpoints" / "step-000004")
    assert state["world_size"] == 2 and len(state["rng"]) == 2


@pytest.mark.parametrize("policy", ["skip", pytest.param("abort", marks=pytest.mark.slow),
                                    pytest.param("rollback", marks=pytest.mark.slow)])
def test_nan_on_one_rank_gets_the_same_decision_on_every_rank(run_dir, policy):
    """Only rank 1's logits are NaN at step 3; the all-reduced loss makes both ranks act alike."""
    proc = _torchrun(run_dir, dict(max_steps=4, batch_size=2, ckpt_every=2, eval_every=2, nan_policy=policy,
                                   _poison={"step": 3, "rank": 1}))
    actions = [e for e in read_metrics(run_dir / "metrics.jsonl", "anomaly") if "action" in e]
    assert [(e["step"], e["action"]) for e in actions] == [(3, policy)]
    if policy == "abort":
        assert proc.returncode != 0
        assert proc.stderr.count("LmforgeError: training aborted at step 3") == 2  # both ranks, no hang
        return
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = ck.read_state(run_dir / "checkpoints" / "step-000004")
    assert state["bad_steps"] == 1 and state["step"] == 4
    assert state["loader"]["step"] == (5 if policy == "rollback" else 4)


@pytest.mark.slow  # three torchrun launches
def test_distributed_resume_continues_exactly(run_dir, tiny_cfg, tmp_path):
    # constant lr: stopping at max_steps=2 and extending to 4 keeps the schedule of a straight run
    common = dict(batch_size=2, ckpt_every=2, eval_every=2, schedule="constant", warmup_steps=0)
    straight = _copy(run_dir, tmp_path / "straight")
    assert _torchrun(straight, dict(max_steps=4, **common)).returncode == 0
    assert _torchrun(run_dir, dict(max_steps=2, **common)).returncode == 0
    proc = _torchrun(run_dir, dict(max_steps=4, **common))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _losses(run_dir) == _losses(straight)


@pytest.mark.slow  # two torchrun launches of ~20 s each on 2 shared cores
@pytest.mark.parametrize("mode", ["fsdp", "ddp"])
def test_muon_two_processes_match_one_process(run_dir, tiny_cfg, tmp_path, mode):
    """Muon under DDP (replicated update) and FSDP2 (row shards gathered, orthogonalised, re-sliced)."""
    common = dict(max_steps=3, ckpt_every=3, eval_every=3, optimizer="muon", muon_lr=0.05, distributed=mode)
    single = _copy(run_dir, tmp_path / "single")
    train(tiny_cfg(batch_size=4, **common), single)
    proc = _torchrun(run_dir, dict(batch_size=2, **common))
    assert proc.returncode == 0, "\n".join(x for x in proc.stderr.splitlines() if "rank0" in x)[-3000:]
    one, two = _losses(single), _losses(run_dir)
    assert sorted(one) == sorted(two) == [1, 2, 3]
    for step in one:
        assert two[step] == pytest.approx(one[step], abs=1e-5), step
    model, _, _ = ck.load_for_inference(run_dir, "latest")
    ref, _, _ = ck.load_for_inference(single, "latest")
    for (n, a), (_, b) in zip(model.state_dict().items(), ref.state_dict().items()):
        assert (a - b).abs().max().item() < 1e-4, n
    # the consolidated optimiser state holds Muon's momentum for the hidden matrices
    import torch

    blob = torch.load(run_dir / "checkpoints" / "step-000003" / "optimizer.pt", weights_only=True)
    states = blob["optimizer"]["state"].values()
    assert any("momentum_buffer" in s for s in states) and any("exp_avg" in s for s in states)
