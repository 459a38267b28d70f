"""Convergence helpers the trainer's callbacks call: best-metric tracking, early stopping
and the overfitting verdict of the eval report. Pure classes: no I/O, no torch.

    stopper = EarlyStopping(patience=3, min_delta=1e-3, mode="min")
    if stopper.step(val_loss, step=step): stop training       # counted in evaluations
    stopper.best.value, stopper.best.step                      # for the `best` checkpoint pointer

Each class has `state_dict()` / `load_state_dict()` so a resumed run continues the same count.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def _check_mode(mode: str) -> None:
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")


class BestTracker:
    """Best value of a metric so far. A value improves on the best when it is lower (`min`) or
    higher (`max`) by more than `min_delta`; NaN and inf never improve."""

    def __init__(self, mode: str = "min", min_delta: float = 0.0) -> None:
        _check_mode(mode)
        if min_delta < 0:
            raise ValueError(f"min_delta must be >= 0, got {min_delta}")
        self.mode, self.min_delta = mode, min_delta
        self.value: float | None = None
        self.step: int | None = None

    def is_improvement(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.value is None:
            return True
        if self.mode == "min":
            return value < self.value - self.min_delta
        return value > self.value + self.min_delta

    def update(self, value: float, step: int | None = None) -> bool:
        """Record `value`; True when it is the new best."""
        if self.is_improvement(value):
            self.value, self.step = float(value), step
            return True
        return False

    def state_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "min_delta": self.min_delta, "value": self.value, "step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mode, self.min_delta = state["mode"], state["min_delta"]
        self.value, self.step = state["value"], state["step"]


class EarlyStopping:
    """Stop after `patience` evaluations in a row without an improvement of more than `min_delta`."""

    def __init__(self, patience: int, min_delta: float = 0.0, mode: str = "min") -> None:
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        self.patience = patience
        self.best = BestTracker(mode, min_delta)
        self.bad_evals = 0
        self.stopped = False

    def step(self, value: float, step: int | None = None) -> bool:
        """Record one evaluation; True when training should stop."""
        if self.best.update(value, step):
            self.bad_evals = 0
        else:
            self.bad_evals += 1
        self.stopped = self.bad_evals >= self.patience
        return self.stopped

    def state_dict(self) -> dict[str, Any]:
        return {"patience": self.patience, "best": self.best.state_dict(), "bad_evals": self.bad_evals,
                "stopped": self.stopped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.patience, self.bad_evals, self.stopped = state["patience"], state["bad_evals"], state["stopped"]
        self.best.load_state_dict(state["best"])


def overfitting_verdict(val: Sequence[tuple[int, float]], train: Sequence[tuple[int, float]],
                        patience: int) -> dict[str, Any]:
    """Verdict from the run's history: `val` and `train` are (step, loss) pairs in step order.
    Overfitting = validation loss rose at each of the last `patience` (or more) evaluations while
    the training loss fell over the same steps."""
    val = [(s, v) for s, v in val if math.isfinite(v)]
    out: dict[str, Any] = {"evaluations": len(val), "patience": patience}
    if len(val) < 2:
        out["verdict"] = "not enough validation evaluations for an overfitting check"
        return out
    rising = 0
    for (_, a), (_, b) in zip(reversed(val[:-1]), reversed(val[1:])):
        if b > a:
            rising += 1
        else:
            break
    best_step, best_val = min(val, key=lambda sv: sv[1])
    out.update(rising_evaluations=rising, best_step=best_step, best_val_loss=best_val, last_val_loss=val[-1][1])
    span = [v for s, v in train if val[-1 - rising][0] < s <= val[-1][0] and math.isfinite(v)]
    third = max(1, len(span) // 3)
    train_change = (sum(span[-third:]) / third - sum(span[:third]) / third) if len(span) >= 2 else None
    out["train_change_over_span"] = train_change
    if rising >= patience and train_change is not None and train_change < 0:
        out["verdict"] = (f"overfitting: validation loss rose for {rising} evaluations in a row while training "
                          f"loss fell; the best checkpoint is step {best_step}")
    elif rising >= patience:
        out["verdict"] = (f"unstable: validation loss rose for {rising} evaluations in a row and training loss "
                          f"did not fall; check the learning rate")
    elif best_step == val[-1][0]:
        out["verdict"] = "no overfitting: validation loss is still falling at the last evaluation"
    else:
        out["verdict"] = (f"no overfitting detected: validation loss rose for {rising} evaluation(s) "
                          f"(< patience {patience}); best at step {best_step}")
    return out


def run_history(metrics_path) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(val, train) loss histories from a run's metrics.jsonl (last value per step, step order)."""
    from lmforge.monitor.metrics import read_metrics

    val: dict[int, float] = {}
    train: dict[int, float] = {}
    for e in read_metrics(metrics_path):
        kind, step = e.get("kind"), e.get("step")
        if not isinstance(step, int):
            continue
        if kind == "val" and isinstance(e.get("val_loss"), (int, float)):
            val[step] = float(e["val_loss"])
        elif kind == "train" and isinstance(e.get("loss"), (int, float)):
            train[step] = float(e["loss"])
    return sorted(val.items()), sorted(train.items())
