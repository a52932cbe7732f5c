"""ONNX export for ONNX Runtime: fp32 (``onnx``), int8 dynamic and int8 static (QDQ) quantisation.

The task's wrapped module (``forward(**inputs) -> tensor``) is exported with dynamic batch (and sequence)
axes, checked against PyTorch on the example input and on a second shape, and saved as ``model.onnx``.
The TorchScript-based exporter is the default: on this project's CPU it gave the faster int8 graph
(see the notes on dependencies); ``exporter=dynamo`` tries torch.export and falls back to it on failure.

Pair: loaded by the ``onnxruntime`` runtime (runtimes/onnxruntime.py), told what it needs by an OnnxRuntimeEntry.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional

import numpy as np
import torch

from squeezebench.errors import SqueezebenchError
from squeezebench.methods.base import (POSITIVE, ExportResult, MethodConfig, MethodContext,
                                      Range, calibration_count, register_export, stack_inputs)
from squeezebench.methods.lib.exports import example_inputs
from squeezebench.models.graphs import ExportGraphs, GraphSpec, export_graphs_of
from squeezebench.runtimes.graphs import GraphFile
from squeezebench.runtimes.onnxruntime import (DEFAULT_OPT_LEVEL, MODEL_FILE, NUMPY_TYPES, OnnxRuntimeEntry,
                                               open_session, optimized_graph_summary, weight_files_of)

log = logging.getLogger(__name__)

# Export check: max |ORT - PyTorch| <= REL_TOL * max(1, max |PyTorch output|); looser for half-precision models.
FP32_REL_TOL = 1e-3
HALF_REL_TOL = 2e-2
# int8 graphs are only sanity-checked (task quality measures their real cost): mean cosine to PyTorch.
INT8_MIN_COSINE = 0.9


@dataclass(frozen=True)
class OnnxConfig(MethodConfig):
    """fp32 ONNX graph run by ONNX Runtime."""

    name: ClassVar[str] = "onnx"
    bounds: ClassVar[dict[str, Range]] = {"opset": Range(lo=7)}
    opset: int = 17
    exporter: Literal["torchscript", "dynamo"] = "torchscript"


@dataclass(frozen=True)
class OnnxInt8DynamicConfig(OnnxConfig):
    """ONNX export + ``quantize_dynamic``: int8 weights, activations quantised at run time."""

    name: ClassVar[str] = "onnx-int8-dynamic"
    per_channel: bool = True  # per-tensor lost more here: MiniLM cosine to fp32 0.956 vs 0.994 per channel
    # 7-bit weights: ONNX Runtime's u8s8 kernels on AVX2 without VNNI add pairs of uint8 x int8 products in int16
    # (VPMADDUBSW), which saturates with 8-bit weights (Whisper tiny.en +30 WER points there; a tiny Whisper's
    # decoder-graph cosine to fp32 0.956 on an emulated AVX2-only CPU against 0.9995 with VNNI). With weights in
    # [-64, 64] no pair can saturate (255 x 64 x 2 < 32767): that graph kept 0.998 on both kinds, and MiniLM
    # 0.9931 (VNNI) / 0.9934 (AVX2) against 0.9935 / 0.9926 with 8 bits (benchmarks/int8_cpu_kinds.py), at the
    # same speed on VNNI.
    reduce_range: bool = True


@dataclass(frozen=True)
class OnnxInt8StaticConfig(OnnxConfig):
    """ONNX export + ``quantize_static`` (QDQ): int8 weights and activations, ranges from calibration data."""

    name: ClassVar[str] = "onnx-int8-static"
    bounds: ClassVar[dict[str, Range]] = {"calibration_samples": POSITIVE}
    calibration_samples: Optional[int] = None  # default: --calibration-samples
    calibrate: Literal["minmax", "entropy", "percentile"] = "minmax"
    per_channel: bool = True
    reduce_range: bool = True  # 7-bit weights: no int16 saturation in the u8s8 kernels of AVX2-only CPUs
    activations: Literal["uint8", "int8"] = "uint8"
    # MatMuls fed by a GELU (transformer FFN down-projections) stay float: the GELU's long tail breaks static
    # int8 ranges (MiniLM cosine to fp32 0.947 with them quantised, 0.994 without)
    skip_gelu_inputs: bool = True


# --- export -----------------------------------------------------------------------------------------------
def _module_dtype(module: torch.nn.Module) -> torch.dtype:
    for t in list(module.parameters()) + list(module.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def _dynamic_axes(example: dict[str, torch.Tensor], output: torch.Tensor) -> dict[str, dict[int, str]]:
    """Batch is dynamic everywhere; the sequence axis of integer (token) inputs too."""
    axes: dict[str, dict[int, str]] = {}
    for name, t in example.items():
        axes[name] = {0: "batch"}
        if t.dim() >= 2 and not t.is_floating_point():
            axes[name][1] = "sequence"
    has_sequence = any(1 in a for a in axes.values())
    axes["output"] = {0: "batch", 1: "sequence"} if has_sequence and output.dim() >= 3 else {0: "batch"}
    return axes


def _export(module, example: dict[str, torch.Tensor], path: Path, opset: int, exporter: str,
            axes: dict[str, dict[int, str]]) -> None:
    names = list(example)
    args = tuple(example[n] for n in names)
    kwargs: dict[str, Any] = dict(input_names=names, output_names=["output"], opset_version=opset, dynamic_axes=axes)
    if exporter == "dynamo":
        torch.onnx.export(module, args, str(path), dynamo=True, external_data=True, **kwargs)
    else:
        torch.onnx.export(module, args, str(path), dynamo=False, do_constant_folding=True, **kwargs)


def export_onnx(module: torch.nn.Module, config: OnnxConfig, example: dict[str, torch.Tensor],
                path: Path) -> dict[str, Any]:
    """Write ``path`` (fp32 or the module's dtype); returns what was used (exporter, opset, seconds)."""
    import onnx

    with torch.inference_mode():
        output = module(**example)
    axes = _dynamic_axes(example, output)
    facts: dict[str, Any] = {"exporter_requested": config.exporter, "dynamic_axes": axes}
    t0 = time.perf_counter()
    used = config.exporter
    if config.exporter == "dynamo":
        try:
            _export(module, example, path, config.opset, "dynamo", axes)
        except Exception as exc:  # noqa: BLE001 - torch.export fails in many ways; fall back, say why
            why = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
            log.warning("dynamo ONNX export failed (%s); falling back to the TorchScript-based exporter", why)
            facts["exporter_fallback_reason"] = why
            for stale in path.parent.glob(path.name + "*"):
                stale.unlink()
            used = "torchscript"
    if used == "torchscript":
        _export(module, example, path, config.opset, "torchscript", axes)
    facts["exporter"] = used
    facts["export_s"] = time.perf_counter() - t0
    model = onnx.load(str(path), load_external_data=False)
    facts["opset"] = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    facts["input_names"] = list(example)
    return facts


# --- verification -----------------------------------------------------------------------------------------
def _second_shape(samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """A batch of 2 with half the sequence length: proves the dynamic axes really are dynamic."""
    pair = samples[:2] if len(samples) >= 2 else samples * 2
    out = {}
    for name in pair[0]:
        t = torch.cat([s[name] for s in pair])
        if t.dim() >= 2 and not t.is_floating_point() and t.shape[1] >= 4:
            t = t[:, : t.shape[1] // 2].clone()
            if name == "attention_mask":  # padding in one row: the graph must honour the mask
                t[1, t.shape[1] // 2:] = 0
        out[name] = t
    return out


def compare_with_pytorch(path: Path, module: torch.nn.Module, inputs: list[dict[str, torch.Tensor]],
                         threads: int) -> dict[str, Any]:
    """Max abs difference and mean row cosine between ONNX Runtime and PyTorch on each input."""
    session = open_session(path, threads)
    types = {i.name: NUMPY_TYPES.get(i.type, np.float32) for i in session.get_inputs()}
    diffs, scales, cosines, shapes = [], [], [], []
    for inp in inputs:
        with torch.inference_mode():
            ref = module(**inp).float().numpy()
        feeds = {k: inp[k].numpy().astype(t) for k, t in types.items()}
        got = session.run(None, feeds)[0].astype(np.float32)
        if got.shape != ref.shape:
            raise SqueezebenchError(f"the ONNX graph gives shape {got.shape} where PyTorch gives {ref.shape} "
                                    f"(inputs {[list(v.shape) for v in inp.values()]})")
        diffs.append(float(np.abs(got - ref).max()))
        scales.append(float(np.abs(ref).max()))
        a, b = got.reshape(len(got), -1), ref.reshape(len(ref), -1)
        cosines.append(float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)).mean()))
        shapes.append({k: list(v.shape) for k, v in inp.items()})
    return {"max_abs_diff": max(diffs), "reference_max_abs": max(scales), "mean_cosine": min(cosines),
            "inputs": shapes}


def _check_fp(result: dict[str, Any], dtype: torch.dtype) -> None:
    rel = FP32_REL_TOL if dtype == torch.float32 else HALF_REL_TOL
    tol = rel * max(1.0, result["reference_max_abs"])
    result["tolerance"] = f"max abs diff <= {rel:g} * max(1, max |PyTorch output|) = {tol:.3g}"
    if not np.isfinite(result["max_abs_diff"]) or result["max_abs_diff"] > tol:
        raise SqueezebenchError(f"the exported ONNX graph diverges from PyTorch: max abs diff "
                                f"{result['max_abs_diff']:.3g} > {tol:.3g} (inputs {result['inputs']}); "
                                "try exporter=dynamo or another opset")


def _weight_format(config) -> str:
    return f"{'per channel' if config.per_channel else 'per tensor'}{', 7-bit range' if config.reduce_range else ''}"


def _check_int8(result: dict[str, Any]) -> None:
    result["tolerance"] = f"mean cosine to PyTorch >= {INT8_MIN_COSINE} (sanity check; task quality measures the cost)"
    if "next_token_agreement" in result:
        log.info("int8 decoder graph: next-token agreement with PyTorch %.3f, cosine %.4f",
                 result["next_token_agreement"], result["mean_cosine"])
    if not np.isfinite(result["mean_cosine"]) or result["mean_cosine"] < INT8_MIN_COSINE:
        raise SqueezebenchError(f"the int8 ONNX graph's output is far from PyTorch's: mean cosine "
                                f"{result['mean_cosine']:.3f} < {INT8_MIN_COSINE}; the quantised graph is broken")


# --- methods ----------------------------------------------------------------------------------------------
def _check(config: OnnxConfig, ctx: MethodContext) -> Optional[str]:
    """(ONNX Runtime on the device: the runtime's check, run first by register_export.)"""
    if config.exporter == "dynamo":
        try:
            import onnxscript  # noqa: F401
        except ImportError:
            log.info("onnxscript is missing; exporter=dynamo will fall back to the TorchScript-based exporter")
    return None


def _check_int8_method(config: OnnxConfig, ctx: MethodContext) -> Optional[str]:
    reason = _check(config, ctx)
    if reason:
        return reason
    if ctx.bundle is not None and ctx.bundle.module is not None and _module_dtype(ctx.bundle.module) != torch.float32:
        return "ONNX Runtime int8 quantisation needs an fp32 model (put the cast after, not before)"
    return None


def _export_fp32(module, config: OnnxConfig, ctx: MethodContext, path: Path) -> tuple[dict, list]:
    samples = example_inputs(ctx, module, 2, "ONNX export")
    facts = export_onnx(module, config, samples[0], path)
    inputs = [samples[0], _second_shape(samples)]
    check = compare_with_pytorch(path, module, inputs, torch.get_num_threads())
    _check_fp(check, _module_dtype(module))
    facts["check_vs_pytorch"] = check
    return facts, inputs


def _finish(path: Path, config: OnnxConfig, ctx: MethodContext, export: dict[str, Any],
            quantization: Optional[dict[str, Any]], fmt: str) -> ExportResult:
    summary = optimized_graph_summary(path, DEFAULT_OPT_LEVEL, torch.get_num_threads())
    ctx.facts.update(in_memory_compressed=bool(quantization) and summary["weights_int8_in_memory"],
                     in_memory_format=fmt if summary["weights_int8_in_memory"] or not quantization
                     else f"{fmt}; but ONNX Runtime's optimised graph holds float weights")
    ctx.notes.append(f"ONNX export with the {export['exporter']} exporter, opset {export['opset']}")
    if "exporter_fallback_reason" in export:
        ctx.notes.append(f"dynamo export failed, fell back to TorchScript: {export['exporter_fallback_reason']}")
    entry = OnnxRuntimeEntry(onnx_file=MODEL_FILE, onnx_export=export, ort_graph_optimization_level=DEFAULT_OPT_LEVEL,
                             ort_optimized_graph=summary, quantization=quantization or None)
    return ExportResult(runtime="onnxruntime", weight_files=weight_files_of(path), entry=entry)


@register_export(OnnxConfig, "export to ONNX (fp32) and run with ONNX Runtime", runtime="onnxruntime", check=_check,
                 devices=("cpu", "cuda"))
def onnx_export(module, config: OnnxConfig, ctx: MethodContext, directory: Path) -> ExportResult:
    graphs = export_graphs_of(ctx.task, ctx.bundle)
    if graphs is not None:
        return export_onnx_graphs(graphs, config, ctx, Path(directory), None)
    path = Path(directory) / MODEL_FILE
    export, _ = _export_fp32(module, config, ctx, path)
    dtype = str(_module_dtype(module)).removeprefix("torch.")
    return _finish(path, config, ctx, export, None, f"{dtype} (ONNX Runtime)")


def _quantize(module, config: OnnxConfig, ctx: MethodContext, directory: Path, quantize) -> ExportResult:
    """Export fp32 to a temporary folder, quantise into the artifact, check the int8 graph against PyTorch."""
    path = Path(directory) / MODEL_FILE
    with tempfile.TemporaryDirectory(prefix="squeezebench-onnx-") as tmp:
        fp32 = Path(tmp) / MODEL_FILE
        export, inputs = _export_fp32(module, config, ctx, fp32)
        t0 = time.perf_counter()
        quantization = quantize(fp32, path)
        quantization["quantize_s"] = time.perf_counter() - t0
        quantization["fp32_onnx_bytes"] = sum(f.stat().st_size for f in weight_files_of(fp32))
    check = compare_with_pytorch(path, module, inputs, torch.get_num_threads())
    _check_int8(check)
    quantization["check_vs_pytorch"] = check
    return _finish(path, config, ctx, export, quantization, quantization["format"])


@register_export(OnnxInt8DynamicConfig, "ONNX export + ONNX Runtime dynamic int8 quantisation (weights int8, "
                 "activations quantised per call)", runtime="onnxruntime", check=_check_int8_method)
def onnx_int8_dynamic(module, config: OnnxInt8DynamicConfig, ctx: MethodContext, directory: Path) -> ExportResult:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    def quantize(src: Path, dst: Path) -> dict[str, Any]:
        quantize_dynamic(src, dst, weight_type=QuantType.QInt8, per_channel=config.per_channel,
                         reduce_range=config.reduce_range)
        return {"api": "onnxruntime.quantization.quantize_dynamic", "weight_type": "QInt8",
                "per_channel": config.per_channel, "reduce_range": config.reduce_range,
                "activations": "uint8, quantised at run time per call",
                "format": f"int8 weights ({_weight_format(config)}), dynamic activations"}

    graphs = export_graphs_of(ctx.task, ctx.bundle)
    if graphs is not None:
        return export_onnx_graphs(graphs, config, ctx, Path(directory), lambda src, dst, examples: quantize(src, dst))
    return _quantize(module, config, ctx, directory, quantize)


class _Calibration:
    """onnxruntime CalibrationDataReader over the task's calibration inputs."""

    def __init__(self, samples: list[dict[str, torch.Tensor]], types: dict[str, Any]):
        self._items = iter([{k: s[k].numpy().astype(t) for k, t in types.items()} for s in samples])

    def get_next(self) -> Optional[dict[str, np.ndarray]]:
        return next(self._items, None)

    def rewind(self) -> None:  # part of the reader protocol; one pass is all quantize_static needs
        pass


@register_export(OnnxInt8StaticConfig, "ONNX export + ONNX Runtime static int8 quantisation (QDQ, weights and "
                 "activations int8, ranges from calibration data)", runtime="onnxruntime", check=_check_int8_method,
                 needs_calibration=True)
def onnx_int8_static(module, config: OnnxInt8StaticConfig, ctx: MethodContext, directory: Path) -> ExportResult:
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    n = config.calibration_samples or calibration_count(ctx)
    graphs = export_graphs_of(ctx.task, ctx.bundle)
    samples = example_inputs(ctx, module, n, "ONNX export") if graphs is None else []
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[config.calibrate]
    activation = QuantType.QUInt8 if config.activations == "uint8" else QuantType.QInt8

    def quantize(src: Path, dst: Path, examples: Optional[list[dict[str, torch.Tensor]]] = None) -> dict[str, Any]:
        calibration = samples if examples is None else examples
        session = open_session(src, 1)
        types = {i.name: NUMPY_TYPES.get(i.type, np.float32) for i in session.get_inputs()}
        del session
        nodes, skipped = weight_nodes(src, config.skip_gelu_inputs)
        if not nodes:
            raise SqueezebenchError("onnx-int8-static found no MatMul, Gemm or Conv with constant weights to quantise")
        reader = type("Reader", (_Calibration, CalibrationDataReader), {})(calibration, types)
        quantize_static(src, dst, reader, quant_format=QuantFormat.QDQ, per_channel=config.per_channel,
                        activation_type=activation, weight_type=QuantType.QInt8, calibrate_method=method,
                        nodes_to_quantize=nodes, reduce_range=config.reduce_range)
        return {"api": "onnxruntime.quantization.quantize_static", "format_onnx": "QDQ", "weight_type": "QInt8",
                "activation_type": activation.name, "per_channel": config.per_channel,
                "reduce_range": config.reduce_range,
                "calibrate_method": method.name, "calibration_samples": len(calibration),
                "quantized_nodes": len(nodes), "left_float": {"after a GELU": skipped},
                "scope": "MatMul/Gemm/Conv nodes with constant weights (their inputs and weights)",
                "format": f"int8 weights ({_weight_format(config)}), "
                          f"{config.activations} activations (static ranges)"}

    if graphs is not None:
        return export_onnx_graphs(graphs, config, ctx, Path(directory), quantize, n)
    return _quantize(module, config, ctx, directory, quantize)


def weight_nodes(path: Path, skip_gelu_inputs: bool) -> tuple[list[str], int]:
    """Names of MatMul/Gemm/Conv nodes with a constant weight; optionally without those fed by a GELU."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    constants = {t.name for t in model.graph.initializer}
    constants.update(o for n in model.graph.node if n.op_type == "Constant" for o in n.output)
    producer = {o: n for n in model.graph.node for o in n.output}

    def after_gelu(tensor: str, depth: int = 4) -> bool:
        node = producer.get(tensor)
        if node is None or depth == 0:
            return False
        if node.op_type in ("Erf", "Gelu", "FastGelu", "BiasGelu"):
            return True
        return node.op_type in ("Mul", "Add", "Div") and any(after_gelu(i, depth - 1) for i in node.input)

    nodes, skipped = [], 0
    for node in model.graph.node:
        if node.op_type in ("MatMul", "Gemm", "Conv") and len(node.input) > 1 and node.input[1] in constants:
            if skip_gelu_inputs and after_gelu(node.input[0]):
                skipped += 1
            else:
                nodes.append(node.name)
    return nodes, skipped


# --- several graphs (an encoder-decoder: the task's export_graphs hook) ------------------------------------
def graph_examples(spec: GraphSpec, samples: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
    """The graph's example inputs from task samples, floats in the module's dtype."""
    dtype = _module_dtype(spec.module)
    examples = spec.examples(samples)
    if not examples:
        raise SqueezebenchError("the task data gave no example input for an exported graph; raise --limit")
    return [{n: e[n].to(dtype) if e[n].is_floating_point() else e[n] for n in spec.input_names} for e in examples]


def check_inputs(examples: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
    """Two examples plus a batch of two (when two examples share a shape): the dynamic axes must hold."""
    batched = [b for b in stack_inputs(examples, 2) if next(iter(b.values())).shape[0] == 2]
    return examples[:2] + batched[:1]


def graph_outputs(module: torch.nn.Module, inputs: dict[str, torch.Tensor], names: list[str]) -> list[torch.Tensor]:
    with torch.inference_mode():
        out = module(*[inputs[n] for n in names])
    return list(out) if isinstance(out, (tuple, list)) else [out]


def compare_graph(outputs: list[np.ndarray], ref: list[torch.Tensor]) -> tuple[float, float, float]:
    """Max abs difference and reference scale over all outputs; row cosine of the first (logits or states)."""
    diff = max(float(np.abs(o.astype(np.float32) - r.float().numpy()).max()) for o, r in zip(outputs, ref))
    scale = max(float(r.float().abs().max()) for r in ref)
    a, b = outputs[0].astype(np.float32).reshape(-1, outputs[0].shape[-1]), ref[0].float().numpy().reshape(
        -1, outputs[0].shape[-1])
    cos = float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)).mean())
    return diff, scale, cos


def _compare_onnx_graph(path: Path, spec: GraphSpec, inputs: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
    session = open_session(path, torch.get_num_threads())
    types = {i.name: NUMPY_TYPES.get(i.type, np.float32) for i in session.get_inputs()}
    diffs, scales, cosines, same_tokens = [], [], [], []
    for inp in inputs:
        ref = graph_outputs(spec.module, inp, list(spec.input_names))
        got = session.run(list(spec.output_names), {k: inp[k].numpy().astype(t) for k, t in types.items()})
        shapes = [tuple(g.shape) for g in got], [tuple(r.shape) for r in ref]
        if shapes[0] != shapes[1]:
            raise SqueezebenchError(f"the ONNX graph {path.name} gives shapes {shapes[0]} where PyTorch gives {shapes[1]}")
        d, s, c = compare_graph(got, ref)
        diffs.append(d), scales.append(s), cosines.append(c)
        if spec.output_names[0] == "logits":  # a decoder graph: does it pick the same next tokens?
            same_tokens.append(got[0].argmax(-1).reshape(-1) == ref[0].float().numpy().argmax(-1).reshape(-1))
    check = {"max_abs_diff": max(diffs), "reference_max_abs": max(scales), "mean_cosine": min(cosines),
             "inputs": [{k: list(v.shape) for k, v in i.items()} for i in inputs]}
    if same_tokens:
        check["next_token_agreement"] = float(np.concatenate(same_tokens).mean())
    return check


def _export_graph(spec: GraphSpec, example: dict[str, torch.Tensor], path: Path, opset: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    torch.onnx.export(spec.module, tuple(example[n] for n in spec.input_names), str(path), dynamo=False,
                      do_constant_folding=True, input_names=list(spec.input_names),
                      output_names=list(spec.output_names), dynamic_axes=spec.dynamic_axes, opset_version=opset)
    return {"exporter": "torchscript", "opset": opset, "export_s": time.perf_counter() - t0,
            "input_names": list(spec.input_names), "output_names": list(spec.output_names)}


def export_onnx_graphs(graphs: ExportGraphs, config: OnnxConfig, ctx: MethodContext, directory: Path,
                       quantize, calibration_samples: int = 2) -> ExportResult:
    """One ``NAME.onnx`` per graph (TorchScript-based exporter: the KV-cache graphs trace cleanly with it),
    each checked against its PyTorch module, then quantised by ``quantize(src, dst, examples)`` when given."""
    if ctx.calibration is None:
        raise SqueezebenchError("ONNX export needs example inputs from the task data; none were given")
    samples = ctx.calibration(max(2, calibration_samples))
    exports, checks, summaries, quantizations, files = {}, {}, {}, {}, []
    for name, spec in graphs.graphs.items():
        spec.module.eval()
        examples = graph_examples(spec, samples)
        path = directory / f"{name}.onnx"
        with tempfile.TemporaryDirectory(prefix="squeezebench-onnx-") as tmp:
            fp32 = Path(tmp) / path.name if quantize else path
            exports[name] = _export_graph(spec, examples[0], fp32, config.opset)
            check = _compare_onnx_graph(fp32, spec, check_inputs(examples))
            _check_fp(check, _module_dtype(spec.module))
            exports[name]["check_vs_pytorch"] = check
            if quantize:
                t0 = time.perf_counter()
                quantizations[name] = quantize(fp32, path, examples)
                quantizations[name]["quantize_s"] = time.perf_counter() - t0
                quantizations[name]["fp32_onnx_bytes"] = sum(f.stat().st_size for f in weight_files_of(fp32))
        if quantize:
            check = _compare_onnx_graph(path, spec, check_inputs(examples))
            _check_int8(check)
            quantizations[name]["check_vs_pytorch"] = check
        checks[name] = check
        summaries[name] = optimized_graph_summary(path, DEFAULT_OPT_LEVEL, torch.get_num_threads())
        files += weight_files_of(path)
    int8 = all(s["weights_int8_in_memory"] for s in summaries.values())
    fmt = (next(iter(quantizations.values()))["format"] if quantizations
           else f"{str(_module_dtype(next(iter(graphs.graphs.values())).module)).removeprefix('torch.')} (ONNX Runtime)")
    ctx.facts.update(in_memory_compressed=bool(quantize) and int8,
                     in_memory_format=fmt if int8 or not quantize
                     else f"{fmt}; but ONNX Runtime's optimised graphs hold float weights")
    ctx.notes.append(f"ONNX export of {len(graphs.graphs)} graphs ({', '.join(graphs.graphs)}) with the torchscript "
                     f"exporter, opset {config.opset}")
    if config.exporter != "torchscript":
        ctx.notes.append(f"exporter={config.exporter} ignored: multi-graph exports use the torchscript exporter")
    ctx.notes.extend(graphs.notes)
    first = next(iter(graphs.graphs))
    entry = OnnxRuntimeEntry(
        onnx_file=f"{first}.onnx", entry_graph=first, generation=graphs.generation,
        graphs={n: GraphFile(file=f"{n}.onnx", inputs=list(s.input_names), outputs=list(s.output_names))
                for n, s in graphs.graphs.items()},
        onnx_export=exports, ort_graph_optimization_level=DEFAULT_OPT_LEVEL, ort_optimized_graph=summaries,
        quantization=quantizations or None)
    return ExportResult(runtime="onnxruntime", weight_files=files, entry=entry)
