"""`train.init_from` through real runs: a tiny random HF model (each family the exporter writes) and its
tokenizer (`tokenizer.kind: pretrained`, path taken from the source) continue on new text, and the
export equals the source within 1e-5 when the learning rate is 0. Bad sources get a message, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from hf_tiny import make_hf_model, sentences
from lmforge.cli import main
from lmforge.config import config_from_dict
from lmforge.errors import ConfigError, LmforgeError
from lmforge.monitor.metrics import read_metrics

transformers = pytest.importorskip("transformers")


def _corpus(d: Path, seed: int = 3, n: int = 90) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    s = sentences(3 * n, seed)
    (d / "new.jsonl").write_text("".join(json.dumps({"text": " ".join(s[i:i + 3])}) + "\n"
                                         for i in range(0, len(s), 3)), encoding="utf-8")
    return d


def _raw(hf_dir: Path, corpus: Path, **train) -> dict:
    t = dict(init_from=str(hf_dir), batch_size=4, max_steps=3, lr=0.0, min_lr=0.0, warmup_steps=0, eval_every=0,
             eval_batches=2, ckpt_every=0, log_every=1, precision="fp32", device="cpu", progress=False, seed=1)
    t.update(train)
    return {"name": "cont", "data": {"inputs": [str(corpus)]}, "tokenizer": {"kind": "pretrained"},
            "tokens": {"val_fraction": 0.1}, "model": {"block_size": 32}, "train": t,
            "eval": {"num_samples": 1, "max_new_tokens": 4, "prompts": ["River"]},
            "monitor": {"tensorboard": False, "plots": False, "system_every": 0}}


def _run(tmp_path: Path, raw: dict) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(raw))
    run_dir = tmp_path / "run"
    assert main(["run", str(cfg_path), "--run-dir", str(run_dir)]) == 0
    return run_dir


@pytest.mark.parametrize("name", ["llama_tied_gqa", "llama3_rope_scaling", "qwen2_bias_gqa", "qwen3_qknorm_tied",
                                  "gpt2_untied"])
def test_zero_lr_continue_then_export_equals_source(name, tmp_path):
    source = make_hf_model(name, tmp_path / "hf")
    run_dir = _run(tmp_path, _raw(tmp_path / "hf", _corpus(tmp_path / "corpus")))
    # the source is recorded: config.yaml, every checkpoint manifest, metrics
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["init_from"] == str(tmp_path / "hf")
    ckpt = Path((run_dir / "checkpoints" / "latest").read_text().strip())
    ckpt = ckpt if ckpt.is_absolute() else run_dir / "checkpoints" / ckpt
    rec = json.loads((ckpt / "manifest.json").read_text())["init_from"]
    assert rec["kind"] == "hf" and rec["path"] == str((tmp_path / "hf").resolve())
    assert set(rec["weights_sha256"]) == {"model.safetensors"}
    assert [e for e in read_metrics(run_dir / "metrics.jsonl", "event") if e.get("event") == "init_from"]
    # the run's tokenizer is the source's, byte for byte
    assert (run_dir / "tokenizer" / "tokenizer.json").read_bytes() == (tmp_path / "hf" / "tokenizer.json").read_bytes()
    assert main(["export", str(run_dir), "--out", str(tmp_path / "out")]) == 0
    exported = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.float32).eval()
    idx = torch.randint(0, source.config.vocab_size, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = exported(idx).logits, source(idx).logits
    assert b.abs().max() > 1.0
    assert torch.allclose(a, b, atol=1e-5, rtol=0), (a - b).abs().max()
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    src_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert hf_tok.eos_token == src_tok.eos_token
    assert hf_tok("river stone", add_special_tokens=False)["input_ids"] == src_tok(
        "river stone", add_special_tokens=False)["input_ids"]


def test_training_on_new_text_lowers_the_loss(tmp_path):
    make_hf_model("llama_untied_attn_bias_theta", tmp_path / "hf")
    corpus = _corpus(tmp_path / "corpus")
    base = _run(tmp_path / "a", _raw(tmp_path / "hf", corpus, max_steps=1))
    tuned = _run(tmp_path / "b", _raw(tmp_path / "hf", corpus, max_steps=25, lr=3e-3, min_lr=3e-4, warmup_steps=2))
    before = list(read_metrics(base / "metrics.jsonl", "val"))[-1]["loss"]
    after = list(read_metrics(tuned / "metrics.jsonl", "val"))[-1]["loss"]
    assert after < before - 0.5, (before, after)  # random weights: continued training must learn the new text


def test_model_keys_must_agree_with_the_source(tmp_path):
    make_hf_model("gpt2_tied", tmp_path / "hf")
    raw = _raw(tmp_path / "hf", tmp_path)
    cfg = config_from_dict(raw)
    assert (cfg.model.n_layer, cfg.model.pos_emb, cfg.model.block_size) == (2, "learned", 32)
    assert cfg.tokenizer.path == str(tmp_path / "hf")
    with pytest.raises(ConfigError, match=r"model.n_layer=3 \(the source has 2\)"):
        config_from_dict({**raw, "model": {"n_layer": 3, "norm": "layernorm"}})
    with pytest.raises(ConfigError, match="exceeds the 64 learned positions"):
        config_from_dict({**raw, "model": {"block_size": 128}})
    with pytest.raises(ConfigError, match="model.preset"):
        config_from_dict({**raw, "model": {"preset": "tiny"}})


def test_bad_sources_get_a_message_and_exit_2(tmp_path, capsys):
    corpus = _corpus(tmp_path / "corpus")
    bad = tmp_path / "mistral"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"architectures": ["MistralForCausalLM"]}))
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(_raw(bad, corpus)))
    assert main(["run", str(cfg_path), "--run-dir", str(tmp_path / "r0")]) == 2
    assert "MistralForCausalLM is not supported" in capsys.readouterr().err
    # a pickle is refused unless allowed; with the flag the run trains
    src = make_hf_model("gpt2_tied", tmp_path / "hf")
    (tmp_path / "hf" / "model.safetensors").unlink()
    torch.save(src.state_dict(), tmp_path / "hf" / "pytorch_model.bin")
    cfg_path.write_text(yaml.safe_dump(_raw(tmp_path / "hf", corpus)))
    assert main(["run", str(cfg_path), "--run-dir", str(tmp_path / "r1")]) == 2
    assert "init_from_allow_pickle" in capsys.readouterr().err
    cfg_path.write_text(yaml.safe_dump(_raw(tmp_path / "hf", corpus, init_from_allow_pickle=True)))
    assert main(["run", str(cfg_path), "--run-dir", str(tmp_path / "r2")]) == 0


def test_a_tokenizer_that_disagrees_with_the_source_is_refused(tmp_path, capsys):
    make_hf_model("qwen3_qknorm_tied", tmp_path / "hf")
    raw = _raw(tmp_path / "hf", _corpus(tmp_path / "corpus"))
    raw["tokenizer"] = {"kind": "bpe", "vocab_size": 280}  # trained on the new text: other ids
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(raw))
    assert main(["run", str(cfg_path), "--run-dir", str(tmp_path / "run")]) == 2
    assert "disagrees with the source's" in capsys.readouterr().err
    raw["tokenizer"] = {"kind": "byte"}
    cfg_path.write_text(yaml.safe_dump(raw))
    assert main(["run", str(cfg_path), "--run-dir", str(tmp_path / "run2")]) == 2


def test_continue_from_an_lmforge_run(tmp_path):
    """An lmforge run as the source: its best checkpoint's weights and its tokenizer."""
    make_hf_model("gpt2_tied", tmp_path / "hf")
    corpus = _corpus(tmp_path / "corpus")
    first = _run(tmp_path / "a", _raw(tmp_path / "hf", corpus, lr=1e-3, max_steps=2))
    raw = _raw(first, _corpus(tmp_path / "corpus2", seed=9))
    second = _run(tmp_path / "b", raw)
    from lmforge.checkpoint import load_for_inference

    m1, _, _ = load_for_inference(first, "best")
    m2, tok2, _ = load_for_inference(second, "best")
    for (k, v1), v2 in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(v1, v2), k  # lr 0: the second run kept the first run's weights
    assert tok2.fingerprint == json.loads((first / "tokenizer" / "meta.json").read_text())["fingerprint"]
    with pytest.raises(LmforgeError, match="neither a Hugging Face model folder"):
        config_from_dict(_raw(tmp_path, corpus))
