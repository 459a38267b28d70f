"""Each anomaly detector fires on its injected condition, and stays quiet on healthy training."""

import logging
import math
import random

import pytest

from lmforge.config import MonitorConfig
from lmforge.errors import ConfigError
from lmforge.monitor.anomaly import AnomalyDetector
from lmforge.monitor.metrics import MetricsWriter, read_metrics


def kinds(found):
    return [a.kind for a in found]


def healthy(det, steps=200, seed=0):
    """Feed a realistic decaying, noisy loss and a steady gradient norm; return all anomalies."""
    rng = random.Random(seed)
    found = []
    for s in range(steps):
        loss = 2.0 + 3.0 * math.exp(-s / 60) + rng.gauss(0, 0.05)
        found += det.check(s, {"loss": loss, "grad_norm": 0.8 + rng.gauss(0, 0.05)})
    return found


def test_healthy_run_has_no_anomalies():
    assert healthy(AnomalyDetector(MonitorConfig(zscore_window=64, zscore_warmup=16)), 400) == []


@pytest.mark.parametrize("loss,grad,expected", [
    (float("nan"), 1.0, ["nonfinite_loss"]),
    (float("inf"), 1.0, ["nonfinite_loss"]),
    ("nan", 1.0, ["nonfinite_loss"]),  # as MetricsWriter stores it
    (2.0, float("nan"), ["nonfinite_grad"]),
    (2.0, 11.0, ["grad_explosion"]),
    (2.0, 1e-8, ["grad_vanishing"]),
    (2.0, 10.0, []),  # the guards are strict inequalities
])
def test_absolute_guards(loss, grad, expected):
    det = AnomalyDetector(MonitorConfig())
    found = det.check(5, {"loss": loss, "grad_norm": grad})
    assert kinds(found) == expected
    assert all(a.step == 5 for a in found)
    if expected and expected[0].startswith("nonfinite"):
        assert found[0].severity == "error"


def test_zscore_waits_for_warmup_then_fires_upward_only():
    cfg = MonitorConfig(zscore_window=16, zscore_warmup=8, spike_factor=0, grad_norm_max=0)
    det = AnomalyDetector(cfg)
    vals = [1.0, 1.1] * 3  # 6 values: below warm-up, a jump must not fire yet
    for s, v in enumerate(vals):
        assert det.check(s, {"loss": v, "grad_norm": v}) == []
    assert det.check(6, {"loss": 5.0, "grad_norm": 1.0}) == []  # warm-up not reached (6 < 8)
    det = AnomalyDetector(cfg)
    for s in range(10):
        det.check(s, {"loss": 1.0 + 0.1 * (s % 2), "grad_norm": 1.0 + 0.1 * (s % 2)})
    # mean 1.05, std 0.05: 1.05 + 6*0.05 = 1.35 is the edge
    assert det.check(10, {"loss": 1.30}) == []
    assert kinds(det.check(11, {"loss": 1.6})) == ["loss_zscore"]
    assert det.check(12, {"loss": -5.0}) == []  # a sudden drop is not an anomaly
    assert kinds(det.check(13, {"grad_norm": 2.0})) == ["grad_zscore"]


def test_zscore_window_is_rolling():
    det = AnomalyDetector(MonitorConfig(zscore_window=4, zscore_warmup=4, spike_factor=0))
    for s, v in enumerate([100.0, 100.0, 1.0, 1.1, 1.0, 1.1]):  # the 100s leave the window
        det.check(s, {"loss": v})
    assert kinds(det.check(6, {"loss": 1.5})) == ["loss_zscore"]


def test_loss_spike_k_times_running_mean():
    def after_flat(loss):
        det = AnomalyDetector(MonitorConfig(zscore_threshold=1e9, spike_factor=3.0, zscore_warmup=4, zscore_window=8))
        for s in range(8):
            det.check(s, {"loss": 2.0})
        return det.check(8, {"loss": loss})

    assert after_flat(5.9) == []  # limit is 3 x 2.0
    found = after_flat(6.1)
    assert kinds(found) == ["loss_spike"] and found[0].value == 6.1 and "3.0x" in found[0].message


def test_overfitting_val_rises_while_train_falls():
    det = AnomalyDetector(MonitorConfig(overfit_patience=3))
    assert det.check_val(100, 2.0, 2.1) == []
    assert det.check_val(200, 2.1, 2.0) == []
    assert det.check_val(300, 2.2, 1.9) == []
    found = det.check_val(400, 2.3, 1.8)
    assert kinds(found) == ["overfitting"] and found[0].step == 400
    assert "2.0000 -> 2.3000" in found[0].message


def test_no_overfitting_when_train_rises_too_or_val_recovers():
    det = AnomalyDetector(MonitorConfig(overfit_patience=2))
    for s, (v, t) in enumerate([(2.0, 2.0), (2.1, 2.1), (2.2, 2.2)]):  # both rising: divergence, not overfit
        assert det.check_val(s, v, t) == []
    det = AnomalyDetector(MonitorConfig(overfit_patience=2))
    for s, (v, t) in enumerate([(2.0, 2.0), (2.1, 1.9), (2.05, 1.8), (2.1, 1.7)]):  # the streak broke
        assert det.check_val(s, v, t) == []


def test_overfitting_uses_smoothed_train_loss_when_not_given():
    det = AnomalyDetector(MonitorConfig(overfit_patience=2, ema_window=1))  # ema_window 1 = last value
    found = []
    for s, (tr, v) in enumerate([(3.0, 2.0), (2.5, 2.1), (2.0, 2.2)]):
        det.check(s, {"loss": tr})
        found += det.check_val(s, v)
    assert kinds(found) == ["overfitting"]
    assert kinds(det.check_val(9, float("nan"))) == ["nonfinite_val_loss"]


def test_memory_leak_steady_growth_only():
    cfg = MonitorConfig(leak_window=10, leak_min_mb=100)
    det = AnomalyDetector(cfg)
    found = []
    for s in range(10):
        found += det.check(s, {"rss_mb": 1000 + 20 * s})  # +180 MiB, monotone
    assert kinds(found) == ["memory_leak"] and found[0].step == 9 and found[0].value == 1180
    det = AnomalyDetector(cfg)
    saw = [1000, 1400, 1000, 1400, 1000, 1400, 1000, 1400, 1000, 1400]  # noisy, not steady
    assert [a for s, v in enumerate(saw) for a in det.check(s, {"rss_mb": v})] == []
    det = AnomalyDetector(cfg)
    flat = [a for s in range(30) for a in det.check(s, {"cuda_allocated_mb": 500 + s})]  # 29 MiB growth
    assert flat == []


def test_gpu_temperature_fires_once_per_crossing_and_ecc_on_increase():
    det = AnomalyDetector(MonitorConfig(gpu_temp_max=85))
    temps = [70, 86, 90, 84, 86, 75, 88]  # fires at 86, not again until it cooled below 80
    fired = [s for s, t in enumerate(temps) if det.check(s, {"gpu_temp_c": t})]
    assert fired == [1, 6]
    det = AnomalyDetector(MonitorConfig())
    ecc = [0, 0, 2, 2, 3]
    fired = [s for s, n in enumerate(ecc) for a in det.check(s, {"gpu_ecc_errors": n}) if a.kind == "gpu_ecc"]
    assert fired == [2, 4]


def test_anomaly_is_event_warning_and_hook(tmp_path, caplog):
    w = MetricsWriter(tmp_path / "metrics.jsonl")
    seen = []
    det = AnomalyDetector(MonitorConfig(), writer=w, on_anomaly=[seen.append])
    with caplog.at_level(logging.WARNING, logger="lmforge.monitor"):
        found = det.check(42, {"loss": 1.0, "grad_norm": 50.0})
    w.close()
    assert seen == found and kinds(found) == ["grad_explosion"]
    (ev,) = list(read_metrics(tmp_path / "metrics.jsonl", kind="anomaly"))
    assert ev["step"] == 42 and ev["type"] == "grad_explosion" and ev["value"] == 50.0
    assert "step 42: anomaly grad_explosion" in caplog.text
    assert det.count == {"grad_explosion": 1}


@pytest.mark.parametrize("override,key", [
    ({"zscore_warmup": 1}, "monitor.zscore_warmup"),
    ({"zscore_window": 8, "zscore_warmup": 9}, "monitor.zscore_warmup"),
    ({"spike_factor": 0.5}, "monitor.spike_factor"),
    ({"grad_norm_min": 20.0}, "monitor.grad_norm_min"),
    ({"leak_window": 2}, "monitor.leak_window"),
    ({"ema_window": 0}, "monitor.ema_window"),
])
def test_monitor_config_validation_names_key(override, key):
    with pytest.raises(ConfigError, match=key):
        MonitorConfig(**override)
