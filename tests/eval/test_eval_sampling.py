"""Sampling filters against hand-computed distributions (and HF's own processors when installed)."""

from __future__ import annotations

import math

import pytest
import torch
from lmf_evalkit import ScriptedModel

from lmforge.errors import LmforgeError
from lmforge.infer.generate import generate_tokens
from lmforge.infer.sampling import apply_min_p, apply_repetition_penalty, apply_top_k, apply_top_p, filter_logits

P = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
LOGITS = P.log()
INF = float("-inf")


def _probs(logits: torch.Tensor) -> list[float]:
    return [round(x, 6) for x in logits.softmax(-1)[0].tolist()]


def test_top_k_keeps_k_best_and_ties():
    assert apply_top_k(torch.tensor([[1.0, 2.0, 3.0, 4.0]]), 2).tolist() == [[INF, INF, 3.0, 4.0]]
    assert apply_top_k(torch.tensor([[1.0, 3.0, 3.0, 2.0]]), 1).tolist() == [[INF, 3.0, 3.0, INF]]
    assert apply_top_k(LOGITS, 0).equal(LOGITS)


def test_top_p_hand_computed():
    # ascending cumulative mass: 0.05, 0.20, 0.50, 1.0; drop the tokens with cum <= 1 - p
    assert _probs(apply_top_p(LOGITS, 0.8)) == [0.625, 0.375, 0.0, 0.0]
    assert _probs(apply_top_p(LOGITS, 0.9)) == [round(x / 0.95, 6) for x in (0.5, 0.3, 0.15)] + [0.0]
    assert _probs(apply_top_p(LOGITS, 0.01)) == [1.0, 0.0, 0.0, 0.0]  # the top token always survives


def test_min_p_hand_computed():
    assert _probs(apply_min_p(LOGITS, 0.2)) == [round(x / 0.95, 6) for x in (0.5, 0.3, 0.15)] + [0.0]
    assert _probs(apply_min_p(LOGITS, 0.5)) == [0.625, 0.375, 0.0, 0.0]  # threshold 0.25
    assert _probs(apply_min_p(LOGITS, 1.0)) == [1.0, 0.0, 0.0, 0.0]


def test_repetition_penalty_divides_positive_multiplies_negative():
    logits = torch.tensor([[2.0, -2.0, 1.0]])
    seen = torch.tensor([[True, True, False]])
    assert apply_repetition_penalty(logits, seen, 2.0).tolist() == [[1.0, -4.0, 1.0]]


def test_order_temperature_before_top_p():
    # temperature 0.5 squares the probabilities: [.25, .09, .0225, .0025] / .365, so top-p 0.9 keeps
    # two tokens; applied before the temperature it would keep three.
    out = _probs(filter_logits(LOGITS, temperature=0.5, top_p=0.9))
    assert out == [round(0.25 / 0.34, 6), round(0.09 / 0.34, 6), 0.0, 0.0]
    assert _probs(apply_top_p(LOGITS, 0.9))[2] > 0


def test_order_penalty_before_temperature_and_greedy_keeps_penalty():
    logits = torch.tensor([[3.0, 2.0, -1.0]])
    seen = torch.tensor([[True, False, False]])
    # penalty 2: [1.5, 2, -1]; temperature 0.5: [3, 4, -2]
    out = filter_logits(logits, seen, temperature=0.5, repetition_penalty=2.0)
    assert out.tolist() == [[3.0, 4.0, -2.0]]
    greedy = filter_logits(logits, seen, temperature=0.0, top_k=1, repetition_penalty=2.0)
    assert greedy.tolist() == [[1.5, 2.0, -1.0]]  # greedy skips the warpers, keeps the penalty


def test_sampled_frequencies_match_filtered_distribution():
    model = ScriptedModel(4, logits=LOGITS[0])
    n = 4000
    toks = generate_tokens(model, [[0]] * n, max_new_tokens=1, temperature=1.0, top_p=0.9, seed=3)
    freq = torch.bincount(torch.tensor([t[0] for t in toks]), minlength=4).double() / n
    expect = torch.tensor([0.5, 0.3, 0.15, 0.0]) / 0.95
    assert freq[3] == 0
    assert torch.allclose(freq, expect.double(), atol=0.03), freq


def test_seed_reproducible_and_private():
    model = ScriptedModel(4, logits=LOGITS[0])
    torch.manual_seed(0)
    before = torch.rand(1)
    a = generate_tokens(model, [[0]] * 8, max_new_tokens=5, seed=11)
    b = generate_tokens(model, [[0]] * 8, max_new_tokens=5, seed=11)
    c = generate_tokens(model, [[0]] * 8, max_new_tokens=5, seed=12)
    assert a == b and a != c
    torch.manual_seed(0)
    assert torch.rand(1).equal(before)


@pytest.mark.parametrize("kw", [dict(temperature=-1), dict(top_k=-1), dict(top_p=0), dict(top_p=1.5),
                                dict(min_p=2.0), dict(repetition_penalty=0)])
def test_bad_settings_raise(kw):
    with pytest.raises(LmforgeError, match=next(iter(kw))):
        generate_tokens(ScriptedModel(4, logits=LOGITS[0]), [[0]], max_new_tokens=1, **kw)


def test_matches_transformers_processors():
    lp = pytest.importorskip("transformers.generation.logits_process")
    torch.manual_seed(0)
    logits = torch.randn(3, 50) * 3
    ids = torch.randint(0, 50, (3, 7))
    seen = torch.zeros(3, 50, dtype=torch.bool).scatter_(1, ids, True)
    ours = filter_logits(logits, seen, temperature=0.7, top_k=20, top_p=0.8, min_p=0.05, repetition_penalty=1.3)
    theirs = logits.clone()
    for proc in (lp.RepetitionPenaltyLogitsProcessor(1.3), lp.TemperatureLogitsWarper(0.7),
                 lp.TopKLogitsWarper(20), lp.TopPLogitsWarper(0.8), lp.MinPLogitsWarper(0.05)):
        theirs = proc(ids, theirs)
    assert torch.equal(ours.isinf(), theirs.isinf())
    assert torch.allclose(ours[~ours.isinf()], theirs[~theirs.isinf()], atol=1e-6)
    assert math.isclose(ours.softmax(-1).sum().item(), 3.0, rel_tol=1e-6)


def test_repetition_penalty_in_greedy_generation_hand_computed():
    # logits 2.0, 1.9, 1.8, 1.7, 1.6; prompt [0]; penalty 2 halves every seen (positive) logit,
    # so greedy walks down the list: 1, 2, 3, 4, then 0 (1.0) beats the halved others (<= 0.95).
    model = ScriptedModel(5, logits=torch.tensor([2.0, 1.9, 1.8, 1.7, 1.6]))
    out = generate_tokens(model, [[0]], max_new_tokens=6, temperature=0.0, repetition_penalty=2.0)
    assert out == [[1, 2, 3, 4, 0, 0]]
    assert generate_tokens(model, [[0]], max_new_tokens=3, temperature=0.0) == [[0, 0, 0]]
