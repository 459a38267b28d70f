"""Anomaly detection on the metrics stream: the trainer's early-warning system.

    det = AnomalyDetector(cfg.monitor, writer=metrics_writer)
    for a in det.check(step, {"loss": loss, "grad_norm": gn}):   # every train event
        fault_policy(a)                                           # skip / rollback / abort
    det.check_val(step, val_loss)                                 # every evaluation
    det.check(step, system_stats())                               # rss_mb, gpu_temp_c, ...

Detectors (anomaly `kind` in brackets):
* absolute guards: non-finite loss or gradient norm [nonfinite_loss, nonfinite_grad], gradient norm
  above `grad_norm_max` [grad_explosion] or below `grad_norm_min` [grad_vanishing];
* relative: z-score of loss / gradient norm against a rolling window, upward only (a falling loss is
  the point of training) [loss_zscore, grad_zscore]; loss above `spike_factor` x the window mean
  [loss_spike]. Both wait for `zscore_warmup` values;
* validation loss rising `overfit_patience` evaluations in a row while the train loss falls [overfitting];
* RSS or CUDA memory growing steadily by `leak_min_mb` over `leak_window` samples [memory_leak];
* GPU temperature at or above `gpu_temp_max` [gpu_temperature], ECC error count rising [gpu_ecc].

Each anomaly is returned, written as a `kind: anomaly` metrics event (its own kind in `type`), logged
as a warning on the `lmforge.monitor` logger, and passed to every `on_anomaly` hook.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from lmforge.monitor.config import MonitorConfig

log = logging.getLogger("lmforge.monitor")

KINDS = (
    "nonfinite_loss", "nonfinite_grad", "nonfinite_val_loss", "grad_explosion", "grad_vanishing",
    "loss_zscore", "grad_zscore", "loss_spike", "overfitting", "memory_leak", "gpu_temperature", "gpu_ecc",
)


@dataclass
class Anomaly:
    kind: str
    """One of KINDS."""
    step: int
    message: str
    """A sentence a person can act on."""
    value: float | None = None
    """The offending value (loss, gradient norm, MiB, degrees, ...)."""
    severity: str = "warning"
    """`error` for values that make the update unusable (non-finite), else `warning`."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _num(v: Any) -> float | None:
    """Metric value as float; the strings 'nan'/'inf' written by MetricsWriter count as numbers."""
    if v is None or isinstance(v, bool):
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


class _Rolling:
    """Mean and standard deviation of the last `size` values (O(1) per value)."""

    def __init__(self, size: int) -> None:
        self.values: deque[float] = deque(maxlen=size)
        self._sum = 0.0
        self._sq = 0.0

    def add(self, v: float) -> None:
        if len(self.values) == self.values.maxlen:
            old = self.values[0]
            self._sum -= old
            self._sq -= old * old
        self.values.append(v)
        self._sum += v
        self._sq += v * v

    def __len__(self) -> int:
        return len(self.values)

    def mean(self) -> float:
        return self._sum / len(self.values)

    def std(self) -> float:
        n = len(self.values)
        m = self._sum / n
        return math.sqrt(max(self._sq / n - m * m, 0.0))


class AnomalyDetector:
    def __init__(self, cfg: MonitorConfig | None = None, *, writer: Any = None, console: bool = True,
                 on_anomaly: list[Callable[[Anomaly], None]] | None = None) -> None:
        """`writer`: a MetricsWriter (or anything with `log(kind, step, **values)`) for anomaly events."""
        self.cfg = cfg or MonitorConfig()
        self.writer = writer
        self.console = console
        self.on_anomaly: list[Callable[[Anomaly], None]] = list(on_anomaly or [])
        self.count: dict[str, int] = {}
        self._loss = _Rolling(self.cfg.zscore_window)
        self._grad = _Rolling(self.cfg.zscore_window)
        self._train_ema: float | None = None
        self._val: list[tuple[float, float | None]] = []  # (val loss, train loss) per evaluation
        self._rising = 0
        self._mem: dict[str, deque[float]] = {}
        self._hot = False
        self._ecc: float | None = None

    # ------------------------------------------------------------------ public API
    def check(self, step: int, metrics: dict[str, Any]) -> list[Anomaly]:
        """Check one event's values (`loss`, `grad_norm`, `rss_mb`, `cuda_allocated_mb`, `gpu_temp_c`,
        `gpu_ecc_errors`; others are ignored). Returns the anomalies found, already emitted."""
        found: list[Anomaly] = []
        if "loss" in metrics:
            found += self._check_loss(step, _num(metrics["loss"]))
        if "grad_norm" in metrics:
            found += self._check_grad(step, _num(metrics["grad_norm"]))
        for key in ("rss_mb", "cuda_allocated_mb"):
            if _num(metrics.get(key)) is not None:
                found += self._check_leak(step, key, _num(metrics[key]))
        if _num(metrics.get("gpu_temp_c")) is not None:
            found += self._check_temp(step, _num(metrics["gpu_temp_c"]))
        if _num(metrics.get("gpu_ecc_errors")) is not None:
            found += self._check_ecc(step, _num(metrics["gpu_ecc_errors"]))
        return self._emit(found)

    def check_val(self, step: int, val_loss: float, train_loss: float | None = None) -> list[Anomaly]:
        """Check one evaluation. `train_loss` defaults to the smoothed train loss seen by `check`."""
        v = _num(val_loss)
        if v is None or not math.isfinite(v):
            return self._emit([Anomaly("nonfinite_val_loss", step, f"validation loss is {val_loss}", v, "error")])
        t = _num(train_loss) if train_loss is not None else self._train_ema
        found: list[Anomaly] = []
        p = self.cfg.overfit_patience
        if self._val and v > self._val[-1][0]:
            self._rising += 1
        else:
            self._rising = 0
        self._val.append((v, t))
        if p and self._rising == p:
            t0 = self._val[-1 - p][1]
            if t is not None and t0 is not None and t < t0:
                v0 = self._val[-1 - p][0]
                found.append(Anomaly(
                    "overfitting", step,
                    f"validation loss rose {p} evaluations in a row ({v0:.4f} -> {v:.4f}) while train loss fell "
                    f"({t0:.4f} -> {t:.4f}): the model is overfitting; stop early, add data or regularise", v))
        return self._emit(found)

    # ------------------------------------------------------------------ detectors
    def _check_loss(self, step: int, loss: float | None) -> list[Anomaly]:
        if loss is None:
            return []
        if not math.isfinite(loss):
            return [Anomaly("nonfinite_loss", step, f"loss is {loss}: the update is unusable", loss, "error")]
        cfg, out = self.cfg, []
        if len(self._loss) >= cfg.zscore_warmup:
            mean, std = self._loss.mean(), self._loss.std()
            z = (loss - mean) / max(std, 1e-3 * abs(mean), 1e-12)  # floor: a flat window is not 0-noise
            if z > cfg.zscore_threshold:
                out.append(Anomaly("loss_zscore", step, f"loss {loss:.4g} is {z:.1f} sigma above the mean "
                                   f"{mean:.4g} of the last {len(self._loss)} steps", loss))
            if cfg.spike_factor and mean > 0 and loss > cfg.spike_factor * mean:
                out.append(Anomaly("loss_spike", step, f"loss {loss:.4g} is {loss / mean:.1f}x the running "
                                   f"mean {mean:.4g} (limit {cfg.spike_factor:g}x)", loss))
        self._loss.add(loss)
        alpha = 2.0 / (cfg.ema_window + 1)
        self._train_ema = loss if self._train_ema is None else alpha * loss + (1 - alpha) * self._train_ema
        return out

    def _check_grad(self, step: int, g: float | None) -> list[Anomaly]:
        if g is None:
            return []
        if not math.isfinite(g):
            return [Anomaly("nonfinite_grad", step, f"gradient norm is {g}: the update is unusable", g, "error")]
        cfg, out = self.cfg, []
        if cfg.grad_norm_max and g > cfg.grad_norm_max:
            out.append(Anomaly("grad_explosion", step, f"gradient norm {g:.4g} > {cfg.grad_norm_max:g}: "
                               "gradients are exploding; lower the learning rate or check the data", g))
        if cfg.grad_norm_min and g < cfg.grad_norm_min:
            out.append(Anomaly("grad_vanishing", step, f"gradient norm {g:.3g} < {cfg.grad_norm_min:g}: "
                               "gradients vanished; the model has stopped learning", g))
        if len(self._grad) >= cfg.zscore_warmup:
            mean, std = self._grad.mean(), self._grad.std()
            z = (g - mean) / max(std, 1e-3 * abs(mean), 1e-12)
            if z > cfg.zscore_threshold:
                out.append(Anomaly("grad_zscore", step, f"gradient norm {g:.4g} is {z:.1f} sigma above the mean "
                                   f"{mean:.4g} of the last {len(self._grad)} steps", g))
        self._grad.add(g)
        return out

    def _check_leak(self, step: int, key: str, mb: float) -> list[Anomaly]:
        n = self.cfg.leak_window
        if not n:
            return []
        window = self._mem.setdefault(key, deque(maxlen=n))
        window.append(mb)
        if len(window) < n:
            return []
        vals = list(window)
        growth = vals[-1] - vals[0]
        # "steadily": at least 80% of the successive samples did not shrink (1 MiB of noise allowed)
        steady = sum(b >= a - 1.0 for a, b in zip(vals, vals[1:])) >= 0.8 * (n - 1)
        if growth >= self.cfg.leak_min_mb and steady:
            window.clear()  # the next report needs a fresh window of growth
            what = "process RSS" if key == "rss_mb" else "CUDA allocated memory"
            return [Anomaly("memory_leak", step, f"{what} grew steadily by {growth:.0f} MiB over the last {n} "
                            f"samples (now {mb:.0f} MiB): likely a leak (tensors kept alive, growing caches)", mb)]
        return []

    def _check_temp(self, step: int, t: float) -> list[Anomaly]:
        limit = self.cfg.gpu_temp_max
        if not limit:
            return []
        if t >= limit and not self._hot:
            self._hot = True  # report a crossing once; re-arm after 5 degrees of cooling
            return [Anomaly("gpu_temperature", step, f"GPU temperature {t:.0f} C >= {limit:g} C: the GPU will "
                            "throttle; check cooling", t)]
        if t < limit - 5:
            self._hot = False
        return []

    def _check_ecc(self, step: int, n: float) -> list[Anomaly]:
        prev, self._ecc = self._ecc, n
        if n > (prev if prev is not None else 0):
            return [Anomaly("gpu_ecc", step, f"GPU uncorrected ECC errors rose to {n:.0f}: results may be corrupt; "
                            "stop and check the GPU", n, "error")]
        return []

    # ------------------------------------------------------------------ output
    def _emit(self, found: list[Anomaly]) -> list[Anomaly]:
        for a in found:
            self.count[a.kind] = self.count.get(a.kind, 0) + 1
            if self.writer is not None:
                self.writer.log("anomaly", a.step, type=a.kind, message=a.message, value=a.value,
                                severity=a.severity)
            if self.console:
                log.warning("step %d: anomaly %s: %s", a.step, a.kind, a.message)
            for hook in self.on_anomaly:
                hook(a)
        return found
