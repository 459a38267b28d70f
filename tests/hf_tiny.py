"""Tiny random Hugging Face models with their tokenizers, saved to a folder offline, for the import tests
(tests/model, tests/train, tests/tokenizer). Everything is generated here: no downloads, no files read."""

from __future__ import annotations

import os
import random
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

WORDS = ("river stone light market winter garden copper signal harbor lantern orchard meadow engine thunder "
         "paper silver window forest ladder candle mirror valley bridge").split()
CODE = ("def return import class self for while if else print range len yield lambda try except "
        "with open pass").split()

# family -> (specials of its tokenizer, tokenizer_config roles)
SPECIALS = {
    "gpt2": (["<|endoftext|>"], {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
                                 "unk_token": "<|endoftext|>"}),
    "llama": (["<unk>", "<s>", "</s>"], {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}),
    "qwen": (["<|endoftext|>", "<|im_start|>", "<|im_end|>"], {"eos_token": "<|endoftext|>",
                                                               "pad_token": "<|endoftext|>"}),
}


def sentences(n: int, seed: int = 0, words: tuple[str, ...] = WORDS) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        k = rng.randint(8, 30)
        out.append(" ".join(rng.choice(words) for _ in range(k)).capitalize() + ".")
    return out


def hf_tokenizer(family: str, vocab_size: int = 300):
    """A byte-level BPE `PreTrainedTokenizerFast` with the family's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials, roles = SPECIALS[family]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(sentences(400) + sentences(100, 1, CODE), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **roles)


FAMILIES = {
    # name: (family of tokenizer, transformers class, config kwargs)
    "llama_tied_gqa": ("llama", "Llama", dict(num_key_value_heads=2, tie_word_embeddings=True)),
    "llama_untied_attn_bias_theta": ("llama", "Llama", dict(attention_bias=True, rope_parameters={
        "rope_type": "default", "rope_theta": 500000.0})),
    "llama_mlp_bias_linear_rope": ("llama", "Llama", dict(mlp_bias=True, rope_parameters={
        "rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0})),
    "llama3_rope_scaling": ("llama", "Llama", dict(num_key_value_heads=1, rope_parameters={
        "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 16})),
    "qwen2_bias_gqa": ("qwen", "Qwen2", dict(num_key_value_heads=2)),
    "qwen3_qknorm_tied": ("qwen", "Qwen3", dict(num_key_value_heads=2, head_dim=8, tie_word_embeddings=True)),
    "gpt2_tied": ("gpt2", "GPT2", {}),
    "gpt2_untied": ("gpt2", "GPT2", dict(tie_word_embeddings=False)),
}


def _perturb(model: torch.nn.Module, seed: int) -> None:
    """Non-trivial norms and biases (random init leaves them at 1 and 0), so a wrong mapping cannot hide."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                base = 1.0 if ("norm" in name or "ln" in name) and name.endswith("weight") else 0.0
                p.copy_(base + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.mul_(4.0)


def make_hf_model(name: str, out: Path, *, vocab_pad: int = 4, n_positions: int = 64, seed: int = 0):
    """Build FAMILIES[name] with random weights, save it (safetensors) with its tokenizer into `out`;
    returns the transformers model (eval mode, float32)."""
    import transformers

    family, cls, extra = FAMILIES[name]
    tok = hf_tokenizer(family)
    vocab = len(tok) + vocab_pad  # embedding rows beyond the tokenizer, as many HF models have
    ids = {k: tok.convert_tokens_to_ids(v) for k, v in
           (("bos_token_id", tok.bos_token), ("eos_token_id", tok.eos_token), ("pad_token_id", tok.pad_token)) if v}
    if cls == "GPT2":
        cfg = transformers.GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=4, n_positions=n_positions,
                                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **ids, **extra)
    else:
        kw = dict(vocab_size=vocab, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                  max_position_embeddings=n_positions, rms_norm_eps=1e-5, **ids)
        kw.update(extra)
        cfg = getattr(transformers, f"{cls}Config")(**kw)
    torch.manual_seed(seed)
    model = getattr(transformers, f"{cls}ForCausalLM" if cls != "GPT2" else "GPT2LMHeadModel")(cfg)
    _perturb(model, seed)
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return model
