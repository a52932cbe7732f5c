"""Re-time measured variants side by side and print their speed-up over the original, with the spread.

    taskset -c 0 python benchmarks/speedup.py results/minilm --model all-MiniLM-L6-v2 \\
        --methods openvino-int8 prune-structured+distill+onnx-int8-dynamic --rounds 5

Each round times every variant (the original included) once, in a fresh process, with a plain perf_counter loop on
the record's artifact, input and threads; the order rotates between rounds so that slow drift of the machine (a
neighbour's load, frequency) spreads over all variants instead of biasing one. Prints, per variant, the median of
the round medians, the speed-up over the original and the lowest and highest per-round speed-ups (each round's
ratio uses that round's original): a target such as "≥ 3×" is met when the lowest round ratio clears it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from verify_measurements import plain_loop  # noqa: E402

from squeezebench.results import iter_records  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", type=Path)
    ap.add_argument("--model", required=True)
    ap.add_argument("--methods", nargs="+", required=True, help="method labels as the table shows them")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=100, help="timed iterations per variant and round")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    latest: dict[str, dict] = {}
    for r in iter_records([args.results]):
        if r.ok and r.device == "cpu" and r.model.name == args.model:
            latest[r.method] = dict(r.dump(), _file=r.source_file)
    methods = ["original"] + [m for m in args.methods if m != "original"]
    missing = [m for m in methods if m not in latest]
    if missing:
        print(f"no ok CPU record of {', '.join(missing)} for {args.model} in {args.results}", file=sys.stderr)
        return 2
    rounds: list[dict[str, float]] = []
    for i in range(args.rounds):
        order = methods[i % len(methods):] + methods[:i % len(methods)]
        medians = {m: plain_loop(latest[m], args.iters, quality=False)["plain_median_ms"] for m in order}
        rounds.append(medians)
        print(f"round {i + 1}: " + ", ".join(f"{m} {medians[m]:.2f} ms" for m in methods), flush=True)
    rec = latest["original"]
    print(f"\n{args.model}: {args.rounds} rounds x {args.iters} iterations, threads {rec['runtime']['threads']}, "
          f"inputs {rec.get('input_shapes')}, CPU {rec['environment']['cpu']}")
    summary = {}
    for m in methods:
        med = statistics.median(r[m] for r in rounds)
        ratios = [r["original"] / r[m] for r in rounds]
        summary[m] = {"median_ms": med, "speedup": statistics.median(ratios), "speedup_min": min(ratios),
                      "speedup_max": max(ratios), "recorded_ms": latest[m]["latency"]["median"],
                      "quality": latest[m]["quality"]["metrics"][latest[m]["quality"]["primary"]]["value"]}
        s = summary[m]
        print(f"  {m:50s} {med:8.2f} ms  speed-up {s['speedup']:.2f}x (rounds {s['speedup_min']:.2f}-"
              f"{s['speedup_max']:.2f}x)  recorded {s['recorded_ms']:.2f} ms  quality {s['quality']:.4f}")
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "rounds": rounds, "summary": summary,
                                         "threads": rec["runtime"]["threads"],
                                         "environment": rec["environment"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
