"""Hugging Face <-> lmforge: which HF classes map onto our model, their config.json, and the weight
names, in both directions from ONE table (`weight_table`), so export (`lmforge.export.hf`) and import
(`train.init_from`, `lmforge.train.init_from`) cannot drift apart.

    arch, model_kwargs = model_config_from_hf(json.loads(config_json), where="DIR/config.json")
    hf_sd = to_hf(our_state_dict, cfg, arch)              # export: our names -> HF names
    our_sd = from_hf(hf_sd, cfg, arch, hf_config, where)   # import: checks names and shapes first

| HF class            | our config                                                        |
|---------------------|-------------------------------------------------------------------|
| `LlamaForCausalLM`  | rmsnorm + swiglu + rope (GQA, biases, RoPE theta and scaling)     |
| `Qwen2ForCausalLM`  | the same with q/k/v biases (o_proj and MLP biases become zeros)   |
| `Qwen3ForCausalLM`  | the same + qk_norm                                                |
| `GPT2LMHeadModel`   | layernorm + gelu (tanh) + learned positions, biases               |

Mapping: our RoPE rotates the two halves of each head like HF Llama/Qwen (no permutation); our fused
`c_attn` is q, k, v stacked; the SwiGLU `c_fc` is gate, up stacked; GPT-2 stores Conv1D weights
transposed. Our `model.bias` is one switch for every linear and norm, so a family that has only some
biases (Qwen2: q/k/v) is imported with the others set to exactly zero: logits are unchanged, and
training may then move them (the export writes them as Llama biases).
"""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Any

import torch

from lmforge.errors import LmforgeError

ARCHITECTURES = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2", "Qwen3ForCausalLM": "qwen3",
                 "GPT2LMHeadModel": "gpt2"}
_MODEL_TYPES = {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "gpt2": "gpt2"}
# tensors some checkpoints carry that are buffers, not weights (recomputed by both sides)
_IGNORED = ("*.rotary_emb.inv_freq", "*.attn.bias", "*.attn.masked_bias")


class HFMapError(LmforgeError):
    """A Hugging Face checkpoint does not map onto lmforge's model (or back)."""


# ---------------------------------------------------------------- the table
def weight_table(cfg: Any, arch: str) -> list[tuple[str, tuple[str, ...], str]]:
    """(our name, HF names, op) for every tensor. op: `same`, `t` (transpose, GPT-2 Conv1D), `qkv`
    (ours = cat(q, k, v)) or `halves` (ours = cat(gate, up))."""
    rows: list[tuple[str, tuple[str, ...], str]] = []
    if arch == "gpt2":
        rows += [("wte.weight", ("transformer.wte.weight",), "same"),
                 ("wpe.weight", ("transformer.wpe.weight",), "same")]
        for i in range(cfg.n_layer):
            s, d = f"blocks.{i}.", f"transformer.h.{i}."
            for n in ("ln_1", "ln_2"):
                rows += [(f"{s}{n}.weight", (f"{d}{n}.weight",), "same"), (f"{s}{n}.bias", (f"{d}{n}.bias",), "same")]
            for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
                rows += [(f"{s}{m}.weight", (f"{d}{m}.weight",), "t"), (f"{s}{m}.bias", (f"{d}{m}.bias",), "same")]
        rows += [("ln_f.weight", ("transformer.ln_f.weight",), "same"),
                 ("ln_f.bias", ("transformer.ln_f.bias",), "same")]
    else:
        rows += [("wte.weight", ("model.embed_tokens.weight",), "same"),
                 ("ln_f.weight", ("model.norm.weight",), "same")]
        for i in range(cfg.n_layer):
            s, d = f"blocks.{i}.", f"model.layers.{i}."
            for suf in ("weight", "bias") if cfg.bias else ("weight",):
                a, m = f"{d}self_attn.", f"{d}mlp."
                rows += [(f"{s}attn.c_attn.{suf}", (f"{a}q_proj.{suf}", f"{a}k_proj.{suf}", f"{a}v_proj.{suf}"), "qkv"),
                         (f"{s}attn.c_proj.{suf}", (f"{a}o_proj.{suf}",), "same"),
                         (f"{s}mlp.c_fc.{suf}", (f"{m}gate_proj.{suf}", f"{m}up_proj.{suf}"), "halves"),
                         (f"{s}mlp.c_proj.{suf}", (f"{m}down_proj.{suf}",), "same")]
            rows += [(f"{s}ln_1.weight", (f"{d}input_layernorm.weight",), "same"),
                     (f"{s}ln_2.weight", (f"{d}post_attention_layernorm.weight",), "same")]
            if cfg.qk_norm:
                rows += [(f"{s}attn.q_norm.weight", (f"{d}self_attn.q_norm.weight",), "same"),
                         (f"{s}attn.k_norm.weight", (f"{d}self_attn.k_norm.weight",), "same")]
    if not cfg.tie_embeddings:
        rows.append(("lm_head.weight", ("lm_head.weight",), "same"))
    return rows


def _qkv_sizes(cfg: Any) -> list[int]:
    hd, nkv = cfg.n_embd // cfg.n_head, cfg.n_kv_head or cfg.n_head
    return [cfg.n_head * hd, nkv * hd, nkv * hd]


def to_hf(sd: dict[str, torch.Tensor], cfg: Any, arch: str) -> dict[str, torch.Tensor]:
    """Our state dict under the HF names of `arch`. A bias our model lacks but the layout always has
    (GPT-2) is written as zeros, which is exact."""
    out: dict[str, torch.Tensor] = {}
    for ours, theirs, op in weight_table(cfg, arch):
        t = sd.get(ours)
        if t is None:  # only biases: GPT-2 always has them
            w = sd[ours[: -len("bias")] + "weight"]
            t = torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)
        if op == "t":
            parts = [t.t()]
        elif op == "qkv":
            parts = list(t.split(_qkv_sizes(cfg), dim=0))
        elif op == "halves":
            parts = list(t.chunk(2, dim=0))
        else:
            parts = [t]
        out.update(zip(theirs, parts))
    return out


# ---------------------------------------------------------------- config.json
def _arch_of(hf: dict[str, Any], where: str) -> str:
    for a in hf.get("architectures") or []:
        if a in ARCHITECTURES:
            return ARCHITECTURES[a]
    if not hf.get("architectures") and hf.get("model_type") in _MODEL_TYPES:
        return _MODEL_TYPES[hf["model_type"]]
    got = ", ".join(hf.get("architectures") or []) or hf.get("model_type") or "(none given)"
    raise HFMapError(f"{where}: architecture {got} is not supported; lmforge imports "
                     f"{', '.join(ARCHITECTURES)} (the layouts it also exports)")


def _need(hf: dict[str, Any], key: str, where: str) -> Any:
    if hf.get(key) is None:
        raise HFMapError(f"{where}: key {key!r} is missing; the config.json is not a complete "
                         f"Hugging Face model config")
    return hf[key]


def _gpt2_config(hf: dict[str, Any], where: str) -> dict[str, Any]:
    act = hf.get("activation_function", "gelu_new")
    problems = []
    if act not in ("gelu_new", "gelu_pytorch_tanh"):
        problems.append(f"activation_function {act!r} (lmforge's GELU is the tanh approximation, gelu_new)")
    if hf.get("scale_attn_by_inverse_layer_idx"):
        problems.append("scale_attn_by_inverse_layer_idx=true")
    if hf.get("scale_attn_weights") is False:
        problems.append("scale_attn_weights=false")
    if problems:
        raise HFMapError(f"{where}: this GPT-2 variant does not map onto lmforge's model: " + "; ".join(problems))
    n_embd = _need(hf, "n_embd", where)
    return dict(n_layer=_need(hf, "n_layer", where), n_head=_need(hf, "n_head", where), n_kv_head=None,
                n_embd=n_embd, block_size=hf.get("n_positions") or _need(hf, "n_ctx", where),
                vocab_size=_need(hf, "vocab_size", where), mlp="gelu", mlp_hidden=hf.get("n_inner") or 4 * n_embd,
                norm="layernorm", norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)), pos_emb="learned",
                rope_scaling=None, qk_norm=False, tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
                bias=True, init_std=float(hf.get("initializer_range", 0.02)))


def _rope(hf: dict[str, Any], where: str) -> tuple[float, dict[str, Any] | None]:
    from lmforge.model.rope import scaling_problem

    params = hf.get("rope_parameters") or {}
    theta = float(params.get("rope_theta", hf.get("rope_theta", 10000.0)))
    scaling = dict(hf.get("rope_scaling") or params)
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "default":
        return theta, None
    keep = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
    scaling = {"rope_type": kind, **{k: scaling[k] for k in keep if k in scaling}}
    problem = scaling_problem(scaling)
    if problem:
        raise HFMapError(f"{where}: {problem}")
    return theta, scaling


def _decoder_config(hf: dict[str, Any], arch: str, where: str) -> dict[str, Any]:
    hidden, heads = _need(hf, "hidden_size", where), _need(hf, "num_attention_heads", where)
    head_dim = hf.get("head_dim", 128 if arch == "qwen3" else None) or hidden // heads  # transformers' defaults
    problems = []
    if head_dim * heads != hidden:
        problems.append(f"head_dim {head_dim} x {heads} heads != hidden_size {hidden} (lmforge derives the head size "
                        "as n_embd / n_head)")
    if hf.get("hidden_act", "silu") not in ("silu", "swish"):
        problems.append(f"hidden_act {hf.get('hidden_act')!r} (lmforge's SwiGLU uses silu)")
    if hf.get("use_sliding_window"):
        problems.append("use_sliding_window=true (sliding-window attention)")
    if float((hf.get("rope_parameters") or {}).get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0))) != 1:
        problems.append("partial_rotary_factor != 1")
    if problems:
        raise HFMapError(f"{where}: this {arch} model does not map onto lmforge's model: " + "; ".join(problems))
    theta, scaling = _rope(hf, where)
    kv = hf.get("num_key_value_heads") or heads
    bias = {"llama": bool(hf.get("attention_bias") or hf.get("mlp_bias")), "qwen2": True,
            "qwen3": bool(hf.get("attention_bias"))}[arch]
    return dict(n_layer=_need(hf, "num_hidden_layers", where), n_head=heads, n_kv_head=kv if kv != heads else None,
                n_embd=hidden, block_size=int(hf.get("max_position_embeddings", 2048)),
                vocab_size=_need(hf, "vocab_size", where), mlp="swiglu",
                mlp_hidden=_need(hf, "intermediate_size", where), norm="rmsnorm",
                norm_eps=float(hf.get("rms_norm_eps", 1e-6)), pos_emb="rope", rope_theta=theta, rope_scaling=scaling,
                qk_norm=arch == "qwen3", tie_embeddings=bool(hf.get("tie_word_embeddings", False)), bias=bias,
                init_std=float(hf.get("initializer_range", 0.02)))


def model_config_from_hf(hf: dict[str, Any], where: str) -> tuple[str, dict[str, Any]]:
    """(`llama` | `qwen2` | `qwen3` | `gpt2`, ModelConfig keyword arguments) from a config.json dict."""
    arch = _arch_of(hf, where)
    return arch, (_gpt2_config(hf, where) if arch == "gpt2" else _decoder_config(hf, arch, where))


def _bias_may_be_absent(arch: str, hf: dict[str, Any], name: str) -> bool:
    """A bias the family's config says it does not have (imported as exact zeros)."""
    if arch == "qwen2":
        return ".o_proj." in name or ".mlp." in name
    attn = bool(hf.get("attention_bias"))
    mlp = bool(hf.get("mlp_bias")) if arch == "llama" else False
    return (".self_attn." in name and not attn) or (".mlp." in name and not mlp)


# ---------------------------------------------------------------- import
def _with_prefix(hf_sd: dict[str, torch.Tensor], arch: str) -> dict[str, torch.Tensor]:
    """Checkpoints saved from the base model (`GPT2Model`, `LlamaModel`) lack the `transformer.` /
    `model.` prefix of the *ForCausalLM classes."""
    prefix = "transformer." if arch == "gpt2" else "model."
    if any(k.startswith(prefix) for k in hf_sd):
        return hf_sd
    return {k if k == "lm_head.weight" else prefix + k: v for k, v in hf_sd.items()}


def from_hf(hf_sd: dict[str, torch.Tensor], cfg: Any, arch: str, hf: dict[str, Any],
            where: str) -> dict[str, torch.Tensor]:
    """HF tensors -> our state dict (float32). Every expected tensor must be there with the shape the
    config implies; anything left over is an error too (it would be silently dropped otherwise)."""
    from lmforge.model.gpt import GPT

    hf_sd = _with_prefix(hf_sd, arch)
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in to_hf(GPT(cfg).state_dict(), cfg, arch).items()}
    out: dict[str, torch.Tensor] = {}
    missing, mismatched, used = [], [], set()
    for ours, theirs, op in weight_table(cfg, arch):
        parts = []
        for name in theirs:
            t = hf_sd.get(name)
            if t is None and name.endswith(".bias") and _bias_may_be_absent(arch, hf, name):
                t = torch.zeros(shapes[name])
            if t is None:
                missing.append(name)
                continue
            used.add(name)
            if tuple(t.shape) != shapes[name]:
                mismatched.append(f"{name} {tuple(t.shape)} (config implies {shapes[name]})")
            parts.append(t.to(torch.float32))
        if len(parts) != len(theirs) or mismatched:
            continue
        out[ours] = parts[0].t() if op == "t" else torch.cat(parts, dim=0) if len(parts) > 1 else parts[0]
    ignored = list(_IGNORED) + (["lm_head.weight"] if cfg.tie_embeddings else [])
    unexpected = sorted(k for k in hf_sd if k not in used and not any(fnmatch.fnmatchcase(k, p) for p in ignored))
    problems = []
    for label, names in (("missing", missing), ("with the wrong shape", mismatched), ("unexpected", unexpected)):
        if names:
            more = f" (+{len(names) - 5} more)" if len(names) > 5 else ""
            problems.append(f"{len(names)} tensor(s) {label}: {', '.join(names[:5])}{more}")
    if problems:
        raise HFMapError(f"{where}: the weights do not match its config.json ({arch}): " + "; ".join(problems))
    return {k: v.contiguous() for k, v in out.items()}


def read_hf_weights(model_dir: Path, *, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """All tensors of an HF model folder: `model.safetensors`, a sharded `model.safetensors.index.json`
    or, only with `allow_pickle`, `pytorch_model.bin` (read with `torch.load(weights_only=True)`)."""
    from safetensors.torch import load_file

    d = Path(model_dir)
    files: list[Path] = []
    for single, index in (("model.safetensors", "model.safetensors.index.json"),
                          ("pytorch_model.bin", "pytorch_model.bin.index.json")):
        if (d / single).is_file():
            files = [d / single]
        elif (d / index).is_file():
            try:
                shards = sorted(set(json.loads((d / index).read_text())["weight_map"].values()))
            except (ValueError, KeyError) as e:
                raise HFMapError(f"{d / index} is not a valid weight index ({e})") from None
            files = [d / s for s in shards]
        if files:
            break
    if not files:
        raise HFMapError(f"{d}: no weights found (looked for model.safetensors, model.safetensors.index.json, "
                         "pytorch_model.bin, pytorch_model.bin.index.json)")
    absent = [str(f) for f in files if not f.is_file()]
    if absent:
        raise HFMapError(f"{d}: weight shard(s) named by the index are missing: {', '.join(absent[:3])}")
    if files[0].suffix == ".bin" and not allow_pickle:
        raise HFMapError(f"{files[0]} is a PyTorch pickle; lmforge reads safetensors by default. Convert it "
                         "(transformers: `model.save_pretrained(dir, safe_serialization=True)`) or, if you trust the "
                         "file, set train.init_from_allow_pickle=true (it is then read with torch.load("
                         "weights_only=True), which refuses code)")
    sd: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            part = (load_file(str(f)) if f.suffix == ".safetensors"
                    else torch.load(f, map_location="cpu", weights_only=True))
        except Exception as e:  # a truncated or foreign file: name it
            raise HFMapError(f"{f}: cannot read the weights ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
                             ) from None
        sd.update(part)
    return sd
