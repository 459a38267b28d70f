"""Configuration of monitoring (`monitor:` in a run config): metrics, TensorBoard, anomalies, plots.

Loaded through `lmforge.config.load_config`; see that module for how keys are checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lmforge.validate import check as _check


@dataclass(kw_only=True)
class MonitorConfig:
    tensorboard: bool = True
    """Write TensorBoard event files to RUN_DIR/tb (needs the `tensorboard` package)."""
    tb_flush_secs: float = 10.0
    """Flush TensorBoard events at least this often (seconds)."""
    histogram_every: int = 0
    """Write weight and gradient histograms to TensorBoard every N steps; 0 = never."""
    layer_stats_every: int = 50
    """Log each layer's gradient norm and update-to-weight ratio (a `layers` event: metrics.jsonl,
    TensorBoard `layers/`, the dashboard's heat map) every N steps; 0 = never. Costs one pass over
    the gradients and a copy of the weights on those steps."""
    console: bool = False
    """Also print every train/val event as one line (for logs; the progress bar is separate)."""
    quiet: bool = False
    """No progress bars and no console metric lines (the env LMFORGE_QUIET=1 does the same)."""
    ema_window: int = 20
    """Window in steps of the EMA that smooths the logged loss (`loss_smooth`): alpha = 2 / (window + 1)
    per step, whatever `train.log_every` is."""
    system_every: float = 10.0
    """Log a `system` event (RSS, CUDA memory, GPU util/temperature/power) at most every N seconds; 0 = never."""
    plots: bool = True
    """Write PNG curves to RUN_DIR/plots when training ends."""
    anomaly: bool = True
    """Run the anomaly detector on every logged train/val/system event."""
    grad_norm_max: float = 10.0
    """A gradient norm above this is a `grad_explosion` anomaly; 0 disables the guard."""
    grad_norm_min: float = 1e-7
    """A gradient norm below this is a `grad_vanishing` anomaly; 0 disables the guard."""
    zscore_window: int = 128
    """Rolling window (train events) for the z-score detectors of loss and gradient norm."""
    zscore_threshold: float = 6.0
    """A loss or gradient norm more than this many standard deviations above the window mean is an anomaly."""
    zscore_warmup: int = 32
    """Values the window must hold before the z-score and spike detectors fire."""
    spike_factor: float = 3.0
    """A loss above `spike_factor` x the running (window) mean is a `loss_spike`; 0 disables it."""
    overfit_patience: int = 3
    """Validation loss rising for this many evaluations in a row while train loss falls is `overfitting`;
    0 disables it."""
    leak_window: int = 30
    """System samples over which steadily growing RSS is a `memory_leak`; 0 disables it."""
    leak_min_mb: float = 512.0
    """Minimum RSS growth (MiB) across `leak_window` samples to call it a leak."""
    gpu_temp_max: float = 87.0
    """A GPU temperature (C) at or above this is a `gpu_temperature` anomaly; 0 disables it."""
    # -- experiment trackers (lmforge.monitor.trackers) --
    trackers: list[str] = field(default_factory=list)
    """Also log to these trackers (rank 0): any of `wandb`, `mlflow`, `trackio` (extras of the same names).
    A missing package or unreachable server gives one warning; training goes on."""
    tracker_project: str = "lmforge"
    """W&B project, MLflow experiment or trackio project name (the run is named after the run directory)."""
    mlflow_tracking_uri: str = ""
    """MLflow store: a server URL, `file:...` or `sqlite:///...`; "" = $MLFLOW_TRACKING_URI, else
    sqlite:///RUN_DIR/mlflow.db (artifacts in RUN_DIR/mlartifacts)."""
    wandb_mode: str = ""
    """W&B mode: `online`, `offline` (RUN_DIR/wandb/offline-run-*, `wandb sync` later) or `disabled`;
    "" = W&B's default ($WANDB_MODE)."""

    def __post_init__(self) -> None:
        _check(self.tb_flush_secs > 0, "monitor.tb_flush_secs", "must be > 0")
        _check(self.histogram_every >= 0, "monitor.histogram_every", "must be >= 0 (0 = never)")
        _check(self.layer_stats_every >= 0, "monitor.layer_stats_every", "must be >= 0 (0 = never)")
        _check(self.ema_window >= 1, "monitor.ema_window", "must be >= 1")
        _check(self.system_every >= 0, "monitor.system_every", "must be >= 0 (0 = never)")
        _check(self.grad_norm_max >= 0, "monitor.grad_norm_max", "must be >= 0 (0 = off)")
        _check(self.grad_norm_min >= 0, "monitor.grad_norm_min", "must be >= 0 (0 = off)")
        _check(self.grad_norm_max == 0 or self.grad_norm_min < self.grad_norm_max, "monitor.grad_norm_min",
               "must be below monitor.grad_norm_max")
        _check(self.zscore_window >= 2, "monitor.zscore_window", "must be >= 2")
        _check(self.zscore_threshold > 0, "monitor.zscore_threshold", "must be > 0")
        _check(2 <= self.zscore_warmup <= self.zscore_window, "monitor.zscore_warmup",
               f"must be in [2, monitor.zscore_window={self.zscore_window}]")
        _check(self.spike_factor == 0 or self.spike_factor > 1, "monitor.spike_factor", "must be > 1 (0 = off)")
        _check(self.overfit_patience >= 0, "monitor.overfit_patience", "must be >= 0 (0 = off)")
        _check(self.leak_window == 0 or self.leak_window >= 3, "monitor.leak_window", "must be >= 3 (0 = off)")
        _check(self.leak_min_mb > 0, "monitor.leak_min_mb", "must be > 0")
        _check(self.gpu_temp_max >= 0, "monitor.gpu_temp_max", "must be >= 0 (0 = off)")
        bad = [t for t in self.trackers if t not in ("wandb", "mlflow", "trackio")]
        _check(not bad, "monitor.trackers", f"unknown tracker(s) {bad}; choose from wandb, mlflow, trackio")
        _check(self.wandb_mode in ("", "online", "offline", "disabled"), "monitor.wandb_mode",
               f"must be online, offline, disabled or empty, got {self.wandb_mode!r}")
