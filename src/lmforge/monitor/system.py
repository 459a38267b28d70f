"""CPU and GPU telemetry for `system` metrics events. Every probe is guarded: a CPU-only machine, a
missing `psutil` / `nvidia-ml-py`, or an NVML call the driver does not support just leaves the key out.

    system_stats() -> {"rss_mb": 812.4, "cpu_percent": 187.0, "sys_mem_used_pct": 41.2,
                       "cuda_allocated_mb": ..., "cuda_reserved_mb": ..., "cuda_peak_mb": ...,
                       "gpu_util": 97, "gpu_mem_used_mb": ..., "gpu_temp_c": 64, "gpu_power_w": 412.5,
                       "gpu_ecc_errors": 0}

torch is used only if the caller already imported it, so the dashboard process never loads it.
"""

from __future__ import annotations

import os
import sys
from typing import Any

_MB = 1024.0 * 1024.0
_nvml: Any = None  # the pynvml module once initialised; False when unavailable
_handles: dict[int, Any] = {}
_proc_cache: dict[str, Any] = {}


def rss_mb() -> float | None:
    """Resident memory of this process in MiB (psutil, else /proc/self/statm)."""
    try:
        import psutil

        return psutil.Process().memory_info().rss / _MB
    except Exception:
        pass
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / _MB
    except Exception:
        return None


def _cpu_stats(out: dict[str, Any]) -> None:
    try:
        import psutil

        proc = _proc_cache.setdefault("p", psutil.Process())
        out["cpu_percent"] = proc.cpu_percent(None)  # since the previous call (0.0 on the first)
        out["sys_mem_used_pct"] = psutil.virtual_memory().percent
    except Exception:
        pass



def _cuda_stats(out: dict[str, Any]) -> int | None:
    """CUDA caching-allocator figures of the current device; returns its index or None."""
    torch = sys.modules.get("torch")
    try:
        if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
            return None
        dev = torch.cuda.current_device()
        out["cuda_allocated_mb"] = torch.cuda.memory_allocated(dev) / _MB
        out["cuda_reserved_mb"] = torch.cuda.memory_reserved(dev) / _MB
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated(dev) / _MB
        return dev
    except Exception:
        return None


def _nvml_module() -> Any:
    global _nvml
    if _nvml is None:
        try:
            import pynvml  # provided by the nvidia-ml-py package

            pynvml.nvmlInit()
            _nvml = pynvml
        except Exception:
            _nvml = False
    return _nvml


def _nvml_handle(nv: Any, cuda_index: int) -> Any:
    """NVML handle of CUDA device `cuda_index`, honouring CUDA_VISIBLE_DEVICES (NVML ignores it)."""
    if cuda_index in _handles:
        return _handles[cuda_index]
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    handle = None
    if cuda_index < len(visible):
        v = visible[cuda_index]
        handle = nv.nvmlDeviceGetHandleByIndex(int(v)) if v.isdigit() else nv.nvmlDeviceGetHandleByUUID(v)
    else:
        handle = nv.nvmlDeviceGetHandleByIndex(cuda_index)
    _handles[cuda_index] = handle
    return handle


def _gpu_stats(out: dict[str, Any], cuda_index: int) -> None:
    nv = _nvml_module()
    if not nv:
        return
    try:
        h = _nvml_handle(nv, cuda_index)
    except Exception:
        return
    probes = {
        "gpu_util": lambda: nv.nvmlDeviceGetUtilizationRates(h).gpu,
        "gpu_mem_used_mb": lambda: nv.nvmlDeviceGetMemoryInfo(h).used / _MB,
        "gpu_temp_c": lambda: nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU),
        "gpu_power_w": lambda: nv.nvmlDeviceGetPowerUsage(h) / 1000.0,
        "gpu_ecc_errors": lambda: nv.nvmlDeviceGetTotalEccErrors(
            h, nv.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, nv.NVML_VOLATILE_ECC),
    }
    for key, probe in probes.items():
        try:
            out[key] = probe()
        except Exception:
            pass  # not supported on this GPU/driver (e.g. ECC off, power on some boards)


def system_stats(gpu_index: int | None = None) -> dict[str, Any]:
    """One sample of process and device telemetry; keys absent where unmeasurable.

    `gpu_index`: CUDA device for NVML figures; default the current torch device when CUDA is in use.
    """
    out: dict[str, Any] = {}
    rss = rss_mb()
    if rss is not None:
        out["rss_mb"] = rss
    _cpu_stats(out)
    dev = _cuda_stats(out)
    if gpu_index is None:
        gpu_index = dev
    if gpu_index is not None:
        _gpu_stats(out, gpu_index)
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in out.items()}
