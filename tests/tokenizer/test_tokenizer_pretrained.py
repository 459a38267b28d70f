"""`tokenizer.kind: pretrained`: an existing HF tokenizer is copied byte for byte, its special tokens
take lmforge's four roles, and the tokenize stage uses it unchanged."""

from __future__ import annotations

import json

import pytest

from hf_tiny import hf_tokenizer, sentences
from lmforge.config import TokenizerConfig, TokensConfig
from lmforge.data.document import Document, ShardWriter
from lmforge.errors import ConfigError, LmforgeError
from lmforge.tokenizer import load_tokenizer, train_tokenizer
from lmforge.tokens.shards import open_split
from lmforge.tokens.stage import run_tokenize_stage

pytest.importorskip("transformers")


@pytest.mark.parametrize("family, roles, fallbacks", [
    ("llama", {"pad": "</s>", "unk": "<unk>", "bos": "<s>", "eos": "</s>"}, ["pad"]),
    ("gpt2", {"pad": "<|endoftext|>", "unk": "<|endoftext|>", "bos": "<|endoftext|>", "eos": "<|endoftext|>"},
     ["pad"]),
    ("qwen", {"pad": "<|endoftext|>", "unk": "<|endoftext|>", "bos": "<|endoftext|>", "eos": "<|endoftext|>"},
     ["unk", "bos"]),
])
def test_roles_vocab_and_byte_identical_copy(family, roles, fallbacks, tmp_path):
    hf = hf_tokenizer(family)
    hf.save_pretrained(tmp_path / "src")
    tok = train_tokenizer(TokenizerConfig(kind="pretrained", path=str(tmp_path / "src")), iter(()), tmp_path / "out")
    assert (tmp_path / "out" / "tokenizer.json").read_bytes() == (tmp_path / "src" / "tokenizer.json").read_bytes()
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["roles"] == roles and meta["role_fallbacks"] == fallbacks and meta["kind"] == "pretrained"
    assert tok.vocab_size == len(hf)
    for role in ("pad", "unk", "bos", "eos"):
        assert getattr(tok, f"{role}_id") == hf.convert_tokens_to_ids(roles[role])
    again = load_tokenizer(tmp_path / "out")
    assert again.fingerprint == tok.fingerprint and again.eos_id == tok.eos_id and again.kind == "pretrained"
    text = "River stone, copper signal."
    assert tok.encode(text) == hf(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(tok.encode(text)) == text
    # text spelling a special token stays text (as for lmforge's own tokenizers)
    assert tok.eos_id not in tok.encode(roles["eos"])


def test_a_bare_tokenizer_json_file_works(tmp_path):
    hf = hf_tokenizer("llama")
    hf.backend_tokenizer.save(str(tmp_path / "tok.json"))  # no tokenizer_config.json beside it
    tok = train_tokenizer(TokenizerConfig(kind="pretrained", path=str(tmp_path / "tok.json")), [], tmp_path / "out")
    assert (tok.bos_id, tok.eos_id, tok.unk_id) == tuple(hf.convert_tokens_to_ids(["<s>", "</s>", "<unk>"]))


def test_tokenize_stage_is_unchanged(tmp_path):
    hf_tokenizer("gpt2").save_pretrained(tmp_path / "src")
    with ShardWriter(tmp_path / "data", "clean") as w:
        for i, t in enumerate(sentences(60)):
            w.write(Document(f"d{i}", t))
    tok = train_tokenizer(TokenizerConfig(kind="pretrained", path=str(tmp_path / "src")), [], tmp_path / "tokenizer")
    man = run_tokenize_stage(TokensConfig(val_fraction=0.2), tmp_path / "data", tmp_path / "tokenizer",
                             tmp_path / "tokens", progress=False)
    assert man["tokenizer_fingerprint"] == tok.fingerprint and man["eos_id"] == tok.eos_id
    ds = open_split(tmp_path / "tokens", "train", fingerprint=tok.fingerprint)
    assert ds.doc(0)[-1] == tok.eos_id


def test_bad_input(tmp_path):
    with pytest.raises(ConfigError, match="tokenizer.path"):
        TokenizerConfig(kind="bpe", path="x")
    with pytest.raises(ConfigError, match="no tokenizer.json"):
        train_tokenizer(TokenizerConfig(kind="pretrained", path=str(tmp_path)), [], tmp_path / "out")
    with pytest.raises(ConfigError, match="needs a tokenizer.json"):
        train_tokenizer(TokenizerConfig(kind="pretrained"), [], tmp_path / "out")
    from tokenizers import Tokenizer, models

    bare = Tokenizer(models.BPE(vocab={"a": 0, "b": 1}, merges=[]))
    bare.save(str(tmp_path / "noeos.json"))
    with pytest.raises(LmforgeError, match="no end-of-text token"):
        train_tokenizer(TokenizerConfig(kind="pretrained", path=str(tmp_path / "noeos.json")), [], tmp_path / "o2")
