"""Latency: explicit warm-up, then timed until both a minimum iteration count and a minimum time are met.

CPU: ``time.perf_counter`` around each call. CUDA: events around each call plus wall time with a
synchronise before and after, so queued kernels are always included.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

from squeezebench.measures.base import (SLOWER_THRESHOLD, Column, Measure, MeasureSession, Row, ok, register_measure,
                                        status_text)
from squeezebench.i18n import tr, translate
from squeezebench.results.schema import Latency

HIGH_CV = 0.10


@dataclass(frozen=True)
class TimingProtocol:
    """How latency is timed: the input shape's batch, warm-up and stopping rule, threads. Owned here; the CLI derives
    its flags from these fields' metadata."""

    batch_size: int = field(default=1, metadata={"help": "latency batch size", "positive": True})
    threads: Optional[int] = field(default=None, metadata={
        "help": "torch threads (default: PyTorch's choice, recorded)", "positive": True})
    warmup_iters: int = field(default=5, metadata={"flag": "--warmup", "help": "warm-up iterations before timing"})
    min_iters: int = field(default=30, metadata={"help": "timed iterations at least", "positive": True})
    min_time_s: float = field(default=3.0, metadata={"flag": "--min-time", "help": "timed seconds at least"})
    max_time_s: float = field(default=60.0, metadata={"flag": "--max-time", "help": "stop timing after this many seconds"})
    wait_idle_s: float = field(default=0.0, metadata={
        "flag": "--wait-idle", "help": "wait up to this many seconds for the machine to be idle before timing "
                                       "(timing starts anyway afterwards, flagged when still busy)"})


def percentile_nearest_rank(sorted_samples: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of already sorted samples."""
    rank = max(1, math.ceil(q / 100 * len(sorted_samples)))
    return sorted_samples[rank - 1]


def summarize(samples_ms: list[float]) -> dict[str, Any]:
    """median, mean, std, p90, p99 (nearest rank), CV and warnings for a list of ms samples."""
    s = sorted(samples_ms)
    n = len(s)
    mean = statistics.fmean(s)
    std = statistics.stdev(s) if n > 1 else 0.0
    out = {"median": statistics.median(s), "mean": mean, "std": std, "min": s[0], "max": s[-1],
           "p90": percentile_nearest_rank(s, 90), "p99": percentile_nearest_rank(s, 99),
           "cv": std / mean if mean > 0 else 0.0, "iterations": n, "unit": "ms", "warnings": []}
    if n < 100:
        out["warnings"].append(f"p99 from {n} samples is the {'maximum' if n <= 100 else 'nearest rank'}; "
                               "need >= 100 samples for a meaningful p99")
    if n < 10:
        out["warnings"].append(f"p90 from only {n} samples")
    if out["cv"] > HIGH_CV:
        out["warnings"].append(f"high variation: CV {out['cv']:.0%} > {HIGH_CV:.0%} (noisy machine?)")
    return out


@torch.no_grad()
def measure_latency(call: Callable[[], Any], device: str, warmup_iters: int, min_iters: int, min_time_s: float,
                    max_time_s: float) -> dict[str, Any]:
    """Time ``call`` on ``device``; returns the summary plus the raw samples and the warm-up times."""
    cuda = device.startswith("cuda")
    warm = []
    for _ in range(warmup_iters):
        t0 = time.perf_counter()
        call()
        if cuda:
            torch.cuda.synchronize()
        warm.append((time.perf_counter() - t0) * 1e3)
    samples: list[float] = []
    wall: list[float] = []
    start = time.perf_counter()
    while True:
        if cuda:
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            begin.record()
            call()
            end.record()
            torch.cuda.synchronize()
            wall.append((time.perf_counter() - t0) * 1e3)
            samples.append(begin.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            call()
            samples.append((time.perf_counter() - t0) * 1e3)
        elapsed = time.perf_counter() - start
        if (len(samples) >= min_iters and elapsed >= min_time_s) or elapsed >= max_time_s:
            break
    out = summarize(samples)
    if len(samples) < min_iters:
        out["warnings"].append(f"stopped at max time {max_time_s:.0f} s after {len(samples)} < {min_iters} iterations")
    out.update(samples=samples, warmup_ms=warm, timer="cuda-events" if cuda else "perf_counter",
               first_call_ms=warm[0] if warm else None)
    if cuda:
        out["wall"] = summarize(wall) | {"samples": wall}
    return out


def _latency_cell(dev: str) -> Callable[[Row], str]:
    def cell(row: Row) -> str:
        rec = row.on(dev)
        if not ok(rec):
            return status_text(rec)
        lat = rec.latency
        text = f"{lat.median:.2f} ± {lat.std:.2f}"
        if lat.unit_of_work is not None:
            text += f" {lat.unit_of_work.describe(translate)}"
        if lat.iterations is not None and lat.iterations < rec.protocol.min_iters:  # the time ceiling came first
            text += " " + tr("(n={n} < --min-iters {min_iters}: stopped at --max-time)", n=lat.iterations,
                             min_iters=rec.protocol.min_iters)
        ref = row.original.get(dev)
        if ref is not None and not row.is_original:
            text += f" ({tr('{ratio}× of original', ratio=f'{ref.latency.median / lat.median:.2f}')})"
        return text
    return cell


def _latency_value(dev: str) -> Callable[[Row], Optional[float]]:
    return lambda row: row.on(dev).latency.median if ok(row.on(dev)) else None


@register_measure
class LatencyMeasure(Measure):
    """Median and spread of the time of one unit of the task's work (``Task.unit_of_work``: a forward at the
    fixed shape, transcribing an utterance, producing an answer), after warm-up; the cell names the unit."""

    name = "latency"
    section = Latency
    order = 20
    flag_order = 30
    columns = (
        Column("cpu_ms", {"en": "CPU inference (ms)", "ru": "Время инференса (CPU, ms)"}, "ms",
               _latency_cell("cpu"), _latency_value("cpu"), position=30, course=True),
        Column("gpu_ms", {"en": "GPU inference (ms)", "ru": "Время инференса (GPU, ms)"}, "ms",
               _latency_cell("gpu"), _latency_value("gpu"), position=40, course=True),
    )

    def run(self, session: MeasureSession) -> Latency:
        p = session.protocol
        executable = session.executable
        with torch.no_grad():  # not inference_mode: sparse CSR weights fail under it (torch 2.13)
            unit = session.task.unit_of_work(executable, session.bundle, session.data, session.inputs, p)
            with session.timed_window():  # every measure's around_timing (e.g. contention) wraps the timed calls
                result = measure_latency(unit.call, session.device, p.warmup_iters, p.min_iters, p.min_time_s,
                                         p.max_time_s)
        result["unit_of_work"] = unit.summary(result["samples"])
        return Latency.model_validate(result)

    def flags(self, row: Row) -> list[str]:
        out = []
        for dev, name in (("cpu", "CPU"), ("gpu", "GPU")):
            mine, ref = row.on(dev), row.original.get(dev)
            if not row.is_original and ok(mine) and ref is not None:
                if mine.latency.median > ref.latency.median * SLOWER_THRESHOLD:
                    out.append(f"slower than original on {name}")
        return out
