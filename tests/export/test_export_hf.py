"""HF export: transformers loads the folder; logits, perplexity and greedy generation match ours."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from lmforge.config import ModelConfig
from lmforge.errors import LmforgeError
from lmforge.eval.scoring import evaluate_texts
from lmforge.export.hf import ExportError, export_model, target_architecture
from lmforge.infer.generate import generate_tokens
from lmforge.model import GPT

transformers = pytest.importorskip("transformers")

TEXTS = ["The king is dead.", "Long live the king! The queen walks in the garden.", "Now is the winter."]


def _model(vocab: int, **kw) -> GPT:
    torch.manual_seed(0)
    cfg = dict(n_layer=2, n_head=4, n_embd=32, block_size=32, vocab_size=vocab)
    cfg.update(kw)
    model = GPT(ModelConfig(**cfg))
    with torch.no_grad():  # non-trivial norms and biases, so a wrong mapping cannot hide
        for name, p in model.named_parameters():
            if p.dim() == 1:
                is_norm = "ln" in name or "norm" in name
                p.copy_(1.0 + 0.2 * torch.randn_like(p) if is_norm else 0.1 * torch.randn_like(p))
            else:
                p.mul_(4.0)
    return model.eval()


CASES = {
    "llama_gqa_untied": dict(n_kv_head=2, tie_embeddings=False),
    "llama_bias": dict(bias=True),
    "qwen3_qknorm": dict(qk_norm=True, n_kv_head=1),
    "gpt2_bias": dict(norm="layernorm", mlp="gelu", pos_emb="learned", bias=True),
    "gpt2_nobias_untied": dict(norm="layernorm", mlp="gelu", pos_emb="learned", tie_embeddings=False),
}
ARCH = {"llama_gqa_untied": "LlamaForCausalLM", "llama_bias": "LlamaForCausalLM", "qwen3_qknorm": "Qwen3ForCausalLM",
        "gpt2_bias": "GPT2LMHeadModel", "gpt2_nobias_untied": "GPT2LMHeadModel"}


@pytest.mark.parametrize("case", list(CASES))
def test_logits_match_transformers(case, tokenizer, tmp_path):
    model = _model(tokenizer.vocab_size, **CASES[case])
    summary = export_model(model, tokenizer, tmp_path / "hf")
    assert summary["architecture"] == ARCH[case]
    assert not (tmp_path / "hf.tmp").exists()
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    assert type(hf).__name__ == ARCH[case]
    idx = torch.randint(0, tokenizer.vocab_size, (2, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, theirs = model(idx), hf(idx).logits
    assert ours.abs().max() > 1.0  # logits are not all ~0, the comparison means something
    assert torch.allclose(ours, theirs, atol=1e-4, rtol=0), (ours - theirs).abs().max()


def test_perplexity_and_greedy_generation_match(tokenizer, tmp_path):
    model = _model(tokenizer.vocab_size)
    export_model(model, tokenizer, tmp_path / "hf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    ours, _ = evaluate_texts(model, tokenizer, TEXTS, batch_size=2)
    nll, n = 0.0, 0
    eos = hf_tok.eos_token_id
    assert eos == tokenizer.eos_id
    with torch.no_grad():
        for t in TEXTS:  # HF side: each document alone, <eos> prefix and closing <eos>
            ids = torch.tensor([[eos] + hf_tok(t, add_special_tokens=False)["input_ids"] + [eos]])
            logits = hf(ids).logits[0, :-1]
            nll += F.cross_entropy(logits, ids[0, 1:], reduction="sum").item()
            n += ids.size(1) - 1
    assert ours["tokens"] == n
    assert ours["loss"] == pytest.approx(nll / n, rel=1e-5)
    prompt = tokenizer.encode("The king")
    mine = generate_tokens(model, [prompt], max_new_tokens=12, temperature=0.0)[0]
    out = hf.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False, eos_token_id=None,
                      pad_token_id=tokenizer.pad_id)
    assert out[0, len(prompt):].tolist() == mine


def test_tokenizer_round_trip(tokenizer, tmp_path):
    export_model(_model(tokenizer.vocab_size), tokenizer, tmp_path / "hf")
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    for t in TEXTS:
        assert hf_tok(t, add_special_tokens=False)["input_ids"] == tokenizer.encode(t)
        assert hf_tok.decode(tokenizer.encode(t)) == t
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert (cfg["bos_token_id"], cfg["eos_token_id"], cfg["pad_token_id"]) == (
        tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id)


@pytest.mark.parametrize("kw, needle", [
    (dict(norm="rmsnorm", mlp="gelu"), "mlp=gelu"),
    (dict(norm="layernorm", mlp="gelu", pos_emb="learned", n_kv_head=2), "grouped-query"),
    (dict(qk_norm=True, bias=True), "qk_norm"),
    (dict(norm="layernorm", mlp="swiglu", pos_emb="rope"), "norm=layernorm"),
])
def test_unmappable_configs_refused(kw, needle, tmp_path, tokenizer):
    cfg = ModelConfig(n_layer=1, n_head=4, n_embd=32, vocab_size=tokenizer.vocab_size, **kw)
    with pytest.raises(ExportError, match=needle) as e:
        target_architecture(cfg)
    assert isinstance(e.value, LmforgeError)
    with pytest.raises(ExportError):
        export_model(GPT(cfg), tokenizer, tmp_path / "hf")
    assert not (tmp_path / "hf").exists() and not (tmp_path / "hf.tmp").exists()
