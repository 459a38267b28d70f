"""Diversity figures against hand counts; samples.jsonl with ratings; `lmforge rate` on piped stdin."""

from __future__ import annotations

import argparse
import io
import json
import math

import pytest
from lmf_evalkit import tiny_model

from lmforge.config import EvalConfig
from lmforge.errors import LmforgeError
from lmforge.eval import commands
from lmforge.eval.diversity import distinct_n, diversity_metrics, fluency_perplexities, rep_n, self_bleu
from lmforge.eval.report import write_report
from lmforge.eval.samples import collect_ratings, make_samples, ratings_summary, read_samples, write_samples
from lmforge.eval.scoring import evaluate_texts


def test_distinct_pooled_and_rep_hand_counted():
    texts = ["a b a b", "a b c"]
    assert distinct_n(texts, 1) == 3 / 7  # a b a b a b c: 3 distinct of 7
    assert distinct_n(texts, 2) == 3 / 5  # ab ba ab | ab bc
    assert distinct_n(texts, 3) == 3 / 3  # aba bab | abc
    assert distinct_n(["a"], 2) is None
    assert rep_n(texts, 2) == pytest.approx((1 / 3 + 0) / 2)  # ab ba ab: 1 repeat of 3
    assert rep_n(["x y"], 4) is None


def test_self_bleu_extremes():
    pytest.importorskip("nltk")
    same = ["the king is dead long live the king"] * 3
    assert self_bleu(same) == pytest.approx(1.0)
    disjoint = ["a b c d e", "f g h i j", "k l m n o"]
    assert self_bleu(disjoint) < 0.01
    assert self_bleu(["only one sample"]) is None


def test_fluency_is_per_sample_perplexity(tokenizer):
    model = tiny_model(tokenizer.vocab_size)
    texts = ["The king is dead.", "", "Long live the queen."]
    flu = fluency_perplexities(model, tokenizer, texts)
    assert flu[1] is None
    for t, f in ((texts[0], flu[0]), (texts[2], flu[2])):
        res, _ = evaluate_texts(model, tokenizer, [t])
        assert f == pytest.approx(math.exp(res["loss"]))
    m = diversity_metrics(texts, [4, 0, 5], flu)
    assert m["fluency_ppl_median"] == pytest.approx((flu[0] + flu[2]) / 2) and m["mean_tokens"] == 3


def test_make_samples_cycles_prompts_and_counts_tokens(tokenizer):
    model = tiny_model(tokenizer.vocab_size)
    cfg = EvalConfig(prompts=["The", "Now is"], max_new_tokens=6, temperature=1.0, seed=4)
    a = make_samples(model, tokenizer, cfg, 5, step=7)
    assert [s["prompt"] for s in a] == ["The", "Now is", "The", "Now is", "The"]
    assert all(0 <= s["tokens"] <= 6 and s["step"] == 7 for s in a)
    assert all(s["rating"] == {"fluency": None, "coherence": None, "creativity": None} for s in a)
    assert [s["text"] for s in make_samples(model, tokenizer, cfg, 5)] == [s["text"] for s in a]


def _samples(n=3):
    return [{"id": i, "prompt": "P", "text": f"text {i}", "tokens": 2, "fluency_ppl": 10.0, "settings": {},
             "step": 1, "rating": {"fluency": None, "coherence": None, "creativity": None}, "rater": None}
            for i in range(n)]


def test_collect_ratings_from_piped_input_and_resume(tmp_path):
    path = tmp_path / "samples.jsonl"
    write_samples(path, _samples())
    # sample 0: 4, 3, skip; sample 1: a bad answer, then 5, 5, 1; sample 2: quit
    answers = io.StringIO("4\n3\n\nseven\n5\n5\n1\nq\n")
    out = io.StringIO()
    assert collect_ratings(path, answers, out, rater="ab") == 2
    got = read_samples(path)
    assert got[0]["rating"] == {"fluency": 4, "coherence": 3, "creativity": None} and got[0]["rater"] == "ab"
    assert got[1]["rating"] == {"fluency": 5, "coherence": 5, "creativity": 1}
    assert got[2]["rating"]["fluency"] is None
    assert "please type a number" in out.getvalue() and "saved" in out.getvalue()
    summary = ratings_summary(got)
    assert summary["rated"] == 2 and summary["fluency"] == {"mean": 4.5, "stdev": 0.5, "n": 2}
    assert summary["creativity"]["n"] == 1 and summary["raters"] == "ab"
    # a later run asks only for the unrated sample; EOF ends it cleanly
    assert collect_ratings(path, io.StringIO("2\n"), io.StringIO()) == 0
    # rewriting with the same samples keeps the ratings
    write_samples(path, _samples())
    assert read_samples(path)[1]["rating"]["creativity"] == 1


def test_rate_command_updates_report(tmp_path, monkeypatch, capsys):
    eval_dir = tmp_path / "eval"
    write_samples(eval_dir / "samples.jsonl", _samples(2))
    write_report(eval_dir, {"run_dir": str(tmp_path), "val_loss": 2.0, "val_ppl": math.exp(2.0)})
    monkeypatch.setattr("sys.stdin", io.StringIO("5\n4\n3\n2\n2\n2\n"))
    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["rate", str(tmp_path), "--rater", "me"])
    assert args.func(args) == 0
    assert "rated 2 sample(s)" in capsys.readouterr().out
    report = json.loads((eval_dir / "report.json").read_text())
    assert report["ratings"]["fluency"]["mean"] == 3.5 and report["ratings"]["rated"] == 2
    assert "Human ratings" in (eval_dir / "report.md").read_text()
    args = parser.parse_args(["rate", str(tmp_path / "nope")])
    with pytest.raises(LmforgeError, match="lmforge eval"):
        args.func(args)


def test_rate_through_a_real_pipe(tmp_path):
    """`printf ... | lmforge rate RUN_DIR`: a real process reading a pipe, not a patched stdin."""
    import subprocess
    import sys

    write_samples(tmp_path / "eval" / "samples.jsonl", _samples(1))
    proc = subprocess.run([sys.executable, "-m", "lmforge.cli", "rate", str(tmp_path)], input="3\n4\n5\n",
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert read_samples(tmp_path / "eval" / "samples.jsonl")[0]["rating"] == {
        "fluency": 3, "coherence": 4, "creativity": 5}
