"""tokens.val_split (hash | tail), data.txt_mode: continuous, and the named eval sets' shards."""

from __future__ import annotations

import pytest

from lmforge.config import TokenizerConfig, TokensConfig, load_config
from lmforge.data.document import Document, ShardWriter
from lmforge.data.readers import ReadOptions, read_source
from lmforge.errors import ConfigError, DataError
from lmforge.tokenizer import load_tokenizer, train_tokenizer
from lmforge.tokens.evalsets import build_eval_set, open_eval_set, set_names
from lmforge.tokens.shards import open_split
from lmforge.tokens.split import join_continuations, routed_documents
from lmforge.tokens.stage import run_tokenize_stage

PLAY = "".join(f"SPEAKER {i}:\nLine one of speech {i}, my lord.\nAnd line two, {i * 7} times.\n\n" for i in range(400))


def _read(path, cap=4_000_064):
    return list(read_source(str(path), ReadOptions(txt_mode="continuous", max_record_bytes=cap)))


def test_continuous_reader_keeps_blank_lines_and_rejoins_exactly(tmp_path):
    path = tmp_path / "play.txt"
    path.write_text(PLAY, encoding="utf-8")
    one = _read(path)
    assert len(one) == 1 and one[0].text.strip("\n") == PLAY.strip("\n") and "\n\n" in one[0].text
    pieces = _read(path, cap=16_000)  # pieces of ~4 KB: cut between two non-blank lines
    assert len(pieces) > 3
    assert [d.meta["piece"] for d in pieces] == list(range(len(pieces)))
    assert [d.meta["continues"] for d in pieces] == [False] + [True] * (len(pieces) - 1)
    assert all(not d.text.startswith("\n") and not d.text.endswith("\n") for d in pieces[:-1])
    joined = list(join_continuations(pieces))
    assert len(joined) == 1 and joined[0].text == one[0].text and joined[0].id == str(path)


def test_continuous_reader_counts_an_overlong_line(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("short line\n" + "y" * 5000 + "\nafter\n", encoding="utf-8")
    docs = _read(path, cap=1000)
    assert [d.meta.get("reject_reason") for d in docs] == [None, "too_long", None]
    assert docs[0].text == "short line" and docs[2].text == "after"


def _tokens_run(tmp_path, docs, **cfg):
    with ShardWriter(tmp_path / "data", "clean") as w:
        for d in docs:
            w.write(d)
    train_tokenizer(TokenizerConfig(kind="char"), [PLAY] + [d.text for d in docs], tmp_path / "tokenizer")
    man = run_tokenize_stage(TokensConfig(**cfg), tmp_path / "data", tmp_path / "tokenizer", tmp_path / "tokens",
                             progress=False)
    tok = load_tokenizer(tmp_path / "tokenizer")
    text = {s: "".join(tok.decode(open_split(tmp_path / "tokens", s).doc(i).tolist())
                       for i in range(open_split(tmp_path / "tokens", s).num_docs)) for s in ("train", "val")}
    return man, text


def test_tail_split_is_the_last_fraction_of_each_source(tmp_path):
    a = _read(tmp_path.joinpath("a.txt").write_text(PLAY) and tmp_path / "a.txt", cap=16_000)
    other = "Another source.\nWith two lines."
    b = [Document("b:1", other, {"source": "b.txt"})]
    man, text = _tokens_run(tmp_path, a + b, val_fraction=0.1, val_split="tail")
    full = "\n".join(d.text for d in a)  # the source as read (the data stage would also clean it)
    assert full.strip("\n") == PLAY.strip("\n")
    cut_a, cut_b = int(len(full) * 0.9), int(len(other) * 0.9)
    assert text["val"] == full[cut_a:] + other[cut_b:]  # contiguous, cut where nanoGPT cuts
    assert text["train"] == full[:cut_a] + other[:cut_b]
    assert man["val_split"] == "tail" and man["splits"]["train"]["docs"] == 2  # the pieces were joined


def test_hash_split_unchanged_by_default(tmp_path):
    docs = [Document(f"d{i}", f"paragraph {i} of the text.") for i in range(60)]
    man, text = _tokens_run(tmp_path, docs, val_fraction=0.2)
    from lmforge.tokens.split import split_hash

    val = [d.text for d in docs if split_hash(d.id, 0) < 0.2]
    assert man["val_split"] == "hash" and man["splits"]["val"]["docs"] == len(val) > 0
    assert text["val"] == "".join(val)


def test_routed_documents_hash_leaves_the_choice_to_the_stage():
    cfg = TokensConfig()
    docs = [Document("x", "one"), Document("y", "two")]
    assert [(d.id, s) for d, s in routed_documents(lambda: docs, cfg)] == [("x", None), ("y", None)]


def test_val_split_is_checked():
    with pytest.raises(ConfigError, match="tokens.val_split"):
        load_config(None, ["tokens.val_split=random"])


def test_build_eval_set_reads_cleans_and_tokenizes(tmp_path):
    train_tokenizer(TokenizerConfig(kind="char"), [PLAY], tmp_path / "tokenizer")
    tok = load_tokenizer(tmp_path / "tokenizer")
    (tmp_path / "held.txt").write_text("SPEAKER 1:\r\nLine   one.\r\n\r\n\r\nSPEAKER 2:\nLine two.\n")
    (tmp_path / "held.jsonl").write_text('{"text": "Line 7 of the jsonl."}\n{bad json\n')
    man = build_eval_set("held", [str(tmp_path / "held.txt")], tok, tmp_path / "run" / "eval_sets" / "held",
                         txt_mode="continuous", clean={"whitespace": True})
    ds = open_eval_set(tmp_path / "run", "held", fingerprint=tok.fingerprint)
    assert ds.num_docs == 1 and tok.decode(ds.doc(0).tolist()) == "SPEAKER 1:\nLine one.\n\nSPEAKER 2:\nLine two."
    assert man["splits"]["val"]["bytes"] == len("SPEAKER 1:\nLine one.\n\nSPEAKER 2:\nLine two.")
    man = build_eval_set("js", [str(tmp_path / "held.jsonl")], tok, tmp_path / "run" / "eval_sets" / "js")
    assert man["rejected"] == 1 and man["splits"]["val"]["docs"] == 1  # the bad line is counted, not fatal
    assert set_names(tmp_path / "run") == ["held", "js"]
    with pytest.raises(DataError, match="eval set 'nope'.*built: held, js"):
        open_eval_set(tmp_path / "run", "nope")
    with pytest.raises(ConfigError, match="eval.sets.bad.inputs"):
        build_eval_set("bad", [str(tmp_path / "missing.txt")], tok, tmp_path / "run" / "eval_sets" / "bad")


def test_eval_sets_config():
    cfg = load_config(None, ["eval.sets={a: {inputs: [x.txt], txt_mode: continuous}, b: [y.txt]}",
                             "eval.select_by=b"])
    assert cfg.eval.sets["a"].txt_mode == "continuous" and cfg.eval.sets["b"].inputs == ["y.txt"]
    for bad, key in ((["eval.select_by=zz"], "eval.select_by"),
                     (["eval.sets={split: [x.txt]}"], "eval.sets.split"),
                     (["eval.sets={a: {inputs: []}}"], "eval.sets.a.inputs"),
                     (["eval.sets={a: {inputs: [x], txt_mode: pages}}"], "eval.sets.a.txt_mode"),
                     (["eval.sets={a: {inputs: [x], mode: file}}"], "eval.sets.a.mode")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_config(None, bad)


def test_split_hashes_are_split_hash_of_each_id():
    """The stage hashes a batch at once; the values (so every stored split) must be split_hash's."""
    from lmforge.tokens.split import split_hash, split_hashes

    ids = ["d0", "", "é-ünï", "日本", "lone \udcff surrogate", "x" * 500] + [f"doc{i}" for i in range(200)]
    for seed in (0, 7):
        assert split_hashes(ids, seed).tolist() == [split_hash(i, seed) for i in ids]
    assert split_hashes([], 0).tolist() == []


def test_join_continuations_passes_other_documents_through_untouched():
    piece = lambda k: Document(f"book#{k}", f"part {k}", {"source": "book", "continues": k > 0, "piece": k})  # noqa: E731
    docs = [Document("a", "alpha", {"source": "x"}), piece(0), piece(1), piece(2), Document("b", "beta")]
    out = list(join_continuations(docs))
    assert [d.id for d in out] == ["a", "book", "b"]
    assert out[0] is docs[0] and out[2] is docs[4]  # nothing to join: not copied
    assert out[1].text == "part 0\npart 1\npart 2" and docs[1].text == "part 0"  # a joined one is a copy
