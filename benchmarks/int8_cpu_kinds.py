"""Does an ONNX Runtime int8 graph give the same outputs on an AVX2-only CPU as on a VNNI CPU?

ONNX Runtime's x86 u8s8 kernels take a different path per CPU kind: VNNI (VPDPBUSD, 32-bit accumulation) or, on
AVX2 alone, VPMADDUBSW, which adds pairs of uint8 x int8 products in int16 and saturates with full 8-bit weights.
This script quantises all-MiniLM-L6-v2 (from the offline package) and the test suite's tiny random Whisper
(three graphs) with ONNX Runtime's quantize_dynamic in several weight settings, runs every graph here and, under ``qemu-x86_64 -cpu EPYC-Milan`` (an AVX2-only AMD model, emulated
instruction by instruction, so its integer kernels really run), on the same inputs, and prints per setting the
embedding cosine to fp32 on each CPU kind and the largest difference between the two kinds' outputs.

Usage: apt-get install qemu-user; .venv/bin/python benchmarks/int8_cpu_kinds.py [--json OUT]
Fidelity, not speed: the numbers do not depend on what else runs on the machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

SETTINGS = {  # name -> quantize_dynamic keyword arguments
    "int8 per-tensor": {"weight_type": "QInt8", "per_channel": False, "reduce_range": False},
    "int8 per-channel": {"weight_type": "QInt8", "per_channel": True, "reduce_range": False},
    "int8 per-channel, 7-bit range (squeezebench default)": {"weight_type": "QInt8", "per_channel": True,
                                                              "reduce_range": True},
    "uint8 per-channel": {"weight_type": "QUInt8", "per_channel": True, "reduce_range": False},
}
EMULATED_CPU = "EPYC-Milan"  # AVX2, FMA, no AVX-512, no VNNI

RUN = r'''
import sys, numpy as np, onnxruntime as ort
d = np.load(sys.argv[1]); out = {}
o = ort.SessionOptions(); o.intra_op_num_threads = 1; o.log_severity_level = 3
for f in sys.argv[3:]:
    s = ort.InferenceSession(f, o, providers=["CPUExecutionProvider"])
    out[f] = s.run(None, {"input_ids": d["ids"], "attention_mask": d["mask"]})[0]
np.savez(sys.argv[2], **out)
'''


def pooled(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask[..., None].astype(hidden.dtype)
    p = (hidden * m).sum(1) / m.sum(1)
    return p / np.linalg.norm(p, axis=1, keepdims=True)


RUN_WHISPER = r'''
import sys, numpy as np, onnxruntime as ort
d = np.load(sys.argv[1]); out = {}
o = ort.SessionOptions(); o.intra_op_num_threads = 1; o.log_severity_level = 3
for folder in sys.argv[3:]:
    for graph in ("encoder", "decoder", "decoder_with_past"):
        s = ort.InferenceSession(f"{folder}/{graph}.onnx", o, providers=["CPUExecutionProvider"])
        names = [i.name for i in s.get_inputs()]
        out[f"{folder}|{graph}"] = s.run(None, {n: d[f"{graph}|{n}"] for n in names})[0]
np.savez(sys.argv[2], **out)
'''


def row_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    return float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)).min())


def tiny_whisper_rows(tmp: Path, qemu: str) -> list[dict]:
    """The test suite's tiny random Whisper (tests/helpers_seq2seq.py, seed 2) exported to its three graphs by
    squeezebench's `onnx` method, each graph quantised per setting; min row cosine of each graph's first output
    (encoder states, decoder logits) to the fp32 graph's, here and on the emulated AVX2 CPU, on the same inputs."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from squeezebench.methods import MethodContext, apply_chain, parse_chain
    from tests.helpers_seq2seq import GraphTask, bundle_of, features, tiny_whisper

    task, model = GraphTask(), tiny_whisper(False, seed=2)
    samples = features(6)
    fp32 = tmp / "whisper-fp32"
    fp32.mkdir()
    apply_chain(bundle_of(model), parse_chain("onnx"), MethodContext(task=task, bundle=bundle_of(model),
                                                                       calibration=lambda n: samples[:n]), fp32)
    folders = {"fp32": fp32}
    for i, (name, kw) in enumerate(SETTINGS.items()):
        folders[name] = tmp / f"whisper-q{i}"
        folders[name].mkdir()
        for graph in ("encoder", "decoder", "decoder_with_past"):
            quantize_dynamic(fp32 / f"{graph}.onnx", folders[name] / f"{graph}.onnx",
                             weight_type=getattr(QuantType, kw["weight_type"]), per_channel=kw["per_channel"],
                             reduce_range=kw["reduce_range"])
    # inputs of each graph from the fp32 graphs (so every variant sees the same feeds)
    rng = np.random.default_rng(5)
    feeds = {"encoder|input_features": rng.standard_normal((2, 80, 60)).astype(np.float32)}
    sess = {g: ort.InferenceSession(str(fp32 / f"{g}.onnx"), providers=["CPUExecutionProvider"])
            for g in ("encoder", "decoder", "decoder_with_past")}
    states = sess["encoder"].run(None, {"input_features": feeds["encoder|input_features"]})[0]
    ids = np.array([[50257, 1000, 2000], [50257, 3000, 4000]], dtype=np.int64)
    feeds.update({"decoder|decoder_input_ids": ids, "decoder|encoder_hidden_states": states})
    outs = dict(zip([o.name for o in sess["decoder"].get_outputs()],
                    sess["decoder"].run(None, {"decoder_input_ids": ids, "encoder_hidden_states": states})))
    for i in sess["decoder_with_past"].get_inputs():
        feeds[f"decoder_with_past|{i.name}"] = (np.array([[5000], [6000]], dtype=np.int64)
                                                 if i.name == "decoder_input_ids"
                                                 else outs[i.name.replace("past_", "present_")])
    inputs, script = tmp / "whisper-inputs.npz", tmp / "run_whisper.py"
    np.savez(inputs, **feeds)
    script.write_text(RUN_WHISPER)
    dirs = [str(f) for f in folders.values()]
    subprocess.run([sys.executable, str(script), str(inputs), str(tmp / "w-native.npz"), *dirs], check=True)
    subprocess.run([qemu, "-cpu", EMULATED_CPU, sys.executable, str(script), str(inputs), str(tmp / "w-avx2.npz"),
                    *dirs], check=True, stderr=subprocess.DEVNULL)
    native, avx2 = np.load(tmp / "w-native.npz"), np.load(tmp / "w-avx2.npz")
    rows = []
    for name, folder in folders.items():
        row = {"setting": name}
        for graph in ("encoder", "decoder", "decoder_with_past"):
            ref = native[f"{fp32}|{graph}"]
            row[f"{graph}_cosine_here"] = row_cosine(native[f"{folder}|{graph}"], ref)
            row[f"{graph}_cosine_avx2"] = row_cosine(avx2[f"{folder}|{graph}"], ref)
        rows.append(row)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the results here too")
    parser.add_argument("--sentences", type=int, default=8, help="BBC articles embedded (first N, 128 tokens)")
    args = parser.parse_args()
    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        print("qemu-x86_64 is missing: apt-get install qemu-user", file=sys.stderr)
        return 2
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from squeezebench.hardware.cpu import cpu_flags, cpu_model
    from squeezebench.models.sources import load_model, source_of
    from squeezebench.tasks import TASKS
    from squeezebench.tasks.data import load_dataset
    from squeezebench.tasks.text_common import fixed_batch

    task = TASKS.get("sentence-embedding")
    bundle = load_model(source_of("offline:all-minilm-l6-v2"), task)
    texts = [ex["text"] for ex in load_dataset("bbc-news").examples[: args.sentences]]
    batch = fixed_batch(bundle, texts, len(texts), 128)
    encoder = bundle.module.eval()

    class Hidden(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):
            return self.m(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    with tempfile.TemporaryDirectory(prefix="sb-int8-kinds-") as tmp:
        tmp = Path(tmp)
        fp32 = tmp / "fp32.onnx"
        torch.onnx.export(Hidden(encoder), (batch["input_ids"][:1], batch["attention_mask"][:1]), str(fp32),
                          input_names=["input_ids", "attention_mask"], output_names=["hidden"], opset_version=17,
                          dynamic_axes={"input_ids": {0: "b"}, "attention_mask": {0: "b"}, "hidden": {0: "b"}},
                          dynamo=False)
        files = {"fp32": fp32}
        for i, (name, kw) in enumerate(SETTINGS.items()):
            files[name] = tmp / f"q{i}.onnx"
            quantize_dynamic(fp32, files[name], weight_type=getattr(QuantType, kw["weight_type"]),
                             per_channel=kw["per_channel"], reduce_range=kw["reduce_range"])
        inputs = tmp / "inputs.npz"
        np.savez(inputs, ids=batch["input_ids"].numpy().astype(np.int64),
                 mask=batch["attention_mask"].numpy().astype(np.int64))
        script = tmp / "run.py"
        script.write_text(RUN)
        graphs = [str(f) for f in files.values()]
        subprocess.run([sys.executable, str(script), str(inputs), str(tmp / "native.npz"), *graphs], check=True)
        subprocess.run([qemu, "-cpu", EMULATED_CPU, sys.executable, str(script), str(inputs), str(tmp / "avx2.npz"),
                        *graphs], check=True, stderr=subprocess.DEVNULL)
        native, avx2 = np.load(tmp / "native.npz"), np.load(tmp / "avx2.npz")
        mask = batch["attention_mask"].numpy()
        ref = pooled(native[str(fp32)], mask)
        rows = []
        for name, f in files.items():
            a, b = native[str(f)], avx2[str(f)]
            rows.append({"setting": name, **{k: float((pooled(v, mask) * ref).sum(1).min())
                                             for k, v in (("cosine_min_here", a), ("cosine_min_avx2", b))},
                         "max_abs_diff_here_vs_avx2": float(np.abs(a - b).max())})
        whisper = tiny_whisper_rows(tmp, qemu)
    here = f"{cpu_model()} ({', '.join(cpu_flags())})"
    print(f"all-MiniLM-L6-v2, {len(texts)} BBC articles x 128 tokens, 1 thread; here: {here}; "
          f"AVX2-only: qemu-x86_64 -cpu {EMULATED_CPU}")
    print(f"{'setting':<55} {'cos here':>9} {'cos AVX2':>9} {'max|here-AVX2|':>15}")
    for r in rows:
        print(f"{r['setting']:<55} {r['cosine_min_here']:>9.4f} {r['cosine_min_avx2']:>9.4f} "
              f"{r['max_abs_diff_here_vs_avx2']:>15.3g}")
    print("\ntiny random Whisper (tests/helpers_seq2seq.py): min row cosine to the fp32 graph, here / AVX2 only")
    print(f"{'setting':<55} {'encoder':>15} {'decoder':>15} {'with past':>15}")
    for r in whisper:
        print(f"{r['setting']:<55} " + " ".join(
            f"{r[g + '_cosine_here']:>7.4f}/{r[g + '_cosine_avx2']:.4f}" for g in ("encoder", "decoder",
                                                                              "decoder_with_past")))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"cpu": here, "emulated": EMULATED_CPU, "sentences": len(texts),
                                         "rows": rows, "tiny_whisper": whisper},
                                        indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
