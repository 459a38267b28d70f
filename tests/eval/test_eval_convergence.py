"""Convergence helpers: best tracking, early stopping, plateau detection, overfitting verdict."""

from __future__ import annotations

import math

import pytest

from lmforge.monitor.convergence import (
    BestTracker,
    EarlyStopping,
    overfitting_verdict,
    run_history,
)
from lmforge.monitor.metrics import MetricsWriter


def test_best_tracker_modes_delta_and_nan():
    b = BestTracker("min", min_delta=0.1)
    assert b.update(3.0, step=1) and b.value == 3.0 and b.step == 1
    assert not b.update(2.95, step=2)  # not better by more than min_delta
    assert not b.update(math.nan, step=3) and not b.update(-math.inf, step=3)
    assert b.update(2.8, step=4) and (b.value, b.step) == (2.8, 4)
    m = BestTracker("max")
    assert m.update(0.5) and not m.update(0.4) and m.update(0.6)
    with pytest.raises(ValueError, match="mode"):
        BestTracker("up")


def test_early_stopping_counts_evaluations_and_resumes():
    es = EarlyStopping(patience=2, min_delta=0.001, mode="min")
    assert [es.step(v, step=s) for s, v in enumerate([3.0, 2.0, 1.9995])] == [False, False, False]
    assert es.bad_evals == 1 and es.best.value == 2.0 and es.best.step == 1
    state = es.state_dict()
    again = EarlyStopping(patience=5)
    again.load_state_dict(state)
    assert again.step(2.5, step=3) is True and again.stopped  # second bad evaluation in a row
    assert es.step(1.5, step=3) is False and es.bad_evals == 0  # an improvement resets the count
    acc = EarlyStopping(patience=1, mode="max")
    assert acc.step(0.7) is False and acc.step(0.6) is True


VAL = [(100, 3.0), (200, 2.5), (300, 2.6), (400, 2.7), (500, 2.8)]


def test_overfitting_verdicts():
    falling = [(s, 4.0 - s / 250) for s in range(10, 510, 10)]
    out = overfitting_verdict(VAL, falling, patience=3)
    assert out["verdict"].startswith("overfitting") and out["rising_evaluations"] == 3 and out["best_step"] == 200
    rising = [(s, 1.0 + s / 250) for s in range(10, 510, 10)]
    assert overfitting_verdict(VAL, rising, patience=3)["verdict"].startswith("unstable")
    assert overfitting_verdict(VAL, falling, patience=4)["verdict"].startswith("no overfitting detected")
    improving = [(100, 3.0), (200, 2.5), (300, 2.4)]
    assert overfitting_verdict(improving, falling, patience=2)["verdict"].startswith("no overfitting: validation")
    assert overfitting_verdict(VAL[:1], falling, patience=2)["verdict"].startswith("not enough")


def test_run_history_from_metrics_file(tmp_path):
    w = MetricsWriter(tmp_path / "metrics.jsonl")
    for s, v in VAL:
        w.log("train", s, loss=v + 1)
        w.log("val", s, val_loss=v)
    w.log("system", 500, rss_mb=1.0)
    w.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 600, "kind": "val", "val_lo')  # a torn last line after a crash
    val, train = run_history(tmp_path / "metrics.jsonl")
    assert val == VAL and train == [(s, v + 1) for s, v in VAL]
