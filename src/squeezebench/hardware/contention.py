"""Did other processes compete for the CPU while we timed? A probe around a timed window.

On a shared machine a timing can be wrong by 10x without looking noisy (MiniLM: 42 ms alone, 560 ms with one
other busy process on 2 cores and PyTorch's 2 threads). The kernel already counts where CPU time goes, so the
probe reads it instead of guessing from the variance:

- ``/proc/stat`` per-core busy jiffies (user + nice + system + irq + softirq; idle, iowait and steal are not
  busy) summed over the cores this process may run on (``sched_getaffinity``), at start and stop;
- ``/proc/self/stat`` utime + stime of this process (all its threads) at start and stop.

Other processes' CPU time = busy delta on our cores - our own delta. It is reported in core-seconds and as a
fraction of window x cores. Nothing runs during the window: the probe costs two file reads at each end.

``busy`` is set when others used more than ``BUSY_FRACTION`` of the window on our cores (e.g. on 2 cores, more
than 0.4 core on average): one competing busy loop on 2 cores gives ~0.5, a quiet machine ~0.01-0.05.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Optional

BUSY_FRACTION = 0.20
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
BUSY_FIELDS = (0, 1, 2, 5, 6)  # user, nice, system, irq, softirq (guest time is already inside user/nice)


def _cores() -> list[int]:
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def busy_jiffies(cores: list[int]) -> Optional[int]:
    """Busy jiffies summed over ``cores`` since boot, or None where /proc/stat cannot be read (not Linux)."""
    wanted = {f"cpu{c}" for c in cores}
    total = 0
    try:
        with open("/proc/stat") as fh:
            for line in fh:
                parts = line.split()
                if parts and parts[0] in wanted:
                    values = [int(v) for v in parts[1:]]
                    total += sum(values[i] for i in BUSY_FIELDS if i < len(values))
    except OSError:
        return None
    return total


def own_jiffies() -> Optional[int]:
    """utime + stime of this process (every thread) and of its children it has waited for (cutime + cstime: a
    driver that runs workers and reaps them is not "other" load), or None where /proc is missing."""
    try:
        with open("/proc/self/stat") as fh:
            text = fh.read()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # the command name may hold spaces; fields after it
    # fields 14-17 of proc(5) (utime, stime, cutime, cstime), counted from the state field (3)
    return int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])


@dataclass
class ContentionProbe:
    """``start()`` before a timed window, ``stop()`` after it; ``stop()`` returns the record (a dict)."""

    threshold: float = BUSY_FRACTION
    cores: list[int] = field(default_factory=_cores)
    _start: Optional[tuple[float, int, int, tuple[float, float, float]]] = None

    def start(self) -> "ContentionProbe":
        busy, own = busy_jiffies(self.cores), own_jiffies()
        self._start = None if busy is None or own is None else (time.monotonic(), busy, own, os.getloadavg())
        return self

    def stop(self) -> dict[str, Any]:
        load = os.getloadavg()
        if self._start is None:
            return {"available": False, "reason": "no /proc/stat or /proc/self/stat (not Linux)", "busy": None,
                    "load_average": list(load)}
        busy, own = busy_jiffies(self.cores), own_jiffies()
        t0, busy0, own0, load0 = self._start
        window = max(time.monotonic() - t0, 1e-9)
        others_s = max((busy - busy0) - (own - own0), 0) / CLOCK_TICKS
        fraction = others_s / (window * len(self.cores))
        return {"available": True, "window_s": window, "cores": self.cores,
                "own_cpu_s": (own - own0) / CLOCK_TICKS, "others_cpu_s": others_s,
                "others_cores_avg": others_s / window, "others_fraction": fraction,
                "load_average_start": list(load0), "load_average": list(load),
                "threshold_fraction": self.threshold, "busy": fraction > self.threshold,
                "method": "/proc/stat busy jiffies on this process's cores minus /proc/self/stat utime+stime; "
                          f"busy when others used > {self.threshold:g} of window x cores"}


def thread_warning(record: dict[str, Any], threads: int) -> Optional[str]:
    """A warning when the timing used every core of the affinity set while other processes were also running
    (PyTorch's threads then wait for each other behind the other load: the 42 -> 560 ms case)."""
    if record.get("available") and record["others_cpu_s"] > 0 and threads >= len(record["cores"]) \
            and record["others_fraction"] > record["threshold_fraction"] / 4:
        return (f"{threads} threads on {len(record['cores'])} cores while other processes used "
                f"{record['others_cores_avg']:.2f} cores: timings are unreliable; use fewer threads or an idle machine")
    return None


def wait_idle(max_seconds: float, window_s: float = 1.0, threshold: float = BUSY_FRACTION) -> dict[str, Any]:
    """Sleep in probe windows of ``window_s`` until one is not busy or ``max_seconds`` have passed.

    Returns {"idle": bool, "waited_s": seconds, "last": the last window's record}. Bounded: the caller times
    anyway after ``max_seconds`` and should keep the record (flagged) when ``idle`` is False.
    """
    t0 = time.monotonic()
    while True:
        probe = ContentionProbe(threshold=threshold).start()
        time.sleep(window_s)
        last = probe.stop()
        waited = time.monotonic() - t0
        if not last.get("available") or not last["busy"] or waited + window_s > max_seconds:
            return {"idle": bool(last.get("available")) and not last["busy"], "waited_s": waited, "last": last}
