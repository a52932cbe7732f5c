"""Perplexity of round-to-nearest int4 vs GPTQ vs AWQ with calibration text held out from the scored text.

The causal-lm task's calibration windows come from the scored text itself; this script instead scores the
first ``--eval-tokens`` tokens and calibrates on windows taken after them, so the comparison is held out.
Perplexity protocol as the causal-lm task (window 512, stride 256). No latency is measured. "paired" gives each
method's perplexity ratio to fp32 and to rtn on the same windows, with a paired bootstrap 95 % interval: a ratio
interval entirely below 1 means the method loses less than the other on these windows.

    python benchmarks/gptq_vs_rtn.py --model offline:smollm2-135m --limit 60 --group-size 128
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch

from squeezebench.methods import awq as awq_mod
from squeezebench.methods import gptq as gptq_mod
from squeezebench.methods import weight_only
from squeezebench.methods.lib.calibrated_weight_only import quantize_rest
from squeezebench.models.sources import load_model, source_of
from squeezebench.tasks import TASKS
from squeezebench.tasks.causal_lm import perplexity_from, window_nll
from squeezebench.tasks.data import DatasetOptions, load_dataset
from squeezebench.tasks.metrics import paired_bootstrap_ci


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="offline:smollm2-135m")
    ap.add_argument("--dataset", default="bbc-news")
    ap.add_argument("--limit", type=int, default=60)
    ap.add_argument("--eval-tokens", type=int, default=4096)
    ap.add_argument("--calibration-samples", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--group-size", type=int, default=128)
    ap.add_argument("--methods", default="rtn,gptq,awq")
    args = ap.parse_args()

    task = TASKS.get("causal-lm")
    bundle = load_model(source_of(args.model), task)
    docs = load_dataset(args.dataset, DatasetOptions()).subset(args.limit, 0).examples
    text = "\n\n".join(d["text"].strip() for d in docs)
    ids = bundle.tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"][0]
    scored, rest = ids[: args.eval_tokens], ids[args.eval_tokens:]
    need = args.calibration_samples * args.seq_len
    if rest.numel() < need:
        raise SystemExit(f"only {rest.numel()} tokens after the scored text; need {need} (raise --limit)")
    samples = [{"input_ids": rest[i * args.seq_len:(i + 1) * args.seq_len].unsqueeze(0).clone()}
               for i in range(args.calibration_samples)]

    windows: dict[str, tuple] = {}

    def ppl(name, model) -> float:
        model.eval()
        with torch.no_grad():
            sums, counts, _ = window_nll(lambda x: model(input_ids=x["input_ids"], use_cache=False).logits,
                                         scored, 512, 256)
        windows[name] = (sums, counts)
        return perplexity_from(sums, counts)

    def paired(a, b) -> dict:
        """ppl(a) / ppl(b) on the same windows, with a paired bootstrap 95 % interval over windows."""
        (sa, ca), (sb, cb) = windows[a], windows[b]
        ci = paired_bootstrap_ci(lambda i: perplexity_from(sa[i], ca[i]), lambda i: perplexity_from(sb[i], cb[i]),
                                 len(sa))
        return {"ratio": perplexity_from(sa, ca) / perplexity_from(sb, cb), "ci95": list(ci), "windows": len(sa)}

    base = bundle.module.eval()
    results = {"model": args.model, "scored_tokens": int(scored.numel()), "group_size": args.group_size,
               "calibration": f"{args.calibration_samples} x {args.seq_len} tokens after the scored text",
               "fp32": ppl("fp32", base)}
    gs = args.group_size
    for name in args.methods.split(","):
        model = copy.deepcopy(base)
        t0 = time.perf_counter()
        if name == "rtn":
            weight_only.quantize_model(model, 4, gs, False, True, True)
        elif name == "gptq":
            config = gptq_mod.GPTQConfig(group_size=gs)
            gptq_mod.gptq_model(model, samples, config, "cpu")
            quantize_rest(model, config)
        elif name == "awq":
            config = awq_mod.AWQConfig(group_size=gs)
            awq_mod.awq_model(model, samples, config, "cpu")
            quantize_rest(model, config)
        else:
            raise SystemExit(f"unknown method {name!r} (rtn, gptq, awq)")
        results[f"{name}_transform_s"] = round(time.perf_counter() - t0, 1)
        results[name] = ppl(name, model)
        print(json.dumps({k: results[k] for k in ("fp32", name, f"{name}_transform_s")}), flush=True)
    names = args.methods.split(",")
    results["paired"] = {f"{n}/fp32": paired(n, "fp32") for n in names}
    if "rtn" in names:
        results["paired"].update({f"{n}/rtn": paired(n, "rtn") for n in names if n != "rtn"})
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
