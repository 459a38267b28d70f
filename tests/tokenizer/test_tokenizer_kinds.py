"""Tokenizer training and loading: bpe, char and byte kinds, all stored as HF tokenizer.json."""

import hashlib
import json

import pytest
from tokenizers import Tokenizer as HFTokenizer

from lmforge.config import TokenizerConfig
from lmforge.data.builtin import builtin_text_path
from lmforge.errors import DataError, LmforgeError
from lmforge.tokenizer import load_tokenizer, train_tokenizer

SHAKESPEARE = builtin_text_path("builtin:shakespeare")
TRICKY = "Héllo wörld — 你好, мир! 🎉\n\ttabs  and  spaces <eos> <pad>\n"


@pytest.fixture(scope="module")
def corpus():
    with open(SHAKESPEARE, encoding="utf-8") as f:
        text = f.read(200_000)
    return [d for d in text.split("\n\n") if d]


@pytest.mark.parametrize("kind", ["bpe", "char", "byte"])
def test_specials_first_fingerprint_meta_and_reload(tmp_path, corpus, kind):
    tok = train_tokenizer(TokenizerConfig(kind=kind, vocab_size=400), corpus, tmp_path)
    assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id) == (0, 1, 2, 3)
    raw = (tmp_path / "tokenizer.json").read_bytes()
    assert tok.fingerprint == hashlib.sha256(raw).hexdigest()[:16]
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["kind"] == kind and meta["vocab_size"] == tok.vocab_size
    assert meta["special_tokens"] == {"<pad>": 0, "<unk>": 1, "<bos>": 2, "<eos>": 3}
    again = load_tokenizer(tmp_path)
    assert again.fingerprint == tok.fingerprint and again.kind == kind
    sample = corpus[5] + "\n" + corpus[6]
    assert again.encode(sample) == tok.encode(sample)
    assert again.decode(again.encode(sample)) == sample
    # plain HF tokenizers reads every kind (one loader for all, transformers builds on it)
    assert HFTokenizer.from_file(str(tmp_path / "tokenizer.json")).encode(sample).ids == tok.encode(sample)


def test_bpe_vocab_size_and_merges(tmp_path, corpus):
    tok = train_tokenizer(TokenizerConfig(kind="bpe", vocab_size=600), corpus, tmp_path)
    assert tok.vocab_size == 600
    text = "\n\n".join(corpus[:50])
    ids = tok.encode(text)
    assert len(ids) < len(text.encode()) / 2  # merges compress Shakespeare well below one token per byte
    assert tok.decode(ids) == text


def test_bpe_roundtrips_unseen_unicode(tmp_path, corpus):
    tok = train_tokenizer(TokenizerConfig(kind="bpe", vocab_size=400), corpus, tmp_path)
    assert tok.unk_id not in tok.encode(TRICKY)
    assert tok.decode(tok.encode(TRICKY)) == TRICKY


def test_byte_kind_ids_are_bytes_plus_specials(tmp_path):
    tok = train_tokenizer(TokenizerConfig(kind="byte"), ["anything"], tmp_path)
    assert tok.vocab_size == 260
    assert tok.encode(TRICKY) == [b + 4 for b in TRICKY.encode("utf-8")]
    assert tok.decode(tok.encode(TRICKY)) == TRICKY


def test_char_kind_vocab_and_unknown(tmp_path):
    tok = train_tokenizer(TokenizerConfig(kind="char"), ["abca", "b c\n"], tmp_path)
    # specials, then the characters seen, in code-point order
    assert tok.vocab_size == 4 + 5
    assert [tok.id_to_token(i) for i in range(4, 9)] == ["\n", " ", "a", "b", "c"]
    assert tok.encode("cab \n") == [8, 6, 7, 5, 4]
    assert tok.encode("axb") == [6, tok.unk_id, 7]  # one <unk> per unseen character
    assert tok.decode(tok.encode("ab c\nb")) == "ab c\nb"


def test_special_token_text_is_not_a_control_token(tmp_path, corpus):
    for kind in ("bpe", "byte"):
        tok = train_tokenizer(TokenizerConfig(kind=kind, vocab_size=300), corpus, tmp_path / kind)
        ids = tok.encode("end <eos> <bos><pad>")
        assert not set(ids) & {tok.pad_id, tok.bos_id, tok.eos_id}
        assert tok.decode(ids) == "end <eos> <bos><pad>"


def test_max_train_bytes_limits_the_sample(tmp_path):
    texts = ["a" * 500, "b" * 500, "zq" * 10_000]
    tok = train_tokenizer(TokenizerConfig(kind="char", max_train_bytes=700), texts, tmp_path)
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["trained_bytes"] == 700 and meta["trained_docs"] == 2
    assert tok.encode("abz") == [4, 5, tok.unk_id]  # 'z' lies past the budget


def test_max_train_bytes_never_splits_a_character(tmp_path):
    tok = train_tokenizer(TokenizerConfig(kind="char", max_train_bytes=3), ["aé€"], tmp_path)
    assert tok.vocab_size == 4 + 2  # 'a' + 'é' (3 bytes); '€' would need 3 more


def test_no_text_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no text to train the tokenizer"):
        train_tokenizer(TokenizerConfig(kind="bpe"), [], tmp_path)


def test_load_missing_or_corrupt(tmp_path):
    with pytest.raises(LmforgeError, match="train one first"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(LmforgeError, match="not a valid tokenizer.json"):
        load_tokenizer(tmp_path)


def test_transformers_reads_it(tmp_path, corpus):
    transformers = pytest.importorskip("transformers")
    tok = train_tokenizer(TokenizerConfig(kind="bpe", vocab_size=400), corpus, tmp_path)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"))
    assert fast.encode(corpus[3], add_special_tokens=False) == tok.encode(corpus[3])
    assert fast.decode(tok.encode(corpus[3])) == corpus[3]


@pytest.mark.parametrize("kind", ["char", "byte"])
def test_vectorised_encoder_equals_hf(tmp_path, corpus, kind):
    tok = train_tokenizer(TokenizerConfig(kind=kind), corpus, tmp_path)
    rng = __import__("random").Random(0)
    alphabet = "abcXYZ \n\t.,;!?éü€你好🎉<>" + "".join(chr(rng.randrange(32, 0x2FFF)) for _ in range(50))
    samples = [TRICKY, corpus[0], ""] + ["".join(rng.choice(alphabet) for _ in range(200)) for _ in range(20)]
    for text in samples:
        assert tok._lut is not None
        assert tok.encode(text) == tok.hf.encode(text, add_special_tokens=False).ids
        assert tok.encode_array(text).tolist() == tok.encode(text)
    assert tok.encode_batch(samples) == [e.ids for e in tok.hf.encode_batch(samples, add_special_tokens=False)]


def test_bpe_has_no_table_encoder(tmp_path, corpus):
    tok = train_tokenizer(TokenizerConfig(kind="bpe", vocab_size=300), corpus, tmp_path)
    assert tok._lut is None and tok.encode_array(corpus[1]).tolist() == tok.encode(corpus[1])
