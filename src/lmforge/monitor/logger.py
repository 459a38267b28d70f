"""RunLogger: the one object the trainer logs through.

    with RunLogger(run_dir, cfg, enabled=rank == 0, step=start_step) as mon:
        mon.on_anomaly.append(fault_policy)                     # optional hook
        anomalies = mon.log("train", step, loss=..., lr=..., grad_norm=..., tokens=..., tokens_per_s=...)
        mon.log("val", step, loss=..., bpb=...)
        mon.log("sample", step, prompt=..., text=...)
        mon.log_histograms(step, model)                         # no-op unless monitor.histogram_every divides step
    # leaving the block writes the end event (finished / crashed / interrupted) and RUN/plots/*.png

One `log(kind, step, **values)` call fans out to RUN/metrics.jsonl, TensorBoard (RUN/tb, scalars as
`kind/key`) and, with `monitor.console`, one console line. Train events gain `loss_smooth` (EMA) and
`ppl`; val events gain `ppl`. Every `monitor.system_every` seconds a `system` event is added. The anomaly
detector sees train, val and system events; what it finds is logged and returned.

Keys the dashboard and plots read (all optional): train: loss, loss_smooth, lr, grad_norm, tokens
(cumulative), tokens_per_s, mfu; val: loss, ppl, bpb; system: rss_mb, cuda_allocated_mb,
cuda_reserved_mb, cuda_peak_mb, gpu_util, gpu_temp_c, gpu_power_w; sample: prompt, text;
event: event=start|end, status, pid, host.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import sys
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmforge.configtools import to_dict
from lmforge.monitor.anomaly import Anomaly, AnomalyDetector
from lmforge.monitor.config import MonitorConfig
from lmforge.monitor.metrics import MetricsWriter
from lmforge.monitor.progress import is_quiet
from lmforge.monitor.system import system_stats

if TYPE_CHECKING:
    from lmforge.config import Config

log = logging.getLogger("lmforge.monitor")


def _ppl(loss: Any) -> float | None:
    try:
        x = float(loss)
    except (TypeError, ValueError):
        return None
    if math.isnan(x):
        return math.nan
    return math.exp(x) if x < 700 else math.inf  # exp(>709) overflows a float


def _plain(v: Any) -> Any:
    """0-d tensors and numpy scalars -> Python numbers (JSON would store them as 'tensor(2.)')."""
    if hasattr(v, "item") and getattr(v, "ndim", None) == 0:
        return v.item()
    return v


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e5 else f"{v:,.0f}"
    return str(v)


class RunLogger:
    def __init__(self, run_dir: str | Path, cfg: Config | MonitorConfig | None = None, *, enabled: bool = True,
                 step: int = 0, hparams: dict[str, Any] | None = None) -> None:
        """`cfg`: the full Config (its `monitor` section is used and the rest logged as hyper-parameters)
        or a MonitorConfig. `enabled=False` (ranks > 0) writes nothing but still detects anomalies."""
        self.run_dir = Path(run_dir)
        whole = not isinstance(cfg, MonitorConfig) and cfg is not None  # the full Config (duck-typed: a leaf module)
        self.cfg = cfg.monitor if whole else (cfg or MonitorConfig())
        self.enabled = enabled
        self.quiet = is_quiet(self.cfg.quiet or None)
        self.writer = MetricsWriter(self.run_dir / "metrics.jsonl", enabled=enabled)
        self.tb = self._open_tb() if enabled and self.cfg.tensorboard else None
        self.detector = AnomalyDetector(self.cfg, writer=self.writer, console=enabled and not self.quiet,
                                        on_anomaly=[self._tb_anomaly]) if self.cfg.anomaly else None
        self.on_anomaly: list = self.detector.on_anomaly if self.detector else []
        self.anomalies: deque[Anomaly] = deque(maxlen=1000)  # the most recent ones, for callers to inspect
        self._ema: float | None = None
        self._ema_step: int | None = None
        self._last_system = 0.0
        self._last_step = step
        self._closed = False
        self.writer.log("event", step, event="start", pid=os.getpid(), host=socket.gethostname())
        self.trackers = None  # W&B / MLflow / trackio (monitor.trackers), rank 0 only
        if enabled and self.cfg.trackers:
            from lmforge.monitor.trackers import Trackers

            self.trackers = Trackers(self.run_dir, self.cfg, params=to_dict(cfg) if whole else {})
        if self.tb is not None and (hparams or whole):
            self._hparams = hparams if hparams is not None else to_dict(cfg)
        else:
            self._hparams = None

    def _open_tb(self) -> Any:
        try:
            from lmforge.monitor.tensorboard import TBWriter

            return TBWriter(self.run_dir / "tb", flush_secs=self.cfg.tb_flush_secs)
        except Exception as e:  # TensorBoard is a nicety: never stop training for it
            log.warning("TensorBoard logging disabled: %s", e)
            return None

    # ------------------------------------------------------------------ logging
    def log(self, kind: str, step: int, **values: Any) -> list[Anomaly]:
        """Log one event; returns the anomalies it triggered (already logged and passed to the hooks)."""
        self._last_step = step
        values = {k: _plain(v) for k, v in values.items()}
        if kind == "train" and "loss" in values:
            loss = _float(values["loss"])
            self._smooth(step, _float(values.get("loss_avg", loss)))
            if self._ema is not None:
                values.setdefault("loss_smooth", self._ema)
            if values["loss"] is not None:
                values.setdefault("ppl", _ppl(loss))
        elif kind == "val" and ("loss" in values or "val_loss" in values):
            if "loss" in values:
                values.setdefault("ppl", _ppl(values["loss"]))
        self.writer.log(kind, step, **values)
        if self.trackers is not None:
            self.trackers.log(kind, step, values)
        if self.tb is not None:
            if kind == "sample":
                self.tb.text("samples", f"**{values.get('prompt', '')}**{values.get('text', '')}", step)
            elif kind in ("train", "val", "system", "eval", "layers"):
                self.tb.scalars(step, values, prefix=kind)
        if self.cfg.console and self.enabled and not self.quiet and kind in ("train", "val"):
            self._console(kind, step, values)
        found = self._detect(kind, step, values)
        self.anomalies.extend(found)
        if kind == "train" and self.cfg.system_every and time.monotonic() - self._last_system >= self.cfg.system_every:
            found = found + self.log_system(step)  # already recorded by the nested log()
        return found

    def _smooth(self, step: int, loss: float) -> None:
        """EMA over steps, not events: with a loss logged every k steps (the mean of those k steps,
        `loss_avg`, when given), the old value decays by (1 - alpha)^k, so the smoothed loss lags by
        about `ema_window` steps whatever `train.log_every` is."""
        if not math.isfinite(loss):
            return
        keep = 1.0 - 2.0 / (self.cfg.ema_window + 1)
        gap = max(1, step - self._ema_step) if self._ema_step is not None else 1
        self._ema = loss if self._ema is None else loss + keep**gap * (self._ema - loss)
        self._ema_step = step

    def _detect(self, kind: str, step: int, values: dict[str, Any]) -> list[Anomaly]:
        if self.detector is None:
            return []
        if kind == "val" and ("loss" in values or "val_loss" in values):  # val_loss: the foundation's key
            return self.detector.check_val(step, values.get("loss", values.get("val_loss")), values.get("train_loss"))
        if kind in ("train", "system"):
            return self.detector.check(step, values)
        return []

    def log_system(self, step: int) -> list[Anomaly]:
        """Sample system telemetry now and log it as a `system` event."""
        self._last_system = time.monotonic()
        return self.log("system", step, **system_stats())

    def log_histograms(self, step: int, model: Any, *, force: bool = False) -> bool:
        """Weight and gradient histograms to TensorBoard every `monitor.histogram_every` steps (or `force`)."""
        every = self.cfg.histogram_every
        if self.tb is None or not (force or (every and step % every == 0)):
            return False
        self.tb.histograms(step, model)
        return True

    def _tb_anomaly(self, a: Anomaly) -> None:
        if self.tb is not None:
            self.tb.text("anomalies", f"**{a.kind}** (step {a.step}): {a.message}", a.step)

    def _console(self, kind: str, step: int, values: dict[str, Any]) -> None:
        keys = ("loss", "loss_smooth", "ppl", "bpb", "lr", "grad_norm", "tokens_per_s", "mfu")
        parts = [f"{k} {_fmt(values[k])}" for k in keys if k in values]
        line = f"step {step:>7} | {kind:<5} | " + " | ".join(parts)
        try:
            from tqdm import tqdm

            tqdm.write(line, file=sys.stderr)  # keeps an active progress bar intact
        except Exception:
            print(line, file=sys.stderr)

    # ------------------------------------------------------------------ lifecycle
    def close(self, status: str = "finished", /, **summary: Any) -> None:
        """Write the end event (`status`: finished | crashed | interrupted) with `summary` figures, the
        TensorBoard hparams, and RUN/plots; idempotent. A summary `step` becomes the event's step; keys
        that would clash with the event's own fields (kind, time, event, status) are dropped."""
        if self._closed:
            return
        self._closed = True
        step = summary.pop("step", self._last_step)
        step = step if isinstance(step, int) else self._last_step
        summary = {k: _plain(v) for k, v in summary.items() if k not in ("kind", "time", "event", "status")}
        try:
            self.writer.log("event", step, event="end", status=status, **summary)
        finally:
            self.writer.close()
            self._close_tb(summary)
            if self.trackers is not None:
                self.trackers.finish(status, summary)
        if self.enabled and self.cfg.plots:
            try:
                from lmforge.monitor.plots import plot_run

                plot_run(self.run_dir)
            except Exception as e:  # plots must never turn a finished run into a failure
                log.warning("plots not written: %s", e)

    def _close_tb(self, summary: dict[str, Any]) -> None:
        if self.tb is None:
            return
        try:
            if self._hparams is not None:
                final = {f"hparam/{k}": v for k, v in summary.items()
                         if isinstance(v, (int, float)) and not isinstance(v, bool)}
                self.tb.hparams(self._hparams, final)
            self.tb.close()
        except Exception as e:
            log.warning("TensorBoard events not completed: %s", e)

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close("finished")
        elif issubclass(exc_type, KeyboardInterrupt):
            self.close("interrupted")
        else:
            self.close("crashed", error=f"{exc_type.__name__}: {exc}")


def _float(v: Any) -> float:
    try:
        return float(v)  # also a 0-d tensor
    except (TypeError, ValueError):
        return math.nan
