"""What the CPU is and which int8 kernels it gives ONNX Runtime: read from /proc/cpuinfo, no dependencies, so that
both the environment measure and the runtimes can state it."""

from __future__ import annotations

import platform
from typing import Any, Optional

RECORDED_FLAGS = {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile", "avx512_bf16", "f16c", "fma"}


def _cpuinfo_field(name: str) -> Optional[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith(name):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The instruction-set flags that change what int8/bf16 kernels run (sorted)."""
    return sorted(set((_cpuinfo_field("flags") or "").split()) & RECORDED_FLAGS)


def has_vnni(flags: Optional[list[str]] = None) -> bool:
    have = set(cpu_flags() if flags is None else flags)
    return bool(have & {"avx512_vnni", "avx_vnni"})


def ort_int8_kernel(settings: dict[str, Any], flags: Optional[list[str]] = None) -> str:
    """Which integer dot-product path ONNX Runtime's x86 MLAS kernels take for a quantised graph on this CPU.

    uint8 activations times int8 weights (u8s8) run on VNNI (VPDPBUSD, 32-bit accumulation) where the CPU has it;
    on AVX2 alone MLAS uses VPMADDUBSW, which adds pairs of products in int16 and saturates with full 8-bit
    weights. 7-bit weights (``reduce_range``) and uint8 weights (u8u8) cannot saturate.
    """
    flags = cpu_flags() if flags is None else flags
    weights = str(settings.get("weight_type", "QInt8"))
    activations = str(settings.get("activation_type", "QUInt8"))
    signed_weights = weights.endswith("QInt8") and not weights.endswith("QUInt8")
    kind = f"{'u8' if 'UInt8' in activations or activations == 'uint8' else 's8'}{'s8' if signed_weights else 'u8'}"
    if has_vnni(flags):
        return f"{kind} on AVX-512/AVX VNNI (32-bit accumulation, no saturation)"
    if "avx2" not in flags:
        return f"{kind} without AVX2 (SSE kernels)"
    if kind == "u8s8" and not settings.get("reduce_range"):
        return "u8s8 on AVX2 without VNNI (VPMADDUBSW: int16 pair sums can saturate with 8-bit weights)"
    return f"{kind} on AVX2 without VNNI ({'7-bit weights: ' if settings.get('reduce_range') else ''}no saturation)"
