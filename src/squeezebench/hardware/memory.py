"""This process's resident set, now and at its peak, as the kernel counts it (the memory measure's RAM figures and
the isolation's accounting of a parent process read the same numbers)."""

from __future__ import annotations

import resource
from typing import Optional

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
