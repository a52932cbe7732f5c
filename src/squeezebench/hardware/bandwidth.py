"""The decode roofline: this machine's memory copy bandwidth, and how much of it a generated token used.

Decoding one token of a small LM reads every weight once (plus a KV cache that is small at short contexts), so
``tokens/s x weight bytes per token`` cannot exceed the memory bandwidth. A variant at 50 % of it is close to
the limit; one at 1 % is limited by something else (e.g. Python unpacking int4 on every call).

Bandwidth is measured once per environment: one thread copies a buffer much larger than the last-level cache
with numpy (``np.copyto``), the median of ``repeats`` copies. GB/s counts bytes read + bytes written (STREAM's
"Copy" convention), the same traffic a read-only stream of that rate could reach. The result is cached in a
small JSON (``~/.cache/squeezebench/bandwidth.json``, or ``$SQUEEZEBENCH_CACHE``) keyed by host, CPU and core
count, so every record of an environment uses the same number.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

log = logging.getLogger(__name__)

BUFFER_MB = 256  # 8x the 32 MB L3 of this project's EPYC
REPEATS = 11
CACHE_FILE = "bandwidth.json"


def cache_path() -> Path:
    root = os.environ.get("SQUEEZEBENCH_CACHE") or Path.home() / ".cache" / "squeezebench"
    return Path(root) / CACHE_FILE


def environment_id() -> str:
    from squeezebench.hardware.cpu import cpu_model

    return f"{platform.node()}|{cpu_model()}|{os.cpu_count()}"


def measure_copy_bandwidth(buffer_mb: int = BUFFER_MB, repeats: int = REPEATS) -> dict[str, Any]:
    """Median GB/s (read + write bytes) of ``repeats`` single-threaded copies of a ``buffer_mb`` MB buffer."""
    n = buffer_mb * (1 << 20) // 8
    src = np.ones(n, dtype=np.float64)  # written, so the pages are really mapped before timing
    dst = np.zeros_like(src)
    np.copyto(dst, src)  # warm-up: first touch of dst
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        dt = time.perf_counter() - t0
        rates.append(2 * src.nbytes / dt / 1e9)
    # the median is what the roofline divides by; the best copy is what STREAM reports, and the one a busy core
    # slows least (time-slicing lowers every sample; a median taken on a shared core reads low)
    return {"copy_gb_s": statistics.median(rates), "copy_gb_s_best": max(rates), "samples_gb_s": rates,
            "buffer_mb": buffer_mb,
            "repeats": repeats, "threads": 1, "method": "numpy.copyto of a float64 buffer, median; "
            "GB/s = (bytes read + bytes written) / s (STREAM Copy convention)",
            "environment": environment_id(), "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S")}


def measured_with_contention() -> dict[str, Any]:
    """``measure_copy_bandwidth`` with a contention probe around it: on a core that other processes share, every
    copy is time-sliced and the result reads low (6 GB/s here at load 9 on 2 cores, 29 GB/s at load 5)."""
    from squeezebench.hardware.contention import ContentionProbe

    probe = ContentionProbe().start()
    record = measure_copy_bandwidth()
    record["contention"] = probe.stop()
    if record["contention"].get("busy"):
        log.warning("memory bandwidth measured while other processes used %.2f cores: it reads low; it will be "
                    "measured again next time", record["contention"]["others_cores_avg"])
    return record


def machine_bandwidth(path: Optional[Path] = None, refresh: bool = False) -> dict[str, Any]:
    """This environment's cached copy bandwidth, measured (about a second) on first use or with ``refresh``.

    A measurement taken while the machine was busy (see hardware/contention.py) is used but not trusted: the next
    call measures again and keeps the higher of the two until one is taken on a quiet machine."""
    path = Path(path) if path else cache_path()
    key = environment_id()
    cache: dict[str, Any] = {}
    if path.is_file():
        try:
            cache = json.loads(path.read_text())
        except (OSError, ValueError):
            cache = {}
    if not refresh and key in cache and (cache[key].get("contention") or {}).get("busy") is False:
        return dict(cache[key], cached=str(path))
    record = measured_with_contention()
    previous = cache.get(key)
    if previous and not refresh and (previous.get("contention") or {}).get("busy") is not False \
            and record["copy_gb_s"] < previous["copy_gb_s"]:
        record = previous  # both taken on a busy core: keep the less disturbed one
    cache[key] = record
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(cache, indent=1))
        tmp.replace(path)
    except OSError as exc:
        log.warning("cannot cache the bandwidth measurement in %s: %s", path, exc)
    log.info("memory copy bandwidth %.1f GB/s (cached in %s)", record["copy_gb_s"], path)
    return dict(record, cached=str(path))


def module_weight_bytes_per_token(module: Any) -> dict[str, Any]:
    """Bytes of a PyTorch LM's weights (parameters and buffers as stored, e.g. packed int4 + scales) read per
    generated token: everything except the input embedding table, of which a token reads one row; when the
    embedding is tied to the output head it is read in full by the head and counted once."""
    import torch

    seen: set[int] = set()
    total = 0
    for t in list(module.parameters()) + list(module.buffers()):
        if t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        total += t.numel() * t.element_size()
    total += _packed_params_bytes(module)
    embedding = module.get_input_embeddings() if hasattr(module, "get_input_embeddings") else None
    output = module.get_output_embeddings() if hasattr(module, "get_output_embeddings") else None
    tied = embedding is not None and output is not None and _same_storage(embedding, output)
    skipped = 0
    if embedding is not None and not tied:
        skipped = sum(t.numel() * t.element_size() for t in list(embedding.parameters()) + list(embedding.buffers()))
    return {"bytes": total - skipped, "total_weight_bytes": total, "input_embedding_bytes_excluded": skipped,
            "tied_embeddings": tied}


def _packed_params_bytes(module: Any) -> int:
    """Bytes of torch.ao quantized modules' packed weights (int8 + scales, bias), which are neither parameters
    nor buffers (e.g. ``int8-dynamic``'s Linear keeps them in ``_packed_params``)."""
    total = 0
    for m in module.modules():
        if not hasattr(m, "_packed_params") or not callable(getattr(m, "weight", None)):
            continue
        w = m.weight()
        total += w.numel() * w.element_size()
        if w.is_quantized and w.qscheme() in (torch_per_channel_schemes()):
            total += w.q_per_channel_scales().numel() * 8 + w.q_per_channel_zero_points().numel() * 8
        bias = m.bias() if callable(getattr(m, "bias", None)) else None
        if bias is not None:
            total += bias.numel() * bias.element_size()
    return total


def torch_per_channel_schemes() -> tuple:
    import torch

    return (torch.per_channel_affine, torch.per_channel_symmetric, torch.per_channel_affine_float_qparams)


def _same_storage(a: Any, b: Any) -> bool:
    import torch

    wa, wb = getattr(a, "weight", None), getattr(b, "weight", None)  # torch.ao modules: weight is a method
    return isinstance(wa, torch.Tensor) and isinstance(wb, torch.Tensor) and wa.data_ptr() == wb.data_ptr()


def roofline(tokens_per_s: float, bytes_per_token: float, bandwidth: dict[str, Any]) -> dict[str, Any]:
    """% of the measured bandwidth a decode rate uses, and the rate the bandwidth would allow."""
    gb_s = bandwidth["copy_gb_s"]
    used = tokens_per_s * bytes_per_token / 1e9
    return {"weight_bytes_per_token": int(bytes_per_token), "bandwidth_gb_s": gb_s,
            "decode_gb_s": used, "percent_of_bandwidth": 100 * used / gb_s,
            "bandwidth_limit_tokens_per_s": gb_s * 1e9 / max(bytes_per_token, 1),
            "bandwidth_source": bandwidth.get("cached") or bandwidth.get("method")}
