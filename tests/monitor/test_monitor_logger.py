"""RunLogger fan-out (metrics.jsonl + TensorBoard + console), system telemetry, progress bars, plots."""

import math

import pytest

from lmforge.config import Config, MonitorConfig
from lmforge.errors import LmforgeError
from lmforge.monitor.logger import RunLogger
from lmforge.monitor.metrics import read_metrics
from lmforge.monitor.progress import is_quiet, progress
from lmforge.monitor.system import rss_mb, system_stats


def test_system_stats_on_cpu():
    s = system_stats()
    assert 1 < s["rss_mb"] < 100_000
    assert abs(s["rss_mb"] - rss_mb()) < 50
    assert not any(k.startswith(("cuda_", "gpu_")) for k in s)  # no CUDA here: keys absent, no error


def test_system_stats_falls_back_to_proc(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_psutil(name, *a, **k):
        if name == "psutil":
            raise ImportError("psutil hidden by the test")
        return real_import(name, *a, **k)

    expected = rss_mb()
    monkeypatch.setattr(builtins, "__import__", no_psutil)
    got = rss_mb()
    assert got is not None and abs(got - expected) < 50


def test_smoothed_loss_follows_steps_not_events(tmp_path):
    """A loss logged every 10 steps is smoothed over `ema_window` steps: after a drop it catches up in
    about that many steps (an EMA over events would lag 10x longer), and `loss_avg` is what it smooths."""
    with RunLogger(tmp_path, MonitorConfig(ema_window=20, system_every=0, plots=False, tensorboard=False)) as mon:
        for step in range(10, 101, 10):
            mon.log("train", step, loss=9.0, loss_avg=5.0)
        for step in range(110, 141, 10):
            mon.log("train", step, loss=1.0, loss_avg=1.0)
    smooth = {e["step"]: e["loss_smooth"] for e in read_metrics(tmp_path / "metrics.jsonl", "train")}
    assert smooth[100] == pytest.approx(5.0)  # the interval means, not the single logged step's loss
    keep = (1 - 2 / 21) ** 10
    assert smooth[110] == pytest.approx(1.0 + keep * 4.0)
    assert smooth[140] == pytest.approx(1.0 + keep**4 * 4.0) and smooth[140] < 1.25


def test_run_logger_fans_out_and_smooths(tmp_path):
    cfg = Config(monitor=MonitorConfig(ema_window=3, system_every=0, plots=False, tensorboard=False))
    with RunLogger(tmp_path, cfg) as mon:
        mon.log("train", 1, loss=4.0, lr=1e-3, grad_norm=0.5)
        mon.log("train", 2, loss=2.0, lr=1e-3, grad_norm=0.5)
        mon.log("val", 2, loss=math.log(10.0))
        mon.log("sample", 2, prompt="The ", text="cat")
    events = list(read_metrics(tmp_path / "metrics.jsonl"))
    assert [e["kind"] for e in events] == ["event", "train", "train", "val", "sample", "event"]
    start, t1, t2, val, _, end = events
    assert start["event"] == "start" and start["pid"] > 0 and start["host"]
    assert t1["loss_smooth"] == 4.0 and t2["loss_smooth"] == pytest.approx(0.5 * 2.0 + 0.5 * 4.0)  # alpha 2/(3+1)
    assert t2["ppl"] == pytest.approx(math.exp(2.0))
    assert val["ppl"] == pytest.approx(10.0)
    assert end["event"] == "end" and end["status"] == "finished" and end["step"] == 2
    # the trainer passes its summary: keys such as `step` must not collide with the event's own fields
    mon = RunLogger(tmp_path / "summary", MonitorConfig(plots=False, tensorboard=False, system_every=0))
    mon.close("finished", step=40, status="x", kind="y", val_loss=2.5, wall_time=3.0)
    mon.close("crashed")  # idempotent
    end = list(read_metrics(tmp_path / "summary" / "metrics.jsonl"))[-1]
    assert (end["step"], end["kind"], end["status"], end["val_loss"]) == (40, "event", "finished", 2.5)


def test_run_logger_records_crash_and_returns_anomalies(tmp_path):
    hooked = []
    with pytest.raises(RuntimeError):
        with RunLogger(tmp_path, MonitorConfig(plots=False, tensorboard=False, system_every=0)) as mon:
            mon.on_anomaly.append(hooked.append)
            found = mon.log("train", 7, loss=float("nan"), grad_norm=1.0)
            assert [a.kind for a in found] == ["nonfinite_loss"] and hooked == found
            raise RuntimeError("boom")
    events = list(read_metrics(tmp_path / "metrics.jsonl"))
    assert events[1]["loss"] == "nan"
    assert [e["type"] for e in events if e["kind"] == "anomaly"] == ["nonfinite_loss"]
    assert events[-1]["status"] == "crashed" and "boom" in events[-1]["error"]
    with pytest.raises(KeyboardInterrupt):
        with RunLogger(tmp_path / "ctrl-c", MonitorConfig(plots=False, tensorboard=False, system_every=0)):
            raise KeyboardInterrupt
    assert list(read_metrics(tmp_path / "ctrl-c" / "metrics.jsonl"))[-1]["status"] == "interrupted"


def test_run_logger_system_events_and_disabled_rank(tmp_path):
    cfg = MonitorConfig(system_every=0.001, plots=False, tensorboard=False, leak_window=3, leak_min_mb=1e-9)
    with RunLogger(tmp_path / "r0", cfg) as mon:
        mon.log("train", 1, loss=1.0)
        assert mon.log_system(1) == []
        ballast = bytearray(64 << 20)  # RSS grows by 64 MiB: a "leak" at this tiny threshold
        ballast[:: 4096] = b"x" * len(ballast[:: 4096])
        found = mon.log("train", 2, loss=1.0, grad_norm=20.0)
        del ballast
        assert [a.kind for a in found] == ["grad_explosion", "memory_leak"]
        assert [a.kind for a in mon.anomalies] == ["grad_explosion", "memory_leak"]  # each recorded once
    sys_events = list(read_metrics(tmp_path / "r0" / "metrics.jsonl", kind="system"))
    assert len(sys_events) == 3 and sys_events[0]["rss_mb"] > 1
    with RunLogger(tmp_path / "r1", MonitorConfig(plots=False), enabled=False) as mon:
        assert [a.kind for a in mon.log("train", 1, loss=1.0, grad_norm=99.0)] == ["grad_explosion"]
    assert not (tmp_path / "r1").exists()  # rank > 0 writes nothing


def test_console_lines_and_quiet(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("LMFORGE_QUIET", raising=False)
    with RunLogger(tmp_path / "a", MonitorConfig(console=True, plots=False, tensorboard=False, system_every=0)) as m:
        m.log("train", 10, loss=2.5, lr=3e-4)
    assert "step      10 | train | loss 2.5 | loss_smooth 2.5 | ppl 12.18 | lr 0.0003" in capsys.readouterr().err
    monkeypatch.setenv("LMFORGE_QUIET", "1")
    with RunLogger(tmp_path / "b", MonitorConfig(console=True, plots=False, tensorboard=False, system_every=0)) as m:
        m.log("train", 10, loss=2.5, grad_norm=50.0)
    assert capsys.readouterr().err == ""


def test_progress_bar_rate_eta_and_quiet(monkeypatch, capsys):
    monkeypatch.delenv("LMFORGE_QUIET", raising=False)
    assert list(progress(range(5), "clean", "doc")) == [0, 1, 2, 3, 4]
    err = capsys.readouterr().err
    assert "clean: 100%" in err and "5/5" in err and "doc/s" in err and "<00:00" in err  # rate and ETA
    bar = progress(10, desc="train", unit="step")
    bar.update(4)
    bar.close()
    assert "4/10" in capsys.readouterr().err
    monkeypatch.setenv("LMFORGE_QUIET", "1")
    assert is_quiet() and not is_quiet(False) and is_quiet(True)
    assert list(progress(iter([1, 2]), "x")) == [1, 2]
    assert capsys.readouterr().err == ""


def test_tensorboard_scalars_text_histograms_hparams(tmp_path):
    pytest.importorskip("tensorboard")
    import torch
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = Config(monitor=MonitorConfig(histogram_every=2, plots=False, system_every=0))
    model = torch.nn.Linear(3, 2)
    model(torch.randn(4, 3)).sum().backward()
    with RunLogger(tmp_path, cfg) as mon:
        for s in (1, 2, 3):
            mon.log("train", s, loss=3.0 - s, lr=1e-3)
            assert mon.log_histograms(s, model) == (s == 2)
        mon.log("val", 3, loss=1.5)
        mon.log("sample", 3, prompt="Once", text=" upon a time")
        mon.log("train", 4, loss=1.0, grad_norm=1e3)  # an anomaly goes to TensorBoard text too
    acc = EventAccumulator(str(tmp_path / "tb"), size_guidance={"histograms": 0, "scalars": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    assert [(e.step, e.value) for e in acc.Scalars("train/loss")] == [(1, 2.0), (2, 1.0), (3, 0.0), (4, 1.0)]
    assert [e.value for e in acc.Scalars("val/loss")] == [1.5]
    assert {"weights/weight", "weights/bias", "grads/weight", "grads/bias"} <= set(tags["histograms"])
    assert [e.step for e in acc.Histograms("weights/weight")] == [2]
    assert {"samples/text_summary", "anomalies/text_summary"} <= set(tags["tensors"])
    assert set(acc.PluginTagToContent("hparams")) == {
        "_hparams_/experiment", "_hparams_/session_start_info", "_hparams_/session_end_info"}


def test_plots_written_and_compare(tmp_path):
    pytest.importorskip("matplotlib")
    from lmforge.monitor.plots import ema, plot_run, plot_runs, series

    for name, scale in (("a", 1.0),):
        with RunLogger(tmp_path / name, MonitorConfig(tensorboard=False, system_every=0, plots=False)) as mon:
            for s in range(1, 21):
                mon.log("train", s, loss=scale * 5 / s, lr=1e-3, grad_norm=0.5, tokens=100 * s, tokens_per_s=1e4)
            mon.log("val", 20, loss=scale)
    paths = plot_run(tmp_path / "a", panels=("loss", "memory"))  # memory: no system events -> no file
    assert sorted(p.name for p in paths) == ["loss.png", "overview.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)
    assert not list((tmp_path / "a" / "plots").glob(".*.tmp"))  # written via a temp file + rename
    assert series({"train": [{"step": 1, "tokens": 10, "loss": 2}], "val": [{"step": 1, "loss": 3}]},
                  "val", "loss", "tokens") == ([10.0], [3.0])
    assert ema([1.0, 1.0, 1.0], 0.9) == pytest.approx([1.0, 1.0, 1.0])  # debiased: no pull towards 0
    with pytest.raises(LmforgeError, match="metrics.jsonl does not exist"):
        plot_runs([tmp_path / "missing"], tmp_path / "x.png")


def test_layer_grad_norms_and_update_ratio():
    import torch

    from lmforge.monitor.modelstats import UpdateTracker, layer_grad_norms

    model = torch.nn.Sequential()
    model.add_module("emb", torch.nn.Linear(2, 2, bias=False))
    model.add_module("blocks", torch.nn.ModuleList([torch.nn.Linear(2, 2, bias=False) for _ in range(2)]))
    with torch.no_grad():
        model.emb.weight.fill_(1.0)
        for b in model.blocks:
            b.weight.fill_(2.0)
    for p, g in zip(model.parameters(), (3.0, 4.0, 0.0)):
        p.grad = torch.full_like(p, g)
    norms = layer_grad_norms(model)
    assert set(norms) == {"grad_norm/emb", "grad_norm/blocks.0", "grad_norm/blocks.1", "grad_norm"}
    assert norms["grad_norm/emb"] == pytest.approx(6.0) and norms["grad_norm/blocks.0"] == pytest.approx(8.0)
    assert norms["grad_norm"] == pytest.approx(10.0)  # sqrt(36 + 64 + 0)
    tracker = UpdateTracker(model)
    tracker.before()
    with torch.no_grad():
        model.blocks[0].weight.add_(0.02)  # |dW| / |W| = 0.02 / 2 = 1e-2
    ratios = tracker.after()
    assert ratios["update_ratio/blocks.0"] == pytest.approx(1e-2) and ratios["update_ratio/emb"] == 0.0
    assert ratios["update_ratio"] == pytest.approx(0.04 / math.sqrt(4 + 16 + 16), rel=1e-5)


def test_run_logger_stores_scalars_as_numbers(tmp_path):
    import numpy as np

    with RunLogger(tmp_path, MonitorConfig(tensorboard=False, plots=False, system_every=0)) as mon:
        mon.log("train", 1, loss=np.float32(2.0), lr=np.float64(1e-3), grad_norm=None)
    (ev,) = read_metrics(tmp_path / "metrics.jsonl", kind="train")
    assert ev["loss"] == 2.0 and ev["lr"] == 1e-3 and ev["grad_norm"] is None and ev["ppl"] == pytest.approx(math.e**2)


def test_nvml_probes_are_guarded_and_follow_cuda_visible_devices(monkeypatch):
    from lmforge.monitor import system

    class FakeNVML:
        NVML_TEMPERATURE_GPU = 0
        NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
        NVML_VOLATILE_ECC = 0

        def __init__(self):
            self.asked = []

        def nvmlDeviceGetHandleByIndex(self, i):
            self.asked.append(i)
            return f"h{i}"

        def nvmlDeviceGetUtilizationRates(self, h):
            return type("U", (), {"gpu": 97})()

        def nvmlDeviceGetMemoryInfo(self, h):
            return type("M", (), {"used": 3 * 1024 * 1024})()

        def nvmlDeviceGetTemperature(self, h, sensor):
            return 71

        def nvmlDeviceGetPowerUsage(self, h):
            raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")  # some boards: the key is left out

        def nvmlDeviceGetTotalEccErrors(self, h, kind, counter):
            return 0

    fake = FakeNVML()
    monkeypatch.setattr(system, "_nvml", fake)
    monkeypatch.setattr(system, "_handles", {})
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    s = system.system_stats(gpu_index=1)
    assert fake.asked == [5]  # CUDA device 1 is physical GPU 5
    assert (s["gpu_util"], s["gpu_mem_used_mb"], s["gpu_temp_c"], s["gpu_ecc_errors"]) == (97, 3.0, 71, 0)
    assert "gpu_power_w" not in s
    monkeypatch.setattr(system, "_nvml", False)  # no NVML at all: no GPU keys, no error
    assert not any(k.startswith("gpu_") for k in system.system_stats(gpu_index=0))
