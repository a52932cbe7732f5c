"""Check squeezebench's figures against independent measurements of the same thing, and print ratios.

    python benchmarks/verify_measurements.py RESULTS_DIR [--method original] [--model NAME]

For one measured CPU record it checks, each in a fresh process where it matters:
  latency   median of a plain perf_counter loop on the same artifact, input shape and threads (target ±5 %)
  RAM       the record's process peak (VmHWM) against the kernel's accounting of the child (wait4 ru_maxrss) (±5 %)
  size      the record's weight bytes against the bytes of the files on disk (equal)
  quality   for causal-lm: perplexity recomputed independently with transformers' own loss (labels=...) over the
            recorded windows (±1 %)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
from pathlib import Path

from squeezebench.results import iter_records

PLAIN_LOOP = textwrap.dedent("""
    import json, sys, time, statistics, torch
    job = json.loads(sys.argv[1])
    torch.set_num_threads(job["threads"])
    import squeezebench.methods, squeezebench.runtimes
    from squeezebench.protocol import Protocol
    from squeezebench.tasks import TASKS
    from squeezebench.runtimes.base import load_artifact
    from squeezebench.tasks.data import load_dataset, DatasetOptions
    task = TASKS.get(job["task"]); protocol = Protocol(**job["protocol"])
    bundle, exe = load_artifact(job["artifact"], task, "cpu", protocol.threads)
    ds = load_dataset(job["dataset"], DatasetOptions(**job["dataset_options"])).subset(protocol.limit, protocol.seed)
    data = task.prepare(ds, bundle, protocol)
    x = exe.prepare(task.example_inputs(bundle, data, protocol))
    out = {}
    with torch.inference_mode():
        for _ in range(protocol.warmup_iters):
            exe.run_prepared(x)
        samples = []
        for _ in range(job["iters"]):
            t0 = time.perf_counter(); exe.run_prepared(x); samples.append((time.perf_counter() - t0) * 1e3)
        out["plain_median_ms"] = statistics.median(samples)
        if job.get("quality", True) and job["task"] == "causal-lm" and bundle.module is not None:
            ids = data["ids"]; W, S = protocol.ppl_window, protocol.ppl_stride
            nll, count, prev_end = 0.0, 0, 0
            for begin in range(0, ids.numel(), S):
                end = min(begin + W, ids.numel()); trg = end - prev_end
                chunk = ids[begin:end].unsqueeze(0); labels = chunk.clone(); labels[:, :-trg] = -100
                n = int((labels[:, 1:] != -100).sum())
                loss = bundle.module(input_ids=chunk, labels=labels).loss
                nll += float(loss) * n; count += n; prev_end = end
                if end == ids.numel(): break
            import math
            out["recomputed_perplexity"] = math.exp(nll / count); out["recomputed_tokens"] = count
    print(json.dumps(out))
""")


def artifact_of(rec: dict) -> Path:
    """The artifact directory a record was measured from (same chain and source)."""
    root = Path(rec["_file"]).parents[1] / "artifacts"

    def same(manifest, record):  # manifests written before configs had versions say none: names and params decide
        versioned = all("version" in link for link in manifest)
        return [(m["name"], m["params"], m["version"] if versioned else None) for m in manifest] == \
            [(r["name"], r["params"], r.get("version", 1) if versioned else None) for r in record]

    return next(p for p in root.rglob("squeezebench-artifact.json")
                if same(json.loads(p.read_text())["chain"], rec["chain"])
                and json.loads(p.read_text())["source"] == rec["model"]["source"]).parent


def plain_loop(rec: dict, iters: int, quality: bool = True) -> dict:
    """Time the record's artifact with a plain perf_counter loop in a fresh process (same input and threads)."""
    job = {"threads": rec["runtime"]["threads"], "task": rec["task"]["name"], "protocol": rec["protocol"],
           "artifact": str(artifact_of(rec)), "dataset": rec["dataset"]["spec"],
           "dataset_options": rec["dataset"]["options"], "iters": iters, "quality": quality}
    return json.loads(subprocess.run([sys.executable, "-c", PLAIN_LOOP, json.dumps(job)], check=True,
                                     capture_output=True, text=True).stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", type=Path)
    ap.add_argument("--method", default="original")
    ap.add_argument("--model")
    ap.add_argument("--iters", type=int, default=0, help="plain-loop iterations (default: the record's count)")
    args = ap.parse_args()
    recs = [dict(r.dump(), _file=r.source_file) for r in iter_records([args.results])
            if r.ok and r.device == "cpu" and r.method == args.method and (args.model is None or r.model.name == args.model)]
    if not recs:
        print(f"no ok CPU record of method {args.method!r} in {args.results}", file=sys.stderr)
        return 2
    rec = recs[-1]
    artifact = artifact_of(rec)
    out = plain_loop(rec, args.iters or rec["latency"]["iterations"])
    print(f"record: {rec['model']['name']} · {rec['method']} · cpu ({rec['_file']})")
    lat = rec["latency"]["median"]
    print(f"latency   squeezebench median {lat:.3f} ms vs plain loop {out['plain_median_ms']:.3f} ms "
          f"-> ratio {lat / out['plain_median_ms']:.3f} (target 0.95-1.05)")
    mem = rec["memory"]
    # Linux starts a forked child's ru_maxrss at the parent's peak RSS: the kernel reports max(that, child peak)
    # records before 2026-11-28 15:55 UTC kept the parent's current RSS; the kernel uses its peak (VmHWM)
    parent = mem.get("parent_peak_rss_at_spawn_mb", mem.get("parent_rss_at_spawn_mb", 0.0))
    expected = max(mem["process_peak_rss_mb"], parent)
    print(f"RAM       process peak {mem['process_peak_rss_mb']:.1f} MB (parent at spawn "
          f"{parent:.1f} MB) vs kernel ru_maxrss {mem['os_child_maxrss_mb']:.1f} MB "
          f"-> ratio {expected / mem['os_child_maxrss_mb']:.3f} (target 0.95-1.05)")
    on_disk = sum((artifact / f).stat().st_size for f in rec["build"]["size"]["weight_files"])
    print(f"size      recorded {rec['build']['size']['weights_bytes']} B vs files on disk {on_disk} B "
          f"-> {'equal' if on_disk == rec['build']['size']['weights_bytes'] else 'DIFFERENT'}")
    if "recomputed_perplexity" in out:
        ppl = rec["quality"]["metrics"]["perplexity"]["value"]
        print(f"quality   perplexity {ppl:.4f} vs transformers loss recomputation {out['recomputed_perplexity']:.4f} "
              f"over {out['recomputed_tokens']} tokens -> ratio {ppl / out['recomputed_perplexity']:.4f} (target 0.99-1.01)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
