"""Named held-out sets in a real `lmforge run`: a continuous text with a tail split, a held-out set
scored in the loop (`val/<name>/loss|ppl|bpb`, TensorBoard), `eval.select_by` driving the best
checkpoint and early stopping, and `lmforge eval` reporting a table per set."""

from __future__ import annotations

import json
import math

import pytest
import yaml

from lmforge.cli import main
from lmforge.monitor.metrics import read_metrics


def _text() -> str:
    """40 KB of continuous prose with blank lines: Python's own language reference (pydoc topics)."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics))[:40_000]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sets")
    text = _text()
    (tmp / "train.txt").write_text(text[:34_000], encoding="utf-8")
    (tmp / "held.txt").write_text(text[34_000:], encoding="utf-8")
    cfg = {
        "name": "sets",
        "data": {"inputs": [str(tmp / "train.txt")], "txt_mode": "continuous", "dedup": False},
        "tokenizer": {"kind": "char"},
        "tokens": {"val_fraction": 0.1, "val_split": "tail"},
        "model": {"preset": "tiny", "block_size": 32},
        "train": {"batch_size": 8, "max_steps": 16, "warmup_steps": 2, "lr": 3e-3, "min_lr": 3e-4,
                  "eval_every": 4, "eval_batches": 3, "ckpt_every": 4, "log_every": 4, "progress": False,
                  "early_stop_patience": 1, "early_stop_min_delta": 10.0, "precision": "fp32", "device": "cpu"},
        "eval": {"sets": {"held": {"inputs": [str(tmp / "held.txt")], "txt_mode": "continuous"}},
                 "select_by": "held", "num_samples": 1, "max_new_tokens": 4, "report_samples": 0,
                 "stratify": False},
        "monitor": {"plots": False, "system_every": 0},
    }
    (tmp / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    run_dir = tmp / "run"
    assert main(["run", str(tmp / "cfg.yaml"), "--run-dir", str(run_dir)]) == 0
    return run_dir, tmp


def test_tail_split_and_set_shards(run):
    run_dir, tmp = run
    man = json.loads((run_dir / "tokens" / "manifest.json").read_text())
    assert man["val_split"] == "tail" and man["splits"]["train"]["docs"] == 1 and man["splits"]["val"]["docs"] == 1
    # one continuous text: 90% train, the last 10% val (characters; a char tokenizer: one token each
    # plus one <eos> per split)
    chars = man["splits"]["train"]["tokens"] - 1 + man["splits"]["val"]["tokens"] - 1
    assert man["splits"]["val"]["tokens"] - 1 == chars - int(chars * 0.9)
    held = json.loads((run_dir / "eval_sets" / "held" / "manifest.json").read_text())
    assert held["splits"]["val"]["docs"] == 1 and held["tokenizer_fingerprint"] == man["tokenizer_fingerprint"]


def test_sets_in_the_loop_drive_best_and_early_stop(run):
    run_dir, _ = run
    vals = list(read_metrics(run_dir / "metrics.jsonl", "val"))
    assert vals, "no val events"
    for ev in vals:
        for name in ("split", "held"):
            loss = ev[f"val/{name}/loss"]
            assert math.isfinite(loss) and ev[f"val/{name}/ppl"] == pytest.approx(math.exp(loss))
            assert ev[f"val/{name}/bpb"] > 0
        assert ev["loss"] == ev["val/held/loss"] and ev["select_by"] == "held"  # the selected set
        assert ev["val/split/loss"] != ev["val/held/loss"]
    # early stopping (min_delta 10: no evaluation counts as an improvement) stopped after the 2nd eval,
    # remembering the first evaluation of the *held* set
    ends = [e for e in read_metrics(run_dir / "metrics.jsonl", "event") if e.get("event") == "early_stop"]
    assert ends and ends[0]["step"] == 8 and ends[0]["best_val_loss"] == vals[0]["val/held/loss"]
    from lmforge.checkpoint import read_pointer

    best = json.loads((read_pointer(run_dir / "checkpoints", "best") / "state.json").read_text())
    held = {e["step"]: e["val/held/loss"] for e in vals}
    assert best["val_loss"] == held[best["step"]] == min(held.values())  # best by the held set


def test_tensorboard_tags_per_set(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, _ = run
    acc = EventAccumulator(str(run_dir / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"val/held/loss", "val/held/bpb", "val/split/loss", "val/loss"} <= tags
    assert not any(t.startswith("val/val/") for t in tags)


def test_eval_report_has_a_table_per_set(run):
    run_dir, _ = run
    report = json.loads((run_dir / "eval" / "report.json").read_text())
    assert set(report["sets"]) == {"split", "held"} and report["select_by"] == "held"
    held = report["sets"]["held"]
    assert held["docs"] == 1 and held["bpb"] > 0 and held["loss"] == pytest.approx(math.log(held["perplexity"]))
    assert report["sets"]["split"]["loss"] == report["val_loss"]
    md = (run_dir / "eval" / "report.md").read_text()
    assert "### held" in md and "### split (the run's own validation split)" in md and "| held |" in md
