"""The CLI as a user runs it: `lmforge run` and `lmforge quickstart` in a subprocess, from a directory
outside the repository, with overrides that keep them short; every artifact the summary prints exists."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ARTIFACTS = ["config.yaml", "data/report.md", "tokenizer/tokenizer.json", "tokens/manifest.json", "checkpoints",
             "metrics.jsonl", "tb", "plots", "eval/report.md"]


def _lmforge(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "LMFORGE_QUIET": "1", "OMP_NUM_THREADS": "2"}
    # the installed console script when there is one, else the same entry point through python -m
    cmd = [sys.executable, "-m", "lmforge.cli", *args]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _printed_artifacts(out: str) -> list[Path]:
    block = out.split("Artifacts:\n", 1)[1]
    return [Path(m.group(1)) for m in re.finditer(r"^  (\S+)\s+\S", block, re.M)]


def _check_run(run_dir: Path, out: str, *, name: str) -> dict:
    printed = [run_dir.parent / p for p in _printed_artifacts(out)]  # printed relative to the working directory
    assert [p.relative_to(run_dir).as_posix() for p in printed] == ARTIFACTS  # all of them, in order
    assert all(p.exists() for p in printed)
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["name"] == name
    assert (run_dir / "checkpoints" / "latest").exists() and (run_dir / "checkpoints" / "best").exists()
    assert list((run_dir / "plots").glob("*.png")) and list((run_dir / "tb").iterdir())
    report = json.loads((run_dir / "eval" / "report.json").read_text())
    m = re.search(r"Validation: loss ([0-9.]+) nats/token, ppl ([0-9.]+), ([0-9.]+) bits/byte", out)
    assert m and float(m.group(1)) == pytest.approx(report["val_loss"], abs=1e-4)
    assert float(m.group(3)) == pytest.approx(report["val_bpb"], abs=1e-4)
    assert "--- sample (prompt" in out
    return report


def test_lmforge_run_shakespeare_from_another_directory(tmp_path):
    """`lmforge run configs/shakespeare-char.yaml` with a short budget, run where no configs/ exists:
    the shipped config and the packaged corpus are found; per-layer statistics land in metrics.jsonl."""
    proc = _lmforge(["run", "configs/shakespeare-char.yaml", "train.max_steps=6", "train.batch_size=4",
                     "model.preset=tiny", "model.block_size=32", "train.eval_every=3", "train.eval_batches=2",
                     "train.warmup_steps=2", "train.log_every=3", "monitor.layer_stats_every=3",
                     "eval.max_new_tokens=8", "eval.report_samples=2", "eval.stratify=false",
                     "--run-dir", "r"], cwd=tmp_path)
    run_dir = tmp_path / "r"
    _check_run(run_dir, proc.stdout, name="shakespeare-char")
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    layers = [e for e in events if e["kind"] == "layers"]
    assert [e["step"] for e in layers] == [3, 6]
    assert {"grad_norm/blocks.0", "grad_norm/blocks.1", "update_ratio/blocks.1"} <= set(layers[0])
    assert max(e["step"] for e in events if e["kind"] == "train") == 6
    tokens = json.loads((run_dir / "tokens" / "manifest.json").read_text())["splits"]
    assert tokens["train"]["tokens"] + tokens["val"]["tokens"] > 1_100_000  # the whole play, from the package


def test_lmforge_quickstart_short(tmp_path):
    proc = _lmforge(["quickstart", "--run-dir", "qs", "train.max_steps=8", "train.max_time=0",
                     "model.preset=tiny", "model.n_layer=2", "model.n_head=2", "model.n_embd=64", "model.block_size=64",
                     "tokenizer.vocab_size=512", "tokenizer.max_train_bytes=300000", "train.batch_size=4",
                     "train.eval_every=4", "train.eval_batches=2", "train.warmup_steps=2", "train.ckpt_every=4",
                     "eval.max_new_tokens=8", "eval.report_samples=2", "eval.max_batches=4"], cwd=tmp_path)
    report = _check_run(tmp_path / "qs", proc.stdout, name="quickstart")
    assert report["unigram"]["bpb"] > 0 and "Unigram baseline" in proc.stdout
