"""HF -> lmforge weight import (`lmforge.model.hf_map`): tiny random models of each family the exporter
writes, saved by transformers, read back into our GPT; logits equal transformers' within 1e-4."""

from __future__ import annotations

import json

import pytest
import torch

from hf_tiny import FAMILIES, make_hf_model
from lmforge.errors import LmforgeError
from lmforge.model import GPT
from lmforge.model.config import ModelConfig
from lmforge.model.hf_map import HFMapError, from_hf, model_config_from_hf, read_hf_weights, to_hf
from lmforge.model.rope import rope_inv_freq

transformers = pytest.importorskip("transformers")


def _import(d):
    hf = json.loads((d / "config.json").read_text())
    arch, kw = model_config_from_hf(hf, str(d))
    cfg = ModelConfig(**kw)
    model = GPT(cfg)
    sd = from_hf(read_hf_weights(d), cfg, arch, hf, str(d))
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected and set(missing) <= ({"lm_head.weight"} if cfg.tie_embeddings else set())
    return arch, cfg, model.eval()


@pytest.mark.parametrize("name", list(FAMILIES))
def test_import_logits_equal_transformers(name, tmp_path):
    theirs = make_hf_model(name, tmp_path / "hf")
    arch, cfg, ours = _import(tmp_path / "hf")
    idx = torch.randint(0, cfg.vocab_size, (2, 48), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = ours(idx), theirs(idx).logits
    assert a.abs().max() > 1.0  # not all ~0: the comparison means something
    assert torch.allclose(a, b, atol=1e-4, rtol=0), (name, (a - b).abs().max())
    expect = {"llama": "Llama", "qwen2": "Qwen2", "qwen3": "Qwen3", "gpt2": "GPT2"}[arch]
    assert FAMILIES[name][1] == expect
    assert cfg.tie_embeddings == theirs.config.tie_word_embeddings
    if name.startswith("llama3") or "linear_rope" in name:
        assert cfg.rope_scaling and cfg.rope_scaling["rope_type"] in ("llama3", "linear")


@pytest.mark.parametrize("kind", ["linear", "llama3"])
def test_rope_scaling_matches_transformers(kind):
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    params = {"rope_type": kind, "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
              "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    c = LlamaConfig(hidden_size=256, num_attention_heads=4, rope_parameters=params)
    theirs, _ = ROPE_INIT_FUNCTIONS[kind](c, "cpu")
    ours = rope_inv_freq(64, 500000.0, params)
    assert torch.allclose(ours, theirs, rtol=1e-6, atol=0)
    assert not torch.allclose(ours, rope_inv_freq(64, 500000.0))  # the scaling does something


def test_table_round_trip_is_identity(tmp_path):
    """to_hf then from_hf gives back the same tensors (the export and the import share one table)."""
    for kw in (dict(n_kv_head=2, tie_embeddings=False, bias=True), dict(qk_norm=True),
               dict(norm="layernorm", mlp="gelu", pos_emb="learned", bias=True)):
        cfg = ModelConfig(n_layer=2, n_head=4, n_embd=32, vocab_size=50, block_size=16, **kw)
        arch = "gpt2" if cfg.pos_emb == "learned" else "qwen3" if cfg.qk_norm else "llama"
        sd = {k: torch.randn(v.shape) for k, v in GPT(cfg).state_dict().items()}
        hf = {"attention_bias": cfg.bias, "mlp_bias": cfg.bias}
        back = from_hf(to_hf(sd, cfg, arch), cfg, arch, hf, "x")
        for k, v in back.items():
            assert torch.equal(v, sd[k]), k


def test_unsupported_architecture_names_the_supported_ones():
    with pytest.raises(HFMapError, match="MistralForCausalLM is not supported.*LlamaForCausalLM.*GPT2LMHeadModel"):
        model_config_from_hf({"architectures": ["MistralForCausalLM"], "model_type": "mistral"}, "cfg.json")


@pytest.mark.parametrize("hf, needle", [
    ({"hidden_act": "gelu"}, "hidden_act"),
    ({"use_sliding_window": True}, "sliding-window"),
    ({"head_dim": 16}, "head_dim 16"),
    ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0}}, "'yarn' is not supported"),
])
def test_variants_that_do_not_map_are_refused(hf, needle):
    base = {"architectures": ["Qwen2ForCausalLM"], "hidden_size": 32, "num_attention_heads": 4,
            "num_hidden_layers": 1, "intermediate_size": 48, "vocab_size": 10}
    with pytest.raises(HFMapError, match=needle) as e:
        model_config_from_hf({**base, **hf}, "cfg.json")
    assert isinstance(e.value, LmforgeError) and "cfg.json" in str(e.value)


def test_missing_mismatched_and_extra_tensors_are_named(tmp_path):
    make_hf_model("qwen2_bias_gqa", tmp_path / "hf")
    hf = json.loads((tmp_path / "hf" / "config.json").read_text())
    arch, kw = model_config_from_hf(hf, "x")
    cfg = ModelConfig(**kw)
    sd = read_hf_weights(tmp_path / "hf")
    broken = dict(sd)
    broken.pop("model.layers.1.self_attn.k_proj.weight")
    broken["model.layers.0.mlp.up_proj.weight"] = torch.zeros(3, 3)
    broken["model.layers.0.extra.weight"] = torch.zeros(1)
    with pytest.raises(HFMapError) as e:
        from_hf(broken, cfg, arch, hf, "SRC")
    msg = str(e.value)
    assert "SRC" in msg and "missing: model.layers.1.self_attn.k_proj.weight" in msg
    assert "wrong shape: model.layers.0.mlp.up_proj.weight (3, 3)" in msg and "unexpected: model.layers.0.extra" in msg
    missing_bias = dict(sd)
    missing_bias.pop("model.layers.0.self_attn.q_proj.bias")  # Qwen2 always has q/k/v biases
    with pytest.raises(HFMapError, match="q_proj.bias"):
        from_hf(missing_bias, cfg, arch, hf, "SRC")


def test_pickle_refused_unless_allowed(tmp_path):
    theirs = make_hf_model("gpt2_tied", tmp_path / "hf")
    (tmp_path / "hf" / "model.safetensors").unlink()
    torch.save(theirs.state_dict(), tmp_path / "hf" / "pytorch_model.bin")
    with pytest.raises(HFMapError, match="pytorch_model.bin is a PyTorch pickle.*init_from_allow_pickle"):
        read_hf_weights(tmp_path / "hf")
    sd = read_hf_weights(tmp_path / "hf", allow_pickle=True)
    assert torch.equal(sd["transformer.wte.weight"], theirs.state_dict()["transformer.wte.weight"])
    (tmp_path / "hf" / "pytorch_model.bin").unlink()
    with pytest.raises(HFMapError, match="no weights found"):
        read_hf_weights(tmp_path / "hf")
