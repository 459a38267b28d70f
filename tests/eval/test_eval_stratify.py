"""Strata by meta field and length: they add up to the totals; the run's val documents are found."""

from __future__ import annotations

import json

import pytest
from lmf_evalkit import FakeSplit, tiny_model

from lmforge.data.document import Document, ShardWriter
from lmforge.eval import perplexity
from lmforge.eval.scoring import evaluate_texts
from lmforge.eval.stratify import OTHER, length_bucket, length_labels, stratified_scores, val_documents

DOCS = [Document("a", "The king is dead.", {"lang": "en", "source": "x"}),
        Document("b", "Der König ist tot. Lang lebe der König!", {"lang": "de", "source": "x"}),
        Document("c", "Long live the king! The queen walks in the garden. " * 4, {"lang": "en", "source": "y"}),
        Document("d", "Now is the winter of our discontent.", {"source": "y"}),
        Document("e", "La reine marche dans le jardin.", {"lang": "fr", "source": "z"})]


def test_length_labels_and_buckets():
    assert length_labels([64, 256]) == ["<64", "64-255", ">=256"]
    assert [length_bucket(n, [64, 256]) for n in (1, 63, 64, 255, 256, 9999)] == [
        "<64", "<64", "64-255", "64-255", ">=256", ">=256"]


def test_strata_add_up_and_match_group_evaluation(tokenizer):
    model = tiny_model(tokenizer.vocab_size)
    res = stratified_scores(model, tokenizer, DOCS, fields=["lang", "source", "absent"], edges=[16, 64])
    overall = res["overall"]
    assert set(res["strata"]) == {"lang", "source", "length (tokens)"}  # "absent" is in no document
    for rows in res["strata"].values():
        assert sum(r["tokens"] for r in rows) == overall["tokens"]
        assert sum(r["nll_sum"] for r in rows) == pytest.approx(overall["nll_sum"])
        assert sum(r["docs"] for r in rows) == len(DOCS)
    lang = {r["value"]: r for r in res["strata"]["lang"]}
    assert set(lang) == {"en", "de", "fr", "(none)"}
    en, _ = evaluate_texts(model, tokenizer, [DOCS[0].text, DOCS[2].text])
    assert lang["en"]["loss"] == pytest.approx(en["loss"], rel=1e-6)
    assert lang["en"]["bpb"] == pytest.approx(en["bpb"], rel=1e-6)
    assert [r["value"] for r in res["strata"]["length (tokens)"]] == [
        x for x in length_labels([16, 64]) if x in {r["value"] for r in res["strata"]["length (tokens)"]}]


def test_small_groups_fold_into_other(tokenizer):
    model = tiny_model(tokenizer.vocab_size)
    res = stratified_scores(model, tokenizer, DOCS, fields=["lang"], edges=[], max_groups=2)
    rows = res["strata"]["lang"]
    assert len(rows) == 2 and rows[0]["value"] == "en" and rows[1]["value"] == OTHER and rows[1]["docs"] == 3
    assert res["strata"]["length (tokens)"][0]["value"] == "all"


def _write_run(tmp_path, tokenizer, monkeypatch, reverse_split=False):
    """A run dir with real clean shards and config.yaml; checkpoint and token splits are stand-ins
    built from the same documents, the way the tokens stage builds them."""
    run = tmp_path / "run"
    with ShardWriter(run / "data", "clean", max_docs=2) as w:
        for d in DOCS:
            w.write(d)
    (run / "config.yaml").write_text("tokens: {val_fraction: 0.6, split_seed: 3}\n")
    val = val_documents(run / "data", val_fraction=0.6, split_seed=3)
    from lmforge.tokens.split import split_hash

    assert [d.id for d in val] == [d.id for d in DOCS if split_hash(d.id, 3) < 0.6] and val
    enc = [tokenizer.encode(d.text) + [tokenizer.eos_id] for d in val]
    if reverse_split:  # the split's documents in another order: strata must re-score, not reuse
        enc = enc[::-1]
    train = [d for d in DOCS if d.id not in {v.id for v in val}] or DOCS
    splits = {"val": FakeSplit(enc, sum(len(d.text.encode()) for d in val)),
              "train": FakeSplit([tokenizer.encode(d.text) + [tokenizer.eos_id] for d in train], 1)}
    (run / "tokens").mkdir()
    model = tiny_model(tokenizer.vocab_size)
    import lmforge.checkpoint as ckpt
    import lmforge.tokens.shards as shards

    monkeypatch.setattr(ckpt, "load_for_inference", lambda r, w, device="cpu": (model, tokenizer, {"step": 9}))
    monkeypatch.setattr(shards, "open_split", lambda d, split, fingerprint=None: splits[split])
    return run, val


def test_evaluate_run_strata_match_val_split(tmp_path, tokenizer, monkeypatch):
    run, val = _write_run(tmp_path, tokenizer, monkeypatch)
    report = perplexity.evaluate_run(run)
    assert report["strata_match_val_split"] is True
    assert report["strata_scores"] == "reused from the split"
    assert sum(r["docs"] for r in report["strata"]["length (tokens)"]) == len(val)
    md = (run / "eval" / "report.md").read_text()
    assert "Validation documents by stratum" in md and "By length (tokens)" in md
    # an external JSONL file with its own meta fields, stratified by them
    f = tmp_path / "more.jsonl"
    f.write_text("".join(json.dumps({"text": d.text, "lang": d.meta.get("lang", "")}) + "\n" for d in DOCS))
    rep = perplexity.evaluate_run(run, data=f)
    assert {r["value"] for r in rep["data"]["strata"]["lang"]} == {"en", "de", "fr", "(none)"}
    assert "by stratum" in (run / "eval" / "report.md").read_text()


def test_strata_rescored_when_split_order_differs(tmp_path, tokenizer, monkeypatch):
    run, val = _write_run(tmp_path, tokenizer, monkeypatch, reverse_split=True)
    assert len(val) > 1
    report = perplexity.evaluate_run(run)
    assert report["strata_scores"] == "re-scored from the clean data"
    assert report["strata_match_val_split"] is True  # same documents: the sums agree all the same
