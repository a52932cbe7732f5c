"""RAM and VRAM: resident set after imports (baseline), process peak (VmHWM), CUDA peaks and NVML."""

from __future__ import annotations

import os
import resource
from typing import Any, Optional

MB = 1024 * 1024


def _status_kb(field: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def current_rss_mb() -> float:
    kb = _status_kb("VmRSS")
    if kb is None:
        import psutil

        return psutil.Process().memory_info().rss / MB
    return kb / 1024


def peak_rss_mb() -> float:
    """Peak resident set of this process: VmHWM where the kernel exposes it, else ru_maxrss."""
    kb = _status_kb("VmHWM")
    if kb is None:
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024


def reset_cuda_peaks() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def cuda_memory(device_index: int = 0) -> dict[str, Any]:
    """Peak allocated/reserved by PyTorch and NVML's figure for this process (MB)."""
    import torch

    out: dict[str, Any] = {"unit": "MB"}
    torch.cuda.synchronize()
    out["peak_allocated_mb"] = torch.cuda.max_memory_allocated(device_index) / MB
    out["peak_reserved_mb"] = torch.cuda.max_memory_reserved(device_index) / MB
    out["nvml_process_mb"] = nvml_process_memory_mb(device_index)
    return out


def nvml_process_memory_mb(device_index: int = 0) -> Optional[float]:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            handle = pynvml.nvmlDeviceGetHandleByIndex(device_index)
            for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if proc.pid == os.getpid() and proc.usedGpuMemory is not None:
                    return proc.usedGpuMemory / MB
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - NVML missing/unsupported (e.g. in containers): the figure is optional
        return None
    return None
