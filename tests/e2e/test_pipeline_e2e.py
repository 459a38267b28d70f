"""Whole pipeline on a small corpus with the tiny preset (litgpt's test_full.py in spirit):
data → tokenizer → tokens → train 20 steps → resume to 30 → eval → generate, asserting on artifacts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from lmforge.cli import main
from lmforge.config import load_config
from lmforge.data.builtin import builtin_text_path
from lmforge.data.document import iter_clean_documents
from lmforge.io import read_marker
from lmforge.monitor.metrics import read_metrics

SHAKESPEARE = Path(builtin_text_path("builtin:shakespeare"))


def _corpus(tmp_path: Path) -> Path:
    """~60 KB of real text: the start of Tiny Shakespeare (shipped in the package)."""
    text = SHAKESPEARE.read_text(encoding="utf-8")[:60_000]
    path = tmp_path / "corpus" / "text.txt"
    path.parent.mkdir()
    path.write_text(text, encoding="utf-8")
    # A JSONL file with one malformed line: counted and skipped, not fatal.
    (tmp_path / "corpus" / "extra.jsonl").write_text(
        json.dumps({"text": "A JSON document about kings and queens of the realm."}) + "\n{not json\n",
        encoding="utf-8")
    return path.parent


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    corpus = _corpus(tmp)
    cfg_path = tmp / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump({
        "name": "e2e",
        "data": {"inputs": [str(corpus)], "min_chars": 20},
        "tokenizer": {"kind": "bpe", "vocab_size": 300},
        "tokens": {"val_fraction": 0.1},
        "model": {"preset": "tiny", "dropout": 0.1},
        "train": {"batch_size": 8, "max_steps": 20, "warmup_steps": 5, "lr": 3e-3, "min_lr": 3e-4,
                  "eval_every": 10, "eval_batches": 4, "ckpt_every": 10, "log_every": 5, "progress": False},
        "eval": {"max_new_tokens": 16, "num_samples": 2, "prompts": ["KING"]},
    }))
    run_dir = tmp / "run"
    args = [str(cfg_path), "--run-dir", str(run_dir)]
    for stage in ("data", "tokenizer", "tokenize", "train"):
        assert main([stage, *args]) == 0, stage
    first = [e["loss"] for e in read_metrics(run_dir / "metrics.jsonl", "train")]
    # resume from the step-20 checkpoint for 10 more steps
    assert main(["train", *args, "train.max_steps=30", "--resume", "auto"]) == 0
    return cfg_path, run_dir, first


def test_stage_outputs_are_complete(pipeline):
    _, run_dir, _ = pipeline
    for folder in ("data", "tokenizer", "tokens"):
        assert read_marker(run_dir / folder) is not None, folder
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["name"] == "e2e"
    report = json.loads((run_dir / "data" / "report.json").read_text())
    assert report["documents_out"] > 10
    assert report["rejected"]["malformed_json"]["count"] == 1
    assert list(iter_clean_documents(run_dir / "data"))
    assert (run_dir / "tokenizer" / "tokenizer.json").is_file()


def test_shards_validate(pipeline):
    from lmforge.tokenizer import load_tokenizer
    from lmforge.tokens.shards import open_split

    _, run_dir, _ = pipeline
    tok = load_tokenizer(run_dir / "tokenizer")
    train = open_split(run_dir / "tokens", "train", fingerprint=tok.fingerprint)
    val = open_split(run_dir / "tokens", "val", fingerprint=tok.fingerprint)
    assert train.num_tokens > 1000 and val.num_tokens > 0
    assert train.num_docs > val.num_docs > 0


def test_training_losses_finite_and_decreasing_and_resume_step_count(pipeline):
    _, run_dir, first = pipeline
    events = list(read_metrics(run_dir / "metrics.jsonl", "train"))
    losses = [e["loss"] for e in events]
    assert all(isinstance(v, float) and math.isfinite(v) for v in losses)
    assert first[-1] < first[0] - 0.5  # learning: 20 steps of a tiny model take ~1 nat off
    steps = [e["step"] for e in events]
    assert max(steps) == 30 and steps == sorted(steps)
    assert len(set(steps)) == len(steps)  # the resumed run continues, never repeats a step
    val = list(read_metrics(run_dir / "metrics.jsonl", "val"))
    assert val and all(math.isfinite(e["val_loss"]) for e in val)


def test_checkpoints_complete_and_loadable(pipeline):
    from lmforge.checkpoint import load_for_inference

    _, run_dir, _ = pipeline
    ckpts = sorted(p.name for p in (run_dir / "checkpoints").glob("step-*") if p.is_dir())
    assert "step-000030" in ckpts and not any(n.endswith(".tmp") for n in ckpts)
    manifest = json.loads((run_dir / "checkpoints" / "step-000030" / "manifest.json").read_text())
    assert "model.safetensors" in json.dumps(manifest)
    state = json.loads((run_dir / "checkpoints" / "step-000030" / "state.json").read_text())
    assert state["step"] == 30
    model, tok, info = load_for_inference(run_dir, "latest")
    assert model.cfg.vocab_size == tok.vocab_size


def test_eval_and_generate(pipeline, capsys):
    _, run_dir, _ = pipeline
    assert main(["eval", str(run_dir), "--checkpoint", "latest"]) == 0
    report = json.loads((run_dir / "eval" / "report.json").read_text())
    assert math.isfinite(report["val_loss"]) and report["val_bpb"] > 0
    assert report["val_ppl"] == pytest.approx(math.exp(report["val_loss"]), rel=1e-6)
    assert (run_dir / "eval" / "report.md").is_file()
    capsys.readouterr()
    assert main(["generate", str(run_dir), "--prompt", "KING", "--max-new-tokens", "12", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert out.strip().startswith("KING") or "KING" in out


def test_run_skips_complete_stages(pipeline, capsys):
    cfg_path, run_dir, _ = pipeline
    cfg = load_config(cfg_path, ["train.max_steps=30"])
    from lmforge.run import run_data, run_tokenize, run_tokenizer

    assert run_data(cfg, run_dir) is False
    assert run_tokenizer(cfg, run_dir) is False
    assert run_tokenize(cfg, run_dir) is False
    changed = load_config(cfg_path, ["train.max_steps=30", "tokens.val_fraction=0.2"])
    assert run_data(changed, run_dir) is False
    assert run_tokenize(changed, run_dir) is True  # its config changed: rebuilt


def test_bad_inputs_clear_errors(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "a.txt").write_text("   \n\n  ")
    cases = [
        (["data", "configs/quickstart.yaml", f"data.inputs=[{tmp_path}/nope.txt]"], "nope.txt"),
        (["data", "configs/quickstart.yaml", f"data.inputs=[{empty}]"], "empty"),
        (["data", "configs/quickstart.yaml", f"data.inputs=[{SHAKESPEARE}]", "data.min_chars=999999"], "min_chars"),
    ]
    for argv, needle in cases:
        assert main([*argv, "--run-dir", str(tmp_path / "r")]) == 2, argv
        err = capsys.readouterr().err
        assert needle in err and "Traceback" not in err, err
        assert read_marker(tmp_path / "r" / "data") is None  # no half-written stage that looks complete
