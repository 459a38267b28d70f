"""An lmforge checkpoint as the data stage's perplexity reference (lmforge.eval.docscore)."""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from lmf_evalkit import train_on

from lmforge.config import DataConfig, ModelConfig, PerplexityConfig, TokenizerConfig, config_from_dict, to_dict
from lmforge.data.builtin import builtin_text_path
from lmforge.data.document import iter_clean_documents, read_shard
from lmforge.data.executor import run_data_stage
from lmforge.errors import ConfigError
from lmforge.eval.docscore import doc_scorer_factory, load_doc_scorer, reference_identity, resolve_reference

SHAKESPEARE = Path(builtin_text_path("builtin:shakespeare"))
BLOCK = 32
MAX_PPL = 1e8  # between the tiny model's in-domain word perplexity (~1e5) and gibberish's (> 1e10)


def _train_tiny(ids: torch.Tensor, vocab: int, steps: int = 150) -> torch.nn.Module:
    from lmforge.model import GPT

    torch.manual_seed(0)
    model = GPT(ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=BLOCK, vocab_size=vocab))
    return train_on(model, ids, steps, batch=16)


@pytest.fixture(scope="module")
def ref_run(tmp_path_factory) -> Path:
    """RUN/tokenizer + RUN/checkpoints/step-000150 (+ latest): a tiny BPE model trained on 200 KB of
    Shakespeare for 150 steps (~3 s), written with the trainer's checkpoint writer."""
    from lmforge.checkpoint import set_pointer, write_checkpoint
    from lmforge.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("ref") / "run"
    text = SHAKESPEARE.read_text(encoding="utf-8")[:200_000]
    tok = train_tokenizer(TokenizerConfig(kind="bpe", vocab_size=512), [text], root / "tokenizer")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model; two threads next to the tokenizer's pool crawl on 2 cores
    try:
        model = _train_tiny(torch.tensor(tok.encode(text)), tok.vocab_size)
    finally:
        torch.set_num_threads(threads)
    ckpt = write_checkpoint(root / "checkpoints", 150, model_state=model, optim_state=None,
                            state={"step": 150, "config": {"model": to_dict(model.cfg)}})
    set_pointer(root / "checkpoints", "latest", ckpt)
    return root


def _held_out(n: int) -> list[str]:
    """In-domain paragraphs the model never saw (past its 200 KB of training text)."""
    text = SHAKESPEARE.read_text(encoding="utf-8")[600_000:700_000]
    return [p for p in text.split("\n\n") if len(p.split()) >= 20][:n]


def _garbage(text: str, seed: int) -> str:
    rng = random.Random(seed)
    return " ".join("".join(rng.choice("qwxzkjvbpfgh") for _ in w) for w in text.split())


def _shuffled(text: str, seed: int) -> str:
    words = text.split()
    random.Random(seed).shuffle(words)
    return " ".join(words)


def test_word_perplexity_equals_hand_computation(ref_run):
    scorer = load_doc_scorer(ref_run)
    text = _held_out(1)[0]
    tok, model = scorer.tokenizer, scorer.model
    seq = torch.tensor([tok.eos_id] + tok.encode(text))  # <eos> prefix, as lm-eval's rolling loglikelihood
    assert len(seq) > 2 * BLOCK  # several windows
    nll = 0.0
    with torch.no_grad():
        for s in range(0, len(seq) - 1, BLOCK):  # disjoint windows, each seeing only itself
            e = min(s + BLOCK, len(seq) - 1)
            logits = model(seq[None, s:e])[0]
            nll += F.cross_entropy(logits.double(), seq[s + 1:e + 1], reduction="sum").item()
    expected = math.exp(nll / len(text.split()))
    assert scorer.perplexity(text) == pytest.approx(expected, rel=1e-5)
    # a batch of documents (windows packed together) gives each one the same value as alone
    others = _held_out(4)[1:]
    batch = scorer.perplexities([text, *others])
    assert batch[0] == pytest.approx(expected, rel=1e-5)
    assert batch[1:] == pytest.approx([scorer.perplexity(t) for t in others], rel=1e-5)


def test_fluent_scores_below_shuffled_and_garbage(ref_run):
    scorer = load_doc_scorer(ref_run)
    fluent = _held_out(6)
    p_fluent = scorer.perplexities(fluent)
    p_shuffled = scorer.perplexities([_shuffled(t, i) for i, t in enumerate(fluent)])
    p_garbage = scorer.perplexities([_garbage(t, i) for i, t in enumerate(fluent)])
    assert all(f < s for f, s in zip(p_fluent, p_shuffled))  # word order matters to the model
    assert max(p_fluent) < MAX_PPL < min(p_garbage)


def _write_inputs(d: Path, fluent: list[str], garbage: list[str], files: int = 2) -> list[str]:
    """`files` JSONL files, fluent and garbage documents interleaved."""
    d.mkdir(parents=True, exist_ok=True)
    docs = [(f"f{i}", t) for i, t in enumerate(fluent)] + [(f"g{i}", t) for i, t in enumerate(garbage)]
    docs.sort(key=lambda x: int(x[0][1:]))
    for k in range(files):
        with open(d / f"part-{k}.jsonl", "w", encoding="utf-8") as fh:
            for doc_id, text in docs[k::files]:
                fh.write(json.dumps({"id": doc_id, "text": text}) + "\n")
    return [str(d)]


def _outcome(out: Path) -> tuple[dict, dict]:
    kept = {d.id: d.meta["perplexity"] for d in iter_clean_documents(out)}
    rejected = {d.id: (d.meta["reject_reason"], d.meta.get("perplexity"))
                for p in sorted((out / "rejected").glob("*.zst")) for d in read_shard(p)}
    return kept, rejected


def test_data_stage_rejects_garbage_with_checkpoint_reference(ref_run, tmp_path):
    from lmforge import run
    from lmforge.checkpoint import read_pointer, set_pointer, write_checkpoint

    fluent = _held_out(4)
    inputs = _write_inputs(tmp_path / "in", fluent, [_garbage(t, 7) for t in fluent[:3]])
    cfg = config_from_dict({"name": "x", "train": {"progress": False},
                            "data": {"inputs": inputs, "id_field": "id",
                                     "perplexity": {"enabled": True, "model": str(ref_run / "checkpoints" / "latest"),
                                                    "max_perplexity": MAX_PPL, "batch_size": 4}}})
    assert run.run_data(cfg, tmp_path / "run")
    kept, rejected = _outcome(tmp_path / "run" / "data")
    assert sorted(kept) == ["f0", "f1", "f2", "f3"]
    assert {k: r for k, (r, _) in rejected.items()} == {f"g{i}": "perplexity_too_high" for i in range(3)}
    assert all(p is None or p > MAX_PPL for _, p in rejected.values())
    scorer = load_doc_scorer(ref_run)
    assert kept["f1"] == pytest.approx(scorer.perplexity(fluent[1]), abs=0.06)  # meta.perplexity, rounded to 0.1
    report = json.loads((tmp_path / "run" / "data" / "report.json").read_text())
    assert report["documents_out"] == 4
    # unchanged config and reference: skipped; `latest` moved to a new checkpoint: runs again
    assert not run.run_data(cfg, tmp_path / "run")
    ident = reference_identity(ref_run)
    assert ident["checkpoint"] == str(read_pointer(ref_run / "checkpoints", "latest").resolve())
    assert "model.safetensors" in ident["files"] and len(ident["tokenizer"]) == 64
    moved = tmp_path / "moved"
    shutil.copytree(ref_run, moved)
    ckpt = write_checkpoint(moved / "checkpoints", 151, model_state=scorer.model, optim_state=None,
                            state={"step": 151, "config": {"model": to_dict(scorer.model.cfg)}})
    cfg.data.perplexity.model = str(moved / "checkpoints" / "latest")
    assert run.run_data(cfg, tmp_path / "run")
    before = run._stage_fingerprints(cfg)
    set_pointer(moved / "checkpoints", "latest", ckpt)
    after = run._stage_fingerprints(cfg)
    assert all(before[s] != after[s] for s in ("data", "tokenizer", "tokenize", "train"))  # all downstream reruns
    assert run.run_data(cfg, tmp_path / "run")
    assert not run.run_data(cfg, tmp_path / "run")


@pytest.mark.slow
def test_workers_two_match_one(ref_run, tmp_path):
    fluent = _held_out(6)
    inputs = _write_inputs(tmp_path / "in", fluent, [_garbage(t, 3) for t in fluent[:4]], files=4)
    results = []
    for workers in (1, 2):
        cfg = DataConfig(inputs=inputs, id_field="id", workers=workers,
                         perplexity=PerplexityConfig(enabled=True, model=str(ref_run), max_perplexity=MAX_PPL))
        out = tmp_path / f"out{workers}"
        run_data_stage(cfg, out, progress=False, perplexity_lm=doc_scorer_factory(ref_run))
        results.append(_outcome(out))
    assert results[0] == results[1]
    assert len(results[0][0]) == 6 and len(results[0][1]) == 4


def test_bad_reference_paths_name_the_key(ref_run, tmp_path):
    with pytest.raises(ConfigError, match=r"data\.perplexity\.model: .*does not exist"):
        doc_scorer_factory(tmp_path / "nope")
    # a run whose only checkpoint never finished (no manifest)
    bad = tmp_path / "crashed"
    shutil.copytree(ref_run / "tokenizer", bad / "tokenizer")
    (bad / "checkpoints" / "step-000010").mkdir(parents=True)
    (bad / "checkpoints" / "step-000010" / "model.safetensors").write_bytes(b"partial")
    with pytest.raises(ConfigError, match=r"data\.perplexity\.model: .*no complete checkpoint"):
        resolve_reference(bad)
    with pytest.raises(ConfigError, match=r"data\.perplexity\.model: .*incomplete: no manifest"):
        resolve_reference(bad / "checkpoints" / "step-000010")
    # a complete checkpoint whose run has no tokenizer
    notok = tmp_path / "notok"
    shutil.copytree(ref_run / "checkpoints", notok / "checkpoints")
    with pytest.raises(ConfigError, match=r"data\.perplexity\.model: .*tokenizer\.json is missing"):
        load_doc_scorer(notok / "checkpoints" / "latest")
    # the model set but nothing injected (the data stage cannot load it itself)
    cfg = DataConfig(inputs=[str(SHAKESPEARE)], perplexity=PerplexityConfig(enabled=True, model=str(ref_run)))
    with pytest.raises(ConfigError, match=r"data\.perplexity\.model is set .* no model factory"):
        run_data_stage(cfg, tmp_path / "out", progress=False)
    with pytest.raises(ConfigError, match=r"data\.perplexity\.device"):
        PerplexityConfig(model="x", device="tpu")


def test_threads_apply_only_while_scoring(ref_run):
    text = _held_out(1)[0]
    torch.set_num_threads(2)  # the autouse fixture restores the session's value afterwards
    plain = load_doc_scorer(ref_run).perplexity(text)
    assert load_doc_scorer(ref_run, threads=1).perplexity(text) == pytest.approx(plain, rel=1e-5)
    assert torch.get_num_threads() == 2
    with pytest.raises(ConfigError, match=r"data\.perplexity\.threads"):
        PerplexityConfig(threads=-1)
