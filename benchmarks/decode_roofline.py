"""Decode roofline of SmolLM2-135M variants: tok/s, TTFT, weight bytes per token and % of measured bandwidth.

Every variant is built and measured by squeezebench's runner, i.e. each in fresh processes, one after another in
ONE run, with 1 thread on one pinned core: decode tok/s and TTFT of greedy generation with a KV cache (llama.cpp
variants through their own runtime's ``generate_greedy``, PyTorch ones through transformers' ``generate``), weight
bytes read per generated token as the variant runs, the % of this machine's memory copy bandwidth (measured once,
cached beside the results), and perplexity on the SAME windows scored by the SAME runtime that is timed, as a
paired ratio to the fp32 original (paired bootstrap 95 % interval). Speed ratio = decode tok/s / the original's.

    python benchmarks/decode_roofline.py --core 1          # writes results/smollm2-decode/decode_roofline.json

Timing needs a quiet machine: the JSON records how much CPU other processes used on the pinned core during the
run (hardware/contention.py) and the load average, so a busy run can be recognised as such.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from squeezebench.hardware.contention import ContentionProbe  # noqa: E402

DEFAULT_METHODS = ["original", "int8-dynamic", "gguf:quant=f32", "gguf-q8_0", "gguf-q4_k_m", "gguf-q4_0",
                   "gptq:group_size=32+gguf-q4_0", "openvino-int4"]  # openvino-int4: perplexity only (no KV cache)


def metric(rec: dict, name: str, key: str = "value"):
    """A metric's field: generation speed from the generation section (older records: quality), else quality."""
    found = (rec.get("generation") or {}).get(name) or ((rec.get("quality") or {}).get("metrics") or {}).get(name)
    return (found or {}).get(key)


def row(rec: dict, base_decode) -> dict:
    roof = {k: metric(rec, "decode_bandwidth_percent", k)
            for k in ("weight_bytes_per_token", "value", "bandwidth_limit_tokens_per_s")}
    decode = metric(rec, "decode_tokens_per_s")
    size = (rec.get("build") or {}).get("size", {})
    return {"method": rec["method"], "status": rec["status"], "reason": rec.get("reason") or rec.get("error"),
            "runtime": (rec.get("runtime") or {}).get("name"),
            "decode_tok_s": decode, "decode_samples": metric(rec, "decode_tokens_per_s", "samples"),
            "ttft_ms": metric(rec, "time_to_first_token"),
            "weight_bytes_per_token": roof.get("weight_bytes_per_token"),
            "percent_of_bandwidth": roof.get("value"),
            "bandwidth_limit_tok_s": roof.get("bandwidth_limit_tokens_per_s"),
            "perplexity": metric(rec, "perplexity"),
            "ppl_ratio": metric(rec, "perplexity_ratio_to_original"),
            "ppl_ratio_ci95": metric(rec, "perplexity_ratio_to_original", "ci95"),
            "speed_ratio_to_fp32": decode / base_decode if decode and base_decode else None,
            "in_memory_format": size.get("in_memory_format"), "weights_mb": (size.get("weights_bytes") or 0) / 1e6,
            "flags": ((rec.get("quality") or {}).get("flags") or []) + ((rec.get("generation") or {}).get("flags") or [])}


def fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def print_table(rows: list[dict], bandwidth: dict) -> None:
    print(f"\nmemory copy bandwidth {bandwidth['copy_gb_s']:.1f} GB/s (1 thread, read + write counted)")
    head = ("variant", "runtime", "decode tok/s", "x fp32", "TTFT ms", "MB/token", "% bw", "limit tok/s", "ppl",
            "ppl ratio [95% CI]")
    print(" | ".join(head))
    for r in rows:
        if r["status"] != "ok":
            print(f"{r['method']} | {r['status']}: {r['reason']}")
            continue
        ci = r["ppl_ratio_ci95"]
        ratio = "1 (reference)" if r["method"] == "original" else \
            f"{fmt(r['ppl_ratio'], '.3f')} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else fmt(r["ppl_ratio"], ".3f")
        mb = r["weight_bytes_per_token"] / 1e6 if r["weight_bytes_per_token"] else None
        print(" | ".join([r["method"], r["runtime"] or "-", fmt(r["decode_tok_s"], ".1f"),
                          fmt(r["speed_ratio_to_fp32"], ".2f"), fmt(r["ttft_ms"], ".0f"), fmt(mb, ".1f"),
                          fmt(r["percent_of_bandwidth"], ".0f"), fmt(r["bandwidth_limit_tok_s"], ".0f"),
                          fmt(r["perplexity"], ".2f"), ratio]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="offline:smollm2-135m")
    ap.add_argument("--methods", nargs="+", default=DEFAULT_METHODS)
    ap.add_argument("--out", default=str(ROOT / "results" / "smollm2-decode"))
    ap.add_argument("--core", type=int, default=1, help="pin this process and every child to one core (-1: no pin)")
    ap.add_argument("--limit", type=int, default=60)
    ap.add_argument("--ppl-max-tokens", type=int, default=4096)
    ap.add_argument("--gen-prompt-tokens", type=int, default=64)
    ap.add_argument("--gen-new-tokens", type=int, default=64)
    ap.add_argument("--gen-repeats", type=int, default=3)
    ap.add_argument("--refresh-bandwidth", action="store_true", help="measure the bandwidth again (else cached)")
    ap.add_argument("--force", action="store_true", help="re-measure variants already in --out")
    args = ap.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ["SQUEEZEBENCH_CACHE"] = str(out)  # the bandwidth measured for these records lies beside them
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.core >= 0:
        os.sched_setaffinity(0, {args.core})  # inherited by every build/measure subprocess

    from squeezebench.hardware.bandwidth import machine_bandwidth
    from squeezebench.runner import RunConfig, Runner
    from squeezebench.protocol import Protocol

    bandwidth = machine_bandwidth(refresh=args.refresh_bandwidth)
    protocol = Protocol(threads=1, seq_len=128, min_iters=10, min_time_s=1.0, ppl_max_tokens=args.ppl_max_tokens,
                        gen_prompt_tokens=args.gen_prompt_tokens, gen_new_tokens=args.gen_new_tokens,
                        gen_repeats=args.gen_repeats, calibration_samples=32, limit=args.limit)
    config = RunConfig(models=[args.model], task="causal-lm", methods=args.methods, dataset="bbc-news",
                       protocol=protocol, out=out, team="squeezebench", force=args.force,
                       command="benchmarks/decode_roofline.py " + " ".join(sys.argv[1:]))
    probe = ContentionProbe().start()
    t0 = time.time()
    records = [r.dump() for r in Runner(config, progress=lambda s: print(s, flush=True)).run()]
    contention = probe.stop()
    from squeezebench.hardware.bandwidth import measured_with_contention

    after = measured_with_contention()  # a second reading: a busy machine makes the first one read low
    base = next((r for r in records if r["method"] == "original" and r["status"] == "ok"), None)
    base_decode = metric(base, "decode_tokens_per_s") if base else None
    rows = [row(r, base_decode) for r in records]
    print_table(rows, bandwidth)
    if any((r["percent_of_bandwidth"] or 0) > 100 for r in rows):
        print(f"\nWARNING: a decode rate above 100 % of the measured bandwidth: the bandwidth was measured low "
              f"(busy machine?); measured again after the run: {after['copy_gb_s']:.1f} GB/s "
              f"(best copy {after['copy_gb_s_best']:.1f}); re-run with --refresh-bandwidth on a quiet machine")
    print(f"\nother processes used {contention.get('others_cores_avg', float('nan')):.2f} of the pinned core(s) "
          f"on average during the run; load average {contention.get('load_average')}"
          + (" - MACHINE BUSY: timings are not trustworthy" if contention.get("busy") else ""))
    doc = {"benchmark": "decode_roofline", "model": args.model, "started": time.strftime("%Y-%m-%dT%H:%M:%S",
           time.gmtime(t0)), "wall_s": time.time() - t0, "host": platform.node(), "core": args.core,
           "threads": 1, "protocol": {k: getattr(protocol, k) for k in ("seq_len", "ppl_window", "ppl_stride",
           "ppl_max_tokens", "gen_prompt_tokens", "gen_new_tokens", "gen_repeats", "limit")},
           "bandwidth": bandwidth, "bandwidth_after_run": after, "contention": contention, "rows": rows}
    path = out / "decode_roofline.json"
    path.write_text(json.dumps(doc, indent=1, default=str))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
