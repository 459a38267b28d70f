"""Bad token shards stop before training with a message naming the shard and the fix."""

import json

import numpy as np
import pytest

from lmforge.errors import DataError
from lmforge.tokens.format import HEADER, MAGIC
from lmforge.tokens.loader import TokenLoader
from lmforge.tokens.shards import open_split, write_tokens_dir

FIX = "rerun `lmforge tokenize`"


@pytest.fixture()
def tokens(tmp_path):
    rng = np.random.default_rng(0)
    docs = [rng.integers(4, 300, size=n) for n in (20, 31, 7, 50)]
    write_tokens_dir(tmp_path, {"train": docs, "val": docs[:1]}, vocab_size=300, fingerprint="abcdef0123456789")
    return tmp_path


def _patch_header(idx, **fields):
    raw = bytearray(idx.read_bytes())
    names = ["magic", "version", "itemsize", "tokens", "docs", "fingerprint", "vocab"]
    vals = dict(zip(names, HEADER.unpack(bytes(raw[:HEADER.size]))))
    vals.update(fields)
    raw[:HEADER.size] = HEADER.pack(*(vals[n] for n in names))
    idx.write_bytes(bytes(raw))


def _expect(tokens, pattern, **kw):
    with pytest.raises(DataError, match=pattern) as e:
        open_split(tokens, "train", **kw)
    assert "train-00000" in str(e.value) and ("lmforge tokenize" in str(e.value))
    return str(e.value)


def test_good_shards_open(tokens):
    ds = open_split(tokens, "train", fingerprint="abcdef0123456789", verify_checksums=True)
    assert ds.num_tokens == 108 and ds.num_docs == 4 and np.diff(ds.doc_starts).tolist() == [20, 31, 7, 50]


def test_truncated_bin(tokens):
    b = tokens / "train-00000.bin"
    b.write_bytes(b.read_bytes()[:-6])
    msg = _expect(tokens, r"train-00000\.bin: holds 210 bytes, index says 108 tokens")
    assert FIX in msg


def test_wrong_magic(tokens):
    _patch_header(tokens / "train-00000.idx", magic=b"GARBAGE!")
    _expect(tokens, r"train-00000\.idx: wrong magic")


def test_wrong_version(tokens):
    _patch_header(tokens / "train-00000.idx", version=7)
    _expect(tokens, r"train-00000\.idx: format version 7, this lmforge reads version 1")


def test_truncated_idx(tokens):
    (tokens / "train-00000.idx").write_bytes(MAGIC + b"\0" * 10)
    _expect(tokens, r"index is truncated")


def test_offsets_past_the_end(tokens):
    idx = tokens / "train-00000.idx"
    raw = bytearray(idx.read_bytes())
    raw[-8:] = np.int64(500).tobytes()
    idx.write_bytes(bytes(raw))
    _expect(tokens, r"train-00000\.idx: document offsets run from 0 to 500, expected 0 to 108 \(offsets past the end")


def test_offsets_not_increasing(tokens):
    idx = tokens / "train-00000.idx"
    offs = np.frombuffer(idx.read_bytes()[HEADER.size:], dtype="<i8").copy()
    offs[2] = offs[1] - 1
    idx.write_bytes(idx.read_bytes()[:HEADER.size] + offs.tobytes())
    _expect(tokens, r"not increasing at document 1")


def test_index_size_disagrees_with_header(tokens):
    idx = tokens / "train-00000.idx"
    idx.write_bytes(idx.read_bytes() + b"\0" * 8)
    _expect(tokens, r"index holds 112 bytes, header says 104")


def test_other_tokenizer(tokens):
    with pytest.raises(DataError, match=r"train-00000\.bin\) were made by tokenizer abcdef0123456789.*"
                                        r"current tokenizer is 1111111111111111.*rerun `lmforge tokenize`"):
        open_split(tokens, "train", fingerprint="1111111111111111")
    # a shard copied in from another run: the manifest agrees, the shard header does not
    _patch_header(tokens / "train-00000.idx", fingerprint=b"9999999999999999")
    msg = _expect(tokens, r"train-00000\.bin: was made by tokenizer 9999999999999999")
    assert "tokenizer changed" in msg


def test_vocab_too_large_for_uint16(tokens):
    _patch_header(tokens / "train-00000.idx", vocab=70_000)
    _expect(tokens, r"vocabulary of 70000 ids cannot be stored as uint16")


def test_empty_shard(tokens):
    _patch_header(tokens / "train-00000.idx", tokens=0, docs=0)
    (tokens / "train-00000.bin").write_bytes(b"")
    _expect(tokens, r"train-00000\.bin: shard is empty")


def test_missing_files_and_manifest(tokens):
    (tokens / "train-00000.bin").unlink()
    _expect(tokens, r"train-00000\.bin: file is missing")
    (tokens / "manifest.json").unlink()
    with pytest.raises(DataError, match=r"manifest\.json is missing.*lmforge tokenize"):
        open_split(tokens, "train")


def test_manifest_disagrees_with_shard(tokens):
    man = json.loads((tokens / "manifest.json").read_text())
    man["splits"]["train"]["shards"][0]["tokens"] = 99
    (tokens / "manifest.json").write_text(json.dumps(man))
    _expect(tokens, r"holds 108 tokens / 4 docs, manifest says 99 / 4")


def test_corrupt_bytes_caught_by_checksum_and_by_token_range(tokens):
    b = tokens / "train-00000.bin"
    raw = bytearray(b.read_bytes())
    raw[0:2] = np.uint16(60_000).tobytes()  # same size, id beyond the vocabulary
    b.write_bytes(bytes(raw))
    _expect(tokens, r"sha256 differs", verify_checksums=True)
    ds = open_split(tokens, "train")
    with pytest.raises(DataError, match=r"train-00000.*token id 60000 >= vocabulary size 300"):
        next(TokenLoader(ds, seq_len=16, batch_size=8, seed=0, shuffle=False))


def test_empty_val_split(tmp_path):
    write_tokens_dir(tmp_path, {"train": [[5] * 40]}, vocab_size=300)
    with pytest.raises(DataError, match=r"split 'val' .* is empty.*tokens.val_fraction"):
        open_split(tmp_path, "val")
