"""Which ONNX Runtime int8 setting keeps Whisper's transcripts? Same artifact, same 40 utterances, one run.

Takes the fp32 `onnx` artifact of a Whisper results folder (three graphs: encoder, decoder, decoder-with-past),
quantises its graphs with several quantize_dynamic settings, generates on each with squeezebench's ONNX Runtime
runtime and scores WER, the share of transcripts identical to the original's (the folder's reference file) and
the real-time factor. Fidelity, not speed: RTF is printed for orientation only (the machine may be busy).

Usage: .venv/bin/python benchmarks/whisper_int8_settings.py results/whisper [--dataset audio-dir:DIR --limit 40]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

GRAPHS = ("encoder", "decoder", "decoder_with_past")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="a results folder with an `onnx` Whisper variant and its reference")
    parser.add_argument("--dataset", default="audio-dir:../shared/data/speech-synth")
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    import squeezebench.methods  # noqa: F401  (registers structure restores)
    import squeezebench.runtimes  # noqa: F401
    from squeezebench.protocol import Protocol
    from squeezebench.runtimes.base import load_artifact
    from squeezebench.tasks import TASKS
    from squeezebench.tasks.data import DatasetOptions, load_dataset

    sources = sorted(args.results.glob("artifacts/*/onnx-*"))
    references = sorted(args.results.glob("references/*.npz"))
    if not sources or not references:
        print(f"{args.results} has no onnx artifact or no reference file: run the whisper runs first", file=sys.stderr)
        return 2
    src, reference = sources[0], np.load(references[0])["transcripts"]
    task = TASKS.get("speech-recognition")
    dataset = load_dataset(args.dataset, DatasetOptions(), task.examples_from_rows).subset(args.limit, args.seed)
    protocol = Protocol(threads=1)

    def quantize(source: Path, target: Path, exclude: list[str], kwargs: dict) -> None:
        if not kwargs.get("weight_only"):
            quantize_dynamic(source, target, nodes_to_exclude=exclude, **kwargs)
            return
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        options = {k: v for k, v in kwargs.items() if k != "weight_only"}
        quantizer = MatMulNBitsQuantizer(onnx.load(str(source)), nodes_to_exclude=exclude, **options)
        quantizer.process()
        quantizer.model.save_model_to_file(str(target), use_external_data_format=False)

    def logits_nodes(path: Path) -> list[str]:
        return [n.name for n in onnx.load(str(path), load_external_data=False).graph.node if "logits" in n.output]

    s8 = {"weight_type": QuantType.QInt8, "per_channel": True}
    wo8 = {"weight_only": True, "bits": 8, "block_size": 32, "is_symmetric": True}
    settings = {  # name -> (quantizer kwargs, keep the logits projection float, graphs left float)
        "fp32 graphs, not quantised (control)": ({}, False, GRAPHS),
        "int8 weight-only (MatMulNBits b32, fp32 math)": ({**wo8, "accuracy_level": 1}, False, ()),
        "int8 weight-only (MatMulNBits b32, int8 math)": ({**wo8, "accuracy_level": 4}, False, ()),
        "int8 per channel, 7-bit (default)": ({**s8, "reduce_range": True}, False, ()),
        "  + logits projection float": ({**s8, "reduce_range": True}, True, ()),
        "int8 per channel, 8-bit": ({**s8, "reduce_range": False}, False, ()),
        "uint8 per channel (u8u8)": ({"weight_type": QuantType.QUInt8, "per_channel": True}, False, ()),
        "7-bit, encoder only (decoders float)": ({**s8, "reduce_range": True}, False, GRAPHS[1:]),
    }
    from squeezebench.hardware.cpu import cpu_flags, cpu_model, ort_int8_kernel

    flags = [f for f in cpu_flags() if f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")]
    print(f"{src.parent.name} {args.dataset} ({args.limit} utterances, seed {args.seed}); reference: the original's "
          f"transcripts; 1 thread; {cpu_model()} ({', '.join(flags)}; ORT int8 kernel: "
          f"{ort_int8_kernel({'reduce_range': False})})")
    with tempfile.TemporaryDirectory(prefix="sb-whisper-int8-") as tmp:
        for i, (name, (kwargs, keep_logits, float_graphs)) in enumerate(settings.items()):
            folder = Path(tmp) / f"v{i}"
            shutil.copytree(src, folder)
            for graph in GRAPHS:
                if graph not in float_graphs:
                    exclude = logits_nodes(src / f"{graph}.onnx") if keep_logits and graph != "encoder" else []
                    quantize(src / f"{graph}.onnx", folder / f"{graph}.onnx", exclude, kwargs)
            bundle, executable = load_artifact(folder, task, "cpu", 1)
            m = task.evaluate(executable, bundle, task.prepare(dataset, bundle, protocol), protocol,
                              {"transcripts": reference}).metrics
            lo, hi = m["wer"]["ci95"]
            size = sum(f.stat().st_size for f in folder.glob("*.onnx")) / 1e6
            print(f"{name:<38} WER {100 * m['wer']['value']:6.2f} % [{100 * lo:.1f}–{100 * hi:.1f}]  same transcript "
                  f"{m['transcript_agreement']['value']:.3f}  RTF {m['real_time_factor']['value']:.3f}  {size:.1f} MB",
                  flush=True)
            shutil.rmtree(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
