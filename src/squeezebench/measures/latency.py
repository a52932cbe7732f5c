"""Latency: explicit warm-up, then timed until both a minimum iteration count and a minimum time are met.

CPU: ``time.perf_counter`` around each call. CUDA: events around each call plus wall time with a
synchronise before and after, so queued kernels are always included.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any, Callable

import torch

HIGH_CV = 0.10


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
