"""torchrun on CPU (gloo): 2-process DDP and FSDP2 match 1 process with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lmforge.monitor.metrics import read_metrics
from lmforge.train import checkpoint as ck
from lmforge.train.trainer import train

CHILD = textwrap.dedent('''
    import json, sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[3])
    from conftest import tiny_config
    from lmforge.train.trainer import train
    from lmforge.train.distributed import destroy
    summary = train(tiny_config(**json.loads(sys.argv[2])), Path(sys.argv[1]), resume="auto")
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
