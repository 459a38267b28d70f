"""Export a trained run to a Hugging Face `transformers` folder.

    lmforge export RUN_DIR --format hf --out DIR
    # then: AutoModelForCausalLM.from_pretrained(DIR), AutoTokenizer.from_pretrained(DIR)

Which HF architecture our model maps onto (weights are copied, never approximated):

| our config                                           | HF class                       |
|------------------------------------------------------|--------------------------------|
| rmsnorm + swiglu + rope, qk_norm off (bias optional)  | `LlamaForCausalLM`             |
| rmsnorm + swiglu + rope + qk_norm, no bias            | `Qwen3ForCausalLM`             |
| layernorm + gelu + learned positions, no GQA/qk_norm  | `GPT2LMHeadModel`              |

Notes on the mapping: our RoPE rotates the two halves of each head (`rotate_half`), the convention
of HF Llama/Qwen3, so q/k weights need no permutation; our fused `c_attn` is split into q/k/v; the
SwiGLU `c_fc` is split into gate and up; GPT-2 stores Conv1D weights transposed, and a model
without biases gets zero biases there (GPT-2 always has them). Anything else (e.g. rmsnorm with a
GELU MLP, layernorm with rope) has no stock HF class and is refused with the reason.

Tokenizer: our `tokenizer.json` is copied as is and loads as `PreTrainedTokenizerFast` with
<bos>/<eos>/<unk>/<pad> declared; it adds no special tokens on encode (like our tokens stage, which
appends <eos> itself). One difference: lmforge encodes the literal text "<eos>" as ordinary
characters, while transformers treats it as the special token.
Weights are written in float32; `max_position_embeddings` is our `block_size` (RoPE models run
past it in transformers, but were never trained there).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from lmforge.errors import LmforgeError


class ExportError(LmforgeError):
    """The model cannot be expressed in the requested format."""


def target_architecture(cfg) -> str:
    """`llama`, `qwen3` or `gpt2` for a ModelConfig, or ExportError saying what does not map."""
    if cfg.norm == "rmsnorm" and cfg.mlp == "swiglu" and cfg.pos_emb == "rope":
        if not cfg.qk_norm:
            return "llama"
        if not cfg.bias:
            return "qwen3"
        raise ExportError("qk_norm with bias=true does not map: Qwen3 (the HF class with QK-norm) has no MLP "
                          "biases; retrain with model.bias=false")
    if cfg.norm == "layernorm" and cfg.mlp == "gelu" and cfg.pos_emb == "learned":
        problems = []
        if (cfg.n_kv_head or cfg.n_head) != cfg.n_head:
            problems.append("grouped-query attention (model.n_kv_head) is not supported by GPT-2")
        if cfg.qk_norm:
            problems.append("qk_norm is not supported by GPT-2")
        if problems:
            raise ExportError("cannot export to GPT-2: " + "; ".join(problems))
        return "gpt2"
    raise ExportError(
        f"no Hugging Face architecture matches norm={cfg.norm}, mlp={cfg.mlp}, pos_emb={cfg.pos_emb}: "
        "export supports rmsnorm+swiglu+rope (Llama, or Qwen3 with qk_norm) and layernorm+gelu+learned (GPT-2)")


def _special_ids(tokenizer) -> dict[str, Any]:
    return {"bos_token_id": tokenizer.bos_id, "eos_token_id": tokenizer.eos_id, "pad_token_id": tokenizer.pad_id}


def hf_config(cfg, tokenizer) -> dict[str, Any]:
    """config.json contents for the target architecture."""
    from lmforge.model.gpt import mlp_hidden

    arch = target_architecture(cfg)
    hidden = mlp_hidden(cfg)
    common = {"vocab_size": cfg.vocab_size, "tie_word_embeddings": cfg.tie_embeddings, "dtype": "float32",
              "torch_dtype": "float32", **_special_ids(tokenizer)}
    if arch == "gpt2":
        return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_embd": cfg.n_embd,
                "n_layer": cfg.n_layer, "n_head": cfg.n_head, "n_positions": cfg.block_size, "n_ctx": cfg.block_size,
                "n_inner": hidden, "activation_function": "gelu_new", "layer_norm_epsilon": cfg.norm_eps,
                "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0, "scale_attn_weights": True, **common}
    out = {"architectures": ["LlamaForCausalLM" if arch == "llama" else "Qwen3ForCausalLM"], "model_type": arch,
           "hidden_size": cfg.n_embd, "intermediate_size": hidden, "num_hidden_layers": cfg.n_layer,
           "num_attention_heads": cfg.n_head, "num_key_value_heads": cfg.n_kv_head or cfg.n_head,
           "head_dim": cfg.n_embd // cfg.n_head, "hidden_act": "silu", "max_position_embeddings": cfg.block_size,
           "rms_norm_eps": cfg.norm_eps, "rope_theta": cfg.rope_theta,
           "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta, **(cfg.rope_scaling or {})},
           "attention_bias": cfg.bias, "attention_dropout": 0.0, "initializer_range": cfg.init_std, **common}
    if arch == "llama":
        out["mlp_bias"] = cfg.bias
    else:
        out.update(use_sliding_window=False, sliding_window=None, max_window_layers=cfg.n_layer)
    return out


def hf_state_dict(model) -> dict[str, torch.Tensor]:
    """Our weights under HF names (fp32, contiguous, no shared storage); the name table is shared
    with the import (`lmforge.model.hf_map`)."""
    from lmforge.model.hf_map import to_hf

    arch = target_architecture(model.cfg)
    sd = {k: v.detach().to("cpu", torch.float32) for k, v in model.state_dict().items()}
    return {k: v.clone().contiguous() for k, v in to_hf(sd, model.cfg, arch).items()}


def _tokenizer_files(tokenizer, block_size: int) -> dict[str, str]:
    hf = getattr(tokenizer, "hf", None)
    if hf is None:
        raise ExportError("the tokenizer has no Hugging Face `tokenizers` object to export")
    roles = getattr(tokenizer, "role_tokens", None) or {}  # a pretrained tokenizer keeps its own spellings
    specials = {f"{r}_token": roles.get(r, f"<{r}>") for r in ("bos", "eos", "unk", "pad")}
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": block_size,
              "add_bos_token": False, "add_eos_token": False, "clean_up_tokenization_spaces": False, **specials}
    return {"tokenizer.json": hf.to_str(), "tokenizer_config.json": json.dumps(config, indent=2),
            "special_tokens_map.json": json.dumps(specials, indent=2)}


def check_out_dir(out_dir: Path, *, force: bool = False, run_dir: Path | None = None, owned: bool = False) -> None:
    """Refuse an output folder that would destroy something: a file; a non-empty folder without
    `force` (unless `owned`: lmforge's own RUN/export/hf); the run directory, a parent of it or one of
    its stage folders (never, even with `force`); a parent of the working directory."""
    out = Path(out_dir)
    real = out.resolve()
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} is a file: pass a folder (created if missing) to write the export into")
    if run_dir is not None:
        run = Path(run_dir).resolve()
        inside = real.is_relative_to(run) and real != run
        top = real.relative_to(run).parts[0] if inside else None
        if not inside and run.is_relative_to(real) or top is not None and top != "export" and (run / top).exists():
            raise ExportError(f"--out {out} is the run directory {run_dir}, a folder above it or one of its own "
                              f"folders: the export would replace the run; pass a new folder (default "
                              f"{Path(run_dir) / 'export' / 'hf'})")
    if Path.cwd().resolve().is_relative_to(real) or real == Path(real.anchor):
        raise ExportError(f"--out {out} holds the current directory: pass a new folder for the export")
    if out.is_dir() and any(out.iterdir()) and not (force or owned):
        raise ExportError(f"--out {out} is not empty: pass --force to replace its contents with the export, or a "
                          f"new or empty folder")


def _temp_beside(out_dir: Path) -> Path:
    """A new, uniquely named temp folder next to `out_dir` (same file system, so the final rename is
    atomic). Only this folder is ever removed on failure, never a `<out>.tmp` someone else made."""
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    except OSError as e:
        raise ExportError(f"cannot write the export to {out_dir}: {e.strerror} ({e.filename or out_dir.parent})"
                          ) from None


def _swap_in(tmp: Path, out_dir: Path) -> None:
    """Move the finished export to `out_dir`, replacing an existing folder (already checked)."""
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        os.replace(out_dir, old / out_dir.name)
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)


def export_model(model, tokenizer, out_dir: Path, *, extra: dict[str, Any] | None = None, force: bool = False,
                 run_dir: Path | None = None, owned: bool = False) -> dict[str, Any]:
    """Write config.json, generation_config.json, model.safetensors and the tokenizer files into
    `out_dir` (built in a new temp folder beside it, then renamed, so a crash never leaves a half
    folder). See `check_out_dir` for what is refused (`force`, `run_dir`, `owned`)."""
    out_dir = Path(out_dir)
    check_out_dir(out_dir, force=force, run_dir=run_dir, owned=owned)
    config = hf_config(model.cfg, tokenizer)
    weights = hf_state_dict(model)
    tmp = _temp_beside(out_dir)
    try:
        summary = _write_files(model, tokenizer, weights, config, tmp, out_dir, extra)
        _swap_in(tmp, out_dir)
    except OSError as e:
        raise ExportError(f"cannot write the export to {out_dir}: {e.strerror} ({e.filename or tmp}); nothing was "
                          f"left behind") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return summary


def _write_files(model, tokenizer, weights: dict, config: dict, tmp: Path, out_dir: Path,
                 extra: dict[str, Any] | None) -> dict[str, Any]:
    from safetensors.torch import save_file

    save_file(weights, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    gen = {"bos_token_id": tokenizer.bos_id, "eos_token_id": tokenizer.eos_id, "pad_token_id": tokenizer.pad_id}
    (tmp / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    for name, text in _tokenizer_files(tokenizer, model.cfg.block_size).items():
        (tmp / name).write_text(text + "\n" if not text.endswith("\n") else text, encoding="utf-8")
    summary = {"out": str(out_dir), "architecture": config["architectures"][0], "params": model.num_params(),
               "files": sorted(p.name for p in tmp.iterdir()), **(extra or {})}
    (tmp / "lmforge_export.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def export_run(run_dir: Path, out_dir: Path | None = None, *, checkpoint: str = "best",
               fmt: str = "hf", force: bool = False) -> dict[str, Any]:
    """Export RUN_DIR's checkpoint; `out_dir` defaults to RUN_DIR/export/hf (replaced on a re-export).
    A non-empty `out_dir` needs `force`; the run directory itself is never accepted."""
    from lmforge.checkpoint import load_for_inference

    if fmt != "hf":
        raise ExportError(f"unknown export format {fmt!r}; supported: hf")
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise LmforgeError(f"run directory {run_dir} does not exist")
    model, tokenizer, info = load_for_inference(run_dir, checkpoint, "cpu")
    if tokenizer is None:
        raise LmforgeError(f"{run_dir}/tokenizer is missing: the export needs the run's tokenizer")
    target_architecture(model.cfg)  # refuse before writing anything
    default = run_dir / "export" / "hf"
    out = Path(out_dir) if out_dir is not None else default
    step = info.get("step") if isinstance(info, dict) else None
    return export_model(model, tokenizer, out, extra={"run_dir": str(run_dir), "checkpoint": checkpoint,
                                                      "step": step},
                        force=force, run_dir=run_dir, owned=out.resolve() == default.resolve())
