"""The machine and software a measurement ran on."""

from __future__ import annotations

import os
import platform
from typing import Any

from squeezebench.measures.base import Measure, MeasureSession, register_measure
from squeezebench.results.schema import Environment


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return sorted(have & {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile", "avx512_bf16", "f16c", "fma"})
    except OSError:
        pass
    return []


def environment(device: str = "cpu") -> dict[str, Any]:
    import torch
    import transformers

    import squeezebench

    env: dict[str, Any] = {
        "hostname": platform.node(),
        "os": platform.platform(),
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cores": os.cpu_count(),
        "affinity_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "squeezebench": squeezebench.__version__,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
        env["cuda"] = torch.version.cuda
        env["gpu_driver"] = gpu_driver()
    return env


def gpu_driver() -> str | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            v = pynvml.nvmlSystemGetDriverVersion()
            return v.decode() if isinstance(v, bytes) else v
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - optional
        return None


@register_measure
class EnvironmentMeasure(Measure):
    """The machine and software the variant was measured on (what makes two numbers comparable)."""

    name = "environment"
    section = Environment
    order = 90

    def run(self, session: MeasureSession) -> Environment:
        return Environment.model_validate(environment(session.device))
