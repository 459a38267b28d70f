"""Perplexity / bits-per-byte: packed scoring equals naive scoring, definitions, unigram baseline,
the eval stage's report."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lmf_evalkit import TEXT, FakeSplit, tiny_model, train_on

from lmforge.config import EvalConfig
from lmforge.eval import perplexity
from lmforge.eval.scoring import evaluate_dataset, evaluate_texts, score_documents, summarize

DOCS = ["The king is dead.", "Long live the king! The queen walks in the garden, and the fool sings. " * 3,
        "Now", "Now is the winter of our discontent made glorious summer by this sun of York."]


def _encode(tokenizer, texts):
    return [tokenizer.encode(t) + [tokenizer.eos_id] for t in texts]


def _naive(model, doc: list[int], prefix: int) -> float:
    """Each window scored alone, no packing."""
    seq = [prefix] + doc
    T, total = model.cfg.block_size, 0.0
    for s in range(0, len(seq) - 1, T):
        inp = torch.tensor([seq[s:s + T]])
        tgt = torch.tensor(seq[s + 1:s + T + 1])
        logits = model(inp)[0, :len(tgt)]
        total += F.cross_entropy(logits, tgt, reduction="sum").item()
    return total


def test_packed_scores_equal_naive(tokenizer):
    model = tiny_model(tokenizer.vocab_size, block_size=16)
    words = TEXT.split()
    shorts = [" ".join(words[i:i + 1 + i % 5]) for i in range(0, 60, 5)]  # many short documents to pack
    docs = _encode(tokenizer, DOCS + shorts)
    assert max(map(len, docs)) > 16  # one document spans several windows
    scores, n = score_documents(model, docs, len(docs), prefix_id=tokenizer.eos_id, batch_size=3)
    assert n == len(docs)
    assert scores.tokens.tolist() == [len(d) for d in docs]  # every token predicted exactly once
    with torch.no_grad():
        naive = [_naive(model, d, tokenizer.eos_id) for d in docs]
    np.testing.assert_allclose(scores.nll, naive, rtol=1e-5)


def test_summarize_definitions():
    out = summarize(100.0, 50, nbytes=200, words=40)
    assert out["loss"] == 2.0 and out["perplexity"] == pytest.approx(math.exp(2.0))
    assert out["bpb"] == pytest.approx(100.0 / (200 * math.log(2)))
    assert out["word_perplexity"] == pytest.approx(math.exp(2.5))


def test_unigram_hand_computed():
    out = perplexity.unigram_baseline(np.array([3, 1, 0]), np.array([1, 1, 1]), nbytes=6)
    expect = -(math.log(4 / 7) + math.log(2 / 7) + math.log(1 / 7)) / 3
    assert out["loss"] == pytest.approx(expect)
    assert out["bpb"] == pytest.approx(expect * 3 / (6 * math.log(2)))


def test_unigram_without_a_scored_token_is_none():
    """`max_batches` can end inside the first (long, continuous) validation document: no baseline, no crash."""
    assert perplexity.unigram_baseline(np.array([3, 1, 0]), np.array([0, 0, 0]), nbytes=None) is None


def test_dataset_equals_texts_and_max_batches(tokenizer):
    model = tiny_model(tokenizer.vocab_size, block_size=16)
    nbytes = sum(len(t.encode()) for t in DOCS)
    split = FakeSplit(_encode(tokenizer, DOCS), nbytes)
    res = evaluate_dataset(model, split, tokenizer=tokenizer, batch_size=2)
    res_t, _ = evaluate_texts(model, tokenizer, DOCS, batch_size=5)
    assert res["loss"] == pytest.approx(res_t["loss"], rel=1e-6)
    assert res["bpb"] == pytest.approx(res["nll_sum"] / (nbytes * math.log(2)))
    assert res["words"] == sum(len(t.split()) for t in DOCS)
    part = evaluate_dataset(model, split, tokenizer=tokenizer, batch_size=1, max_batches=1)
    assert part["docs"] == 1 and part["tokens"] == len(_encode(tokenizer, DOCS[:1])[0])
    assert part["bytes"] == len(DOCS[0].encode())


@pytest.fixture
def fake_run(tmp_path, tokenizer, monkeypatch):
    """A run directory whose checkpoint loader and token splits are stand-ins."""
    torch.manual_seed(0)
    model = tiny_model(tokenizer.vocab_size, block_size=32)
    with torch.no_grad():
        for p in model.parameters():
            p.div_(8.0) if p.dim() > 1 else None
    train_on(model, torch.tensor(tokenizer.encode(TEXT)), steps=60)
    train_docs = TEXT.split(". ")
    val_docs = DOCS
    splits = {"train": FakeSplit(_encode(tokenizer, train_docs), sum(len(t.encode()) for t in train_docs)),
              "val": FakeSplit(_encode(tokenizer, val_docs), sum(len(t.encode()) for t in val_docs))}
    (tmp_path / "tokens").mkdir()
    import lmforge.checkpoint as ckpt
    import lmforge.tokens.shards as shards

    monkeypatch.setattr(ckpt, "load_for_inference", lambda run_dir, which, device="cpu": (
        model, tokenizer, {"step": 60, "path": str(run_dir), "config": {"x": 1}}))
    monkeypatch.setattr(shards, "open_split", lambda d, split, fingerprint=None: splits[split])
    return tmp_path, model, splits


def test_evaluate_run_report_and_unigram(fake_run, tokenizer):
    run_dir, model, splits = fake_run
    report = perplexity.evaluate_run(run_dir, checkpoint="latest", cfg=EvalConfig(batch_size=4))
    on_disk = json.loads((run_dir / "eval" / "report.json").read_text())
    assert on_disk["val_loss"] == pytest.approx(report["val_loss"])
    assert report["val_ppl"] == pytest.approx(math.exp(report["val_loss"]))
    direct = evaluate_dataset(model, splits["val"], tokenizer=tokenizer)
    assert report["val_bpb"] == pytest.approx(direct["bpb"])
    assert report["checkpoint"] == {"which": "latest", "step": 60, "path": str(run_dir)}
    # 60 steps on this text already put the model far below token frequencies
    assert report["unigram"]["tokens"] == report["val_tokens"]
    assert report["unigram"]["loss"] > report["val_loss"] + 0.5
    md = (run_dir / "eval" / "report.md").read_text()
    assert "Unigram baseline" in md and "bits per byte" in md and "uses context" in md


def test_evaluate_run_with_data_file(fake_run):
    run_dir, _, _ = fake_run
    jsonl = run_dir / "extra.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": t, "lang": "en"}) for t in DOCS) + "\n{broken\n")
    rep = perplexity.evaluate_run(run_dir, cfg=EvalConfig(), data=jsonl)
    assert rep["data"]["docs"] == len(DOCS) and rep["data"]["rejected_records"] == 1
    assert rep["data"]["loss"] == pytest.approx(rep["val_loss"], rel=1e-6)  # the same documents
    txt = run_dir / "extra.txt"
    txt.write_text("\n\n".join(DOCS) + "\n")
    assert perplexity.evaluate_run(run_dir, data=txt)["data"]["loss"] == pytest.approx(rep["val_loss"], rel=1e-6)
    from lmforge.errors import LmforgeError

    with pytest.raises(LmforgeError, match="nope.txt"):
        perplexity.evaluate_run(run_dir, data=run_dir / "nope.txt")


def test_unreadable_run_config_is_a_warning_not_a_failure(fake_run):
    run_dir, _, _ = fake_run
    (run_dir / "config.yaml").write_text("tokens: {no_such_key: 1}\n")
    report = perplexity.evaluate_run(run_dir, cfg=EvalConfig(report_samples=0))
    assert math.isfinite(report["val_loss"]) and "no_such_key" in report["warnings"][0]
    assert "strata skipped" in report["strata_note"]
    assert "Warning" in (run_dir / "eval" / "report.md").read_text()
