"""The machine and software a measurement ran on."""

from __future__ import annotations

import os
import platform
from typing import Any

from squeezebench.hardware.cpu import cpu_flags, cpu_model
from squeezebench.measures.base import Measure, MeasureSession, register_measure
from squeezebench.results.schema import Environment


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
