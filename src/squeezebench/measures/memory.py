"""RAM and VRAM: resident set after imports (baseline), process peak (VmHWM), CUDA peaks and NVML."""

from __future__ import annotations

import os
from typing import Any, Optional

from squeezebench.hardware.memory import MB, current_rss_mb, peak_rss_mb
from squeezebench.measures.base import Column, Measure, MeasureSession, Row, ok, pct, register_measure
from squeezebench.i18n import tr
from squeezebench.results.schema import Memory


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


def _ram_record(row: Row):
    return row.cpu if ok(row.cpu) else row.gpu


def _ram_cell(row: Row) -> str:
    rec = _ram_record(row)
    if not ok(rec):
        return "—"
    text = f"{rec.memory.ram_mb:.0f}"
    ref = row.original.get("cpu" if rec is row.cpu else "gpu")
    if ref is not None and not row.is_original:
        text += f" ({pct(rec.memory.ram_mb, ref.memory.ram_mb)})"
    return text


def _vram_cell(row: Row) -> str:
    if not ok(row.gpu):
        return "—" if row.gpu is None else tr("— (no GPU run)")
    vram = row.gpu.memory.vram.peak_reserved_mb
    text = f"{vram:.0f}"
    ref = row.original.get("gpu")
    if ref is not None and not row.is_original:
        text += f" ({pct(vram, ref.memory.vram.peak_reserved_mb)})"
    return text


@register_measure
class MemoryMeasure(Measure):
    """RAM: peak RSS (VmHWM) during artifact load and timed inference minus the RSS after imports; VRAM: PyTorch's
    peaks and NVML. Runs after latency, before quality (whose batches would otherwise count)."""

    name = "memory"
    section = Memory
    order = 30
    columns = (
        Column("ram_mb", {"en": "RAM (MB)", "ru": "Использование RAM (MB)"}, "MB", _ram_cell,
               lambda row: _ram_record(row).memory.ram_mb if ok(_ram_record(row)) else None, position=50, course=True),
        Column("vram_mb", {"en": "VRAM (MB)", "ru": "Использование VRAM (MB)"}, "MB", _vram_cell,
               lambda row: row.gpu.memory.vram.peak_reserved_mb if ok(row.gpu) else None, position=60, course=True),
    )

    def begin(self, session: MeasureSession) -> None:
        session.scratch["baseline_rss_mb"] = current_rss_mb()
        if session.device.startswith("cuda"):
            reset_cuda_peaks()

    def run(self, session: MeasureSession) -> Memory:
        baseline, peak = session.scratch["baseline_rss_mb"], peak_rss_mb()
        mem = Memory(unit="MB", baseline_rss_mb=baseline, peak_rss_mb=peak, ram_mb=peak - baseline,
                     scope="peak during artifact load and timed inference, minus RSS after imports")
        if session.device.startswith("cuda"):
            import torch

            mem.vram = cuda_memory(torch.device(session.device).index or 0)
        return mem

    def end(self, session: MeasureSession) -> None:
        session.sections["memory"].process_peak_rss_mb = peak_rss_mb()  # whole process, quality included
