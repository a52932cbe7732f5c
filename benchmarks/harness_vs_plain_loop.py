"""squeezebench's latency harness against plain PyTorch loops on the same module, input and device, in one process.

Prepared for issue 12 item 3 (the H200 records of BERT-base were slower than plain loops: fp32 7.88 vs 5.29 ms,
reduce-overhead 2.71 vs 0.83 ms). For each variant it prints, side by side in one run:

- harness: ``measures.latency.measure_latency`` as the measure worker calls it (CUDA: a synchronise and a pair of
  events around every call: the latency of one request);
- plain, per call: the same, written out (no squeezebench code);
- plain, back to back: N calls between two events, one synchronise at the end (the usual benchmark loop: the CPU
  launches the next call while the GPU runs the last one, so launch overhead hides behind GPU work);

and the ratios harness / plain. Runs on CPU too (there the two plain loops coincide).

    python benchmarks/harness_vs_plain_loop.py --device cuda     # on the lent GPU
    python benchmarks/harness_vs_plain_loop.py --device cpu --threads 1 --tiny
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from squeezebench.measures.latency import measure_latency  # noqa: E402


def bert(tiny: bool) -> torch.nn.Module:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256) if tiny \
        else BertConfig()
    return BertModel(cfg).eval()


def plain_per_call(fn, device: str, warmup: int, iters: int) -> list[float]:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(iters):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            torch.cuda.synchronize()
            samples.append(a.elapsed_time(b))
        else:
            t0 = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - t0) * 1e3)
    return samples


def plain_back_to_back(fn, device: str, warmup: int, iters: int) -> float:
    for _ in range(warmup):
        fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(iters):
            fn()
        b.record()
        torch.cuda.synchronize()
        return a.elapsed_time(b) / iters
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t0) * 1e3 / iters


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--tiny", action="store_true", help="a 2-layer BERT (for a quick CPU check)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    variants = {"fp32": torch.float32}
    if device.startswith("cuda"):
        variants.update(fp16=torch.float16, **{"fp16+compile reduce-overhead": torch.float16})
    out = {}
    for name, dtype in variants.items():
        model = bert(args.tiny).to(device, dtype)
        if "compile" in name:
            model = torch.compile(model, mode="reduce-overhead")
        ids = torch.randint(0, 30000, (1, 128), device=device)
        mask = torch.ones_like(ids)
        with torch.inference_mode():
            fn = lambda: model(input_ids=ids, attention_mask=mask)  # noqa: E731
            harness = measure_latency(fn, device, 10, args.iters, 0.0, 120.0)
            per_call = statistics.median(plain_per_call(fn, device, 10, args.iters))
            back_to_back = plain_back_to_back(fn, device, 10, args.iters)
        out[name] = {"harness_median_ms": harness["median"], "plain_per_call_median_ms": per_call,
                     "plain_back_to_back_mean_ms": back_to_back,
                     "harness_vs_per_call": harness["median"] / per_call,
                     "harness_vs_back_to_back": harness["median"] / back_to_back}
        r = out[name]
        print(f"{name:32s} harness {r['harness_median_ms']:.3f} ms | plain per call {per_call:.3f} ms "
              f"(ratio {r['harness_vs_per_call']:.3f}) | plain back to back {back_to_back:.3f} ms "
              f"(ratio {r['harness_vs_back_to_back']:.3f})", flush=True)
    env = {"device": torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu",
           "torch": torch.__version__, "threads": torch.get_num_threads(), "tiny": args.tiny, "iters": args.iters}
    if args.json:
        args.json.write_text(json.dumps({"environment": env, "variants": out}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
