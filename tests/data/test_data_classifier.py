"""Content classification: `lmforge classifier train` on small labelled text (held-out accuracy
printed), then data.classifier filters and annotates through the data stage."""

from __future__ import annotations

import json
import random

import pytest

from lmforge.cli import main
from lmforge.data.config import ClassifierConfig, DataConfig
from lmforge.data.document import iter_clean_documents, read_shard
from lmforge.data.executor import run_data_stage
from lmforge.errors import ConfigError

pytest.importorskip("fasttext")

SCIENCE = "atom energy cell experiment theory molecule physics measure data result evidence study".split()
SPAM = "buy cheap discount click offer free winner casino deal prize limited bonus".split()


def _docs(words, n, seed):
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(12)) + "." for _ in range(n)]


@pytest.fixture
def model(tmp_path, capsys):
    (tmp_path / "pos.txt").write_text("\n\n".join(_docs(SCIENCE, 150, 1)) + "\n")
    (tmp_path / "neg.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in _docs(SPAM, 150, 2)))
    out = tmp_path / "quality.bin"
    assert main(["classifier", "train", "--positive", str(tmp_path / "pos.txt"), "--negative",
                 str(tmp_path / "neg.jsonl"), "--out", str(out), "--json"]) == 0
    printed = capsys.readouterr().out
    print(printed)  # held-out accuracy, visible with -s
    result = json.loads(printed.strip().splitlines()[-1])
    assert "held out" in printed and result["held_out"] >= 10 and result["accuracy"] >= 0.9
    assert out.stat().st_size < 2_000_000  # bucket=10000 keeps it small
    return out


def test_classifier_filters_and_annotates(tmp_path, model):
    corpus = tmp_path / "corpus.txt"
    good, bad = _docs(SCIENCE, 5, 3), _docs(SPAM, 5, 4)
    corpus.write_text("\n\n".join(good + bad) + "\n")
    cfg = DataConfig(inputs=[str(corpus)], plots=False,
                     classifier=ClassifierConfig(enabled=True, model=str(model), label="hq", min_score=0.5))
    report = run_data_stage(cfg, tmp_path / "out", progress=False)
    kept = list(iter_clean_documents(tmp_path / "out"))
    assert [d.text for d in kept] == good and all(d.meta["classifier_hq"] >= 0.5 for d in kept)
    assert report["rejected"]["classifier_low_score"]["count"] == 5
    rej = [d for p in (tmp_path / "out" / "rejected").glob("*.zst") for d in read_shard(p)]
    assert all(d.meta["reject_step"] == "classifier" and d.meta["classifier_hq"] < 0.5 for d in rej)
    cfg.classifier.annotate_only = True
    run_data_stage(cfg, tmp_path / "ann", progress=False)
    scores = [d.meta["classifier_hq"] for d in iter_clean_documents(tmp_path / "ann")]
    assert len(scores) == 10 and min(scores[:5]) > max(scores[5:])


def test_classifier_config_errors(tmp_path, model):
    corpus = tmp_path / "c.txt"
    corpus.write_text("some text here\n")
    with pytest.raises(ConfigError, match=r"data.classifier.label: 'nope' is not a label .*labels: (hq, lq|lq, hq)"):
        run_data_stage(DataConfig(inputs=[str(corpus)], classifier=ClassifierConfig(
            enabled=True, model=str(model), label="nope")), tmp_path / "o", progress=False)
    with pytest.raises(ConfigError, match="data.classifier.model: .*missing.bin does not exist"):
        run_data_stage(DataConfig(inputs=[str(corpus)], classifier=ClassifierConfig(
            enabled=True, model=str(tmp_path / "missing.bin"))), tmp_path / "o2", progress=False)
    with pytest.raises(ConfigError, match="data.classifier.model"):
        ClassifierConfig(enabled=True)
