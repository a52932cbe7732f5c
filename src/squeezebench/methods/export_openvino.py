"""openvino, openvino-int8, openvino-int8-weights: export the task's module to an OpenVINO IR.

The wrapped module (forward(**inputs) -> one tensor) is converted directly from PyTorch with
``openvino.convert_model`` (no ONNX step), inputs named after the task and with a dynamic batch
(and, for token inputs, sequence) dimension. ``openvino-int8`` then runs NNCF post-training
quantization (weights and activations, calibrated on task data); ``openvino-int8-weights`` runs
NNCF weight-only compression. The IR is saved as model.xml (graph) + model.bin (weights).

Pair: loaded by the ``openvino`` runtime (runtimes/openvino.py), told what it needs by an OpenVinoEntry.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional

import numpy as np
import torch

from squeezebench.errors import SqueezebenchError
from squeezebench.methods.base import (POSITIVE, ExportResult, MethodConfig, MethodContext,
                                      Range, calibration_count, register_export)
from squeezebench.methods.export_onnx import check_inputs, compare_graph, graph_examples, graph_outputs
from squeezebench.methods.lib.exports import example_inputs
from squeezebench.methods.lib.openvino_lm import convert_stateful, stateful_lm_module, write_genai_folder
from squeezebench.models.graphs import ExportGraphs, GraphSpec, export_graphs_of
from squeezebench.runtimes.graphs import GraphFile
from squeezebench.runtimes.openvino import BIN_FILE, INSTALL_HINT, XML_FILE, OpenVinoEntry
from squeezebench.runtimes.openvino_lm import GENAI_DIR, MODEL_XML

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OpenVinoConfig(MethodConfig):
    """precision: how the IR stores weights (fp16 halves the file; the CPU plugin computes in f32 on CPUs
    without native fp16/bf16, see the runtime's inference_precision)."""

    name: ClassVar[str] = "openvino"
    precision: Literal["fp32", "fp16"] = "fp32"


@dataclass(frozen=True)
class OpenVinoInt8Config(MethodConfig):
    """samples: calibration inputs (default: the run's --calibration-samples); model_type: auto picks
    'transformer' (NNCF keeps softmax/layer-norm paths in float) when the model has attention layers."""

    name: ClassVar[str] = "openvino-int8"
    bounds: ClassVar[dict[str, Range]] = {"samples": POSITIVE}
    samples: Optional[int] = None
    model_type: Literal["auto", "transformer", "cnn"] = "auto"
    preset: Literal["auto", "performance", "mixed"] = "auto"


@dataclass(frozen=True)
class OpenVinoInt8WeightsConfig(MethodConfig):
    """mode: asymmetric (zero point) or symmetric per-channel int8 weights."""

    name: ClassVar[str] = "openvino-int8-weights"
    mode: Literal["int8_asym", "int8_sym"] = "int8_asym"


def _check(config: MethodConfig, ctx: MethodContext) -> Optional[str]:
    """nncf for the compressing variants (openvino itself: the runtime's check, run first by register_export)."""
    if config.name != "openvino":
        try:
            import nncf  # noqa: F401
        except ImportError:
            return f"nncf is not installed; {INSTALL_HINT}"
    return None


def convert(wrapped: torch.nn.Module, ctx: MethodContext) -> Any:
    """An ov.Model of ``wrapped``: named task inputs, dynamic batch (and token sequence) dimensions."""
    import openvino as ov

    example = example_inputs(ctx, ctx.bundle.module, 1, "an OpenVINO export")[0]
    try:
        model = ov.convert_model(wrapped, example_input=example)
    except Exception as exc:  # noqa: BLE001 - the converter raises many types; one clear line
        raise SqueezebenchError(f"openvino.convert_model failed for this model: {str(exc).splitlines()[0]}") from None
    names = [i.get_any_name() for i in model.inputs]
    if sorted(names) != sorted(example):
        raise SqueezebenchError(f"the OpenVINO model has inputs {names}, expected the task's {list(example)}")
    shapes = {}
    for name, tensor in example.items():
        dims = list(tensor.shape)
        dynamic = [-1] + ([-1] * (len(dims) - 1) if not tensor.is_floating_point() else dims[1:])
        shapes[name] = ov.PartialShape(dynamic)
    try:
        model.reshape(shapes)
    except RuntimeError as exc:
        log.warning("keeping the converter's input shapes; reshape to %s failed: %s", shapes, exc)
    return model


def _save(model: Any, directory: Path, compress_to_fp16: bool = False) -> list[Path]:
    import openvino as ov

    ov.save_model(model, str(directory / XML_FILE), compress_to_fp16=compress_to_fp16)
    return [directory / BIN_FILE]


def _entry(model: Any, extra: dict[str, Any], precision: Optional[str] = None) -> OpenVinoEntry:
    import openvino as ov

    shapes = {i.get_any_name(): str(i.get_partial_shape()) for i in model.inputs}
    export = {"converter": "openvino.convert_model (PyTorch frontend, no ONNX)", "input_shapes": shapes, **extra}
    return OpenVinoEntry(openvino_xml=XML_FILE, openvino_version=ov.get_version(),
                         openvino_inference_precision=precision, export=export)


def export_stateful_lm(wrapped, ctx: MethodContext, directory: Path, compress, extra: dict[str, Any],
                       precision: Optional[str] = None, fp16: bool = False) -> Optional[ExportResult]:
    """A decoder-only LM as the stateful IR + tokenizer folder OpenVINO GenAI loads (methods/lib/openvino_lm.py),
    ``compress(model)`` applied to it; None when ``wrapped`` is not an LM's next-token forward or the conversion
    fails (then the caller writes the stateless graph and the run's notes say why)."""
    import openvino as ov

    module = stateful_lm_module(wrapped)
    if module is None:
        return None
    prompt = example_inputs(ctx, module, 1, "an OpenVINO export")[0]["input_ids"][:1]
    try:
        model, facts = convert_stateful(module)
        files, lm = write_genai_folder(model, module, getattr(ctx.bundle, "tokenizer", None), Path(directory),
                                       compress, prompt, facts, fp16,
                                       kv_cache_precision=precision)  # f32 compute: an f32 cache too
    except SqueezebenchError as exc:
        shutil.rmtree(Path(directory) / GENAI_DIR, ignore_errors=True)
        log.warning("stateless OpenVINO graph instead of the stateful LM: %s", exc)
        ctx.notes.append(f"OpenVINO: stateless graph (no KV cache): {exc}")
        return None
    ctx.notes.append("OpenVINO stateful LM (KV cache in the IR), generation on OpenVINO GenAI where installed")
    return ExportResult("openvino", files, OpenVinoEntry(
        openvino_xml=f"{GENAI_DIR}/{MODEL_XML}", openvino_version=ov.get_version(),
        openvino_inference_precision=precision, stateful_lm=lm,
        export={"converter": lm.converter, **extra}))


@register_export(OpenVinoConfig, "OpenVINO IR (converted from PyTorch), run by the OpenVINO CPU plugin",
                 runtime="openvino", check=_check, devices=("cpu",))
def export_openvino(wrapped, config: OpenVinoConfig, ctx: MethodContext, directory: Path) -> ExportResult:
    graphs = export_graphs_of(ctx.task, ctx.bundle)
    if graphs is not None:
        # f32 compute: the plugin's default is bf16 on CPUs that have it, which changes greedy tokens
        return export_openvino_graphs(graphs, ctx, Path(directory), None, config.precision == "fp16",
                                      {"precision": config.precision}, precision="f32")
    result = export_stateful_lm(wrapped, ctx, Path(directory), None, {"precision": config.precision},
                                precision="f32", fp16=config.precision == "fp16")
    if result is not None:
        files = result.weight_files
    else:
        model = convert(wrapped, ctx)
        files = _save(model, directory, compress_to_fp16=config.precision == "fp16")
    ctx.facts.update(in_memory_compressed=False, in_memory_format=(
        "fp32" if config.precision == "fp32" else
        "fp16 weights in the IR, f32 compute; whether the CPU plugin keeps them as fp16 in RAM is not verified"))
    if result is not None:
        return result
    # f32 compute, as the variant's name says: the CPU plugin's default is bf16 on CPUs that have bf16 instructions
    return ExportResult("openvino", files, _entry(model, {"precision": config.precision}, precision="f32"))


def _is_transformer(module: torch.nn.Module) -> bool:
    return any("attention" in type(m).__name__.lower() for m in module.modules())


@register_export(OpenVinoInt8Config, "OpenVINO IR + NNCF post-training int8 quantization (weights and activations)",
                 runtime="openvino", check=_check, devices=("cpu",), needs_calibration=True)
def export_openvino_int8(wrapped, config: OpenVinoInt8Config, ctx: MethodContext, directory: Path) -> ExportResult:
    import nncf

    def quantize(model, calibration: list[dict], module: torch.nn.Module):
        names = [i.get_any_name() for i in model.inputs]
        dataset = nncf.Dataset(calibration, lambda d: {n: d[n].numpy() for n in names})
        kwargs: dict[str, Any] = {"subset_size": len(calibration)}
        if _is_transformer(module) if config.model_type == "auto" else config.model_type == "transformer":
            kwargs["model_type"] = nncf.ModelType.TRANSFORMER
        if config.preset != "auto":
            kwargs["preset"] = nncf.QuantizationPreset(config.preset)
        try:
            return nncf.quantize(model, dataset, **kwargs)
        except Exception as exc:  # noqa: BLE001
            raise SqueezebenchError(f"nncf.quantize failed: {str(exc).splitlines()[0]}") from None

    transformer = _is_transformer(wrapped) if config.model_type == "auto" else config.model_type == "transformer"
    graphs = export_graphs_of(ctx.task, ctx.bundle)
    if graphs is not None:
        result = export_openvino_graphs(graphs, ctx, Path(directory), quantize, False, {
            "quantization": "nncf.quantize", "nncf_version": nncf.__version__, "preset": config.preset},
            config.samples or calibration_count(ctx))
        ctx.facts.update(in_memory_compressed=True, in_memory_format=(
            "int8 weights + int8 activations (NNCF FakeQuantize, executed by int8 kernels)"))
        return result
    model = convert(wrapped, ctx)
    calibration = ctx.calibration(config.samples or calibration_count(ctx))
    if not calibration:
        raise SqueezebenchError("openvino-int8 got no calibration inputs from the task data; raise --limit")
    quantized = quantize(model, calibration, wrapped)
    files = _save(quantized, directory)
    ctx.facts.update(in_memory_compressed=True, in_memory_format=(
        "int8 weights + int8 activations (NNCF FakeQuantize, executed by int8 kernels)"),
        calibration_samples=len(calibration))
    return ExportResult("openvino", files, _entry(quantized, {
        "quantization": "nncf.quantize", "nncf_version": nncf.__version__, "calibration_samples": len(calibration),
        "model_type": "transformer" if transformer else "default", "preset": config.preset}))


@register_export(OpenVinoInt8WeightsConfig, "OpenVINO IR + NNCF weight-only int8 compression (no calibration)",
                 runtime="openvino", check=_check, devices=("cpu",))
def export_openvino_int8_weights(wrapped, config: OpenVinoInt8WeightsConfig, ctx: MethodContext,
                                 directory: Path) -> ExportResult:
    import nncf

    mode = nncf.CompressWeightsMode.INT8_ASYM if config.mode == "int8_asym" else nncf.CompressWeightsMode.INT8_SYM

    def compress(model, calibration, module):
        try:
            return nncf.compress_weights(model, mode=mode)
        except Exception as exc:  # noqa: BLE001
            raise SqueezebenchError(f"nncf.compress_weights failed: {str(exc).splitlines()[0]}") from None

    extra = {"quantization": "nncf.compress_weights", "nncf_version": nncf.__version__, "mode": config.mode}
    graphs = export_graphs_of(ctx.task, ctx.bundle)
    if graphs is not None:
        result = export_openvino_graphs(graphs, ctx, Path(directory), compress, False, extra)
    else:
        result = export_stateful_lm(wrapped, ctx, Path(directory), lambda m: compress(m, None, wrapped), extra)
    if result is None:
        compressed = compress(convert(wrapped, ctx), None, wrapped)
        files = _save(compressed, directory)
    ctx.facts.update(in_memory_compressed=True, in_memory_format=(
        f"{config.mode} per-channel weights, decompressed inside f32 kernels; activations f32"))
    if result is not None:
        return result
    return ExportResult("openvino", files, _entry(compressed, extra))


# --- several graphs (an encoder-decoder: the task's export_graphs hook) ------------------------------------
INT8_MIN_COSINE = 0.9  # sanity check of a quantised graph's first output against PyTorch
FP32_REL_TOL = 1e-3


def convert_graph(spec: GraphSpec, example: dict[str, torch.Tensor]) -> Any:
    """ov.Model of one graph: inputs and outputs named as the spec says, its dynamic axes dynamic."""
    import openvino as ov

    try:
        model = ov.convert_model(spec.module, example_input=tuple(example[n] for n in spec.input_names))
    except Exception as exc:  # noqa: BLE001 - the converter raises many types; one clear line
        raise SqueezebenchError(f"openvino.convert_model failed for this model: {str(exc).splitlines()[0]}") from None
    if len(model.inputs) != len(spec.input_names) or len(model.outputs) != len(spec.output_names):
        raise SqueezebenchError(f"the OpenVINO graph has {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
                                f"expected {len(spec.input_names)} and {len(spec.output_names)}")
    for port, name in list(zip(model.inputs, spec.input_names)) + list(zip(model.outputs, spec.output_names)):
        port.get_tensor().set_names({name})
    shapes = {}
    for name in spec.input_names:
        dims = list(example[name].shape)
        shapes[name] = ov.PartialShape([-1 if i in spec.dynamic_axes.get(name, {}) else d for i, d in enumerate(dims)])
    model.reshape(shapes)
    return model


def _compare_ov_graph(model: Any, spec: GraphSpec, inputs: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
    import openvino as ov

    request = ov.Core().compile_model(model, "CPU", config={"INFERENCE_PRECISION_HINT": "f32"}).create_infer_request()
    diffs, scales, cosines = [], [], []
    for inp in inputs:
        ref = graph_outputs(spec.module, inp, list(spec.input_names))
        result = request.infer({n: inp[n].numpy() for n in spec.input_names})
        got = [np.array(result[i]) for i in range(len(spec.output_names))]
        d, s, c = compare_graph(got, ref)
        diffs.append(d), scales.append(s), cosines.append(c)
    return {"max_abs_diff": max(diffs), "reference_max_abs": max(scales), "mean_cosine": min(cosines),
            "inputs": [{k: list(v.shape) for k, v in i.items()} for i in inputs]}


def export_openvino_graphs(graphs: ExportGraphs, ctx: MethodContext, directory: Path, compress, fp16: bool,
                           extra: dict[str, Any], calibration_samples: int = 2,
                           precision: Optional[str] = None) -> ExportResult:
    """One ``NAME.xml`` + ``NAME.bin`` per graph, checked against PyTorch (fp32: max abs diff; compressed:
    cosine of the first output); ``compress(model, examples, module)`` quantises a graph when given."""
    if ctx.calibration is None:
        raise SqueezebenchError("an OpenVINO export needs example inputs from the task data")
    samples = ctx.calibration(max(2, calibration_samples))
    files, checks = [], {}
    for name, spec in graphs.graphs.items():
        spec.module.eval()
        examples = graph_examples(spec, samples)
        model = convert_graph(spec, examples[0])
        if compress is not None:
            model = compress(model, examples, spec.module)
        check = _compare_ov_graph(model, spec, check_inputs(examples))
        if compress is None and not fp16:
            tol = FP32_REL_TOL * max(1.0, check["reference_max_abs"])
            if not np.isfinite(check["max_abs_diff"]) or check["max_abs_diff"] > tol:
                raise SqueezebenchError(f"the OpenVINO {name} graph diverges from PyTorch: max abs diff "
                                        f"{check['max_abs_diff']:.3g} > {tol:.3g}")
        elif not np.isfinite(check["mean_cosine"]) or check["mean_cosine"] < INT8_MIN_COSINE:
            raise SqueezebenchError(f"the compressed OpenVINO {name} graph is far from PyTorch: mean cosine "
                                    f"{check['mean_cosine']:.3f} < {INT8_MIN_COSINE}")
        checks[name] = check
        import openvino as ov

        ov.save_model(model, str(directory / f"{name}.xml"), compress_to_fp16=fp16)
        files.append(directory / f"{name}.bin")
    if compress is None:
        ctx.facts.update(in_memory_compressed=False, in_memory_format="fp32" if not fp16 else
                         "fp16 weights in the IR, f32 compute; whether the CPU plugin keeps them as fp16 in RAM "
                         "is not verified")
    ctx.notes.append(f"OpenVINO export of {len(graphs.graphs)} graphs ({', '.join(graphs.graphs)})")
    ctx.notes.extend(graphs.notes)
    first = next(iter(graphs.graphs))
    import openvino as ov

    return ExportResult("openvino", files, OpenVinoEntry(
        openvino_xml=f"{first}.xml", openvino_version=ov.get_version(), entry_graph=first,
        generation=graphs.generation, openvino_inference_precision=precision,
        graphs={n: GraphFile(file=f"{n}.xml", inputs=list(s.input_names), outputs=list(s.output_names))
                for n, s in graphs.graphs.items()},
        export={"converter": "openvino.convert_model (PyTorch frontend, no ONNX)", "check_vs_pytorch": checks,
                "calibration_samples": len(samples), **extra}))


@dataclass(frozen=True)
class OpenVinoInt4Config(MethodConfig):
    """NNCF weight-only int4 (data-free): mode sym/asym, group_size weights per scale, ratio: share of the
    compressible layers put in int4 (NNCF keeps the rest, e.g. the embedding, int8_asym)."""

    name: ClassVar[str] = "openvino-int4"
    mode: Literal["int4_sym", "int4_asym"] = "int4_sym"
    group_size: int = 32  # as llama.cpp's Q4_0; NNCF's 128 does not divide SmolLM2's 576-wide rows
    ratio: float = 1.0
    bounds: ClassVar[dict[str, Range]] = {
        "ratio": Range(0, 1, lo_open=True),
        "group_size": Range(8, also=((-1, "one scale per output channel"),))}


@register_export(OpenVinoInt4Config, "OpenVINO IR + NNCF weight-only int4 compression (groups of 32, no calibration)",
                 runtime="openvino", check=_check, devices=("cpu",))
def export_openvino_int4(wrapped, config: OpenVinoInt4Config, ctx: MethodContext, directory: Path) -> ExportResult:
    import nncf

    mode = nncf.CompressWeightsMode.INT4_SYM if config.mode == "int4_sym" else nncf.CompressWeightsMode.INT4_ASYM

    def compress(model):
        try:
            return nncf.compress_weights(model, mode=mode, group_size=config.group_size, ratio=config.ratio)
        except Exception as exc:  # noqa: BLE001
            raise SqueezebenchError(f"nncf.compress_weights failed: {str(exc).splitlines()[0]}") from None

    extra = {"quantization": "nncf.compress_weights", "nncf_version": nncf.__version__, "mode": config.mode,
             "group_size": config.group_size, "ratio": config.ratio}
    result = export_stateful_lm(wrapped, ctx, Path(directory), compress, extra)
    if result is None:
        compressed = compress(convert(wrapped, ctx))
        files = _save(compressed, directory)
    ctx.facts.update(in_memory_compressed=True, in_memory_format=(
        f"{config.mode} weights in groups of {config.group_size} ({config.ratio:.0%} of layers; the rest int8_asym), "
        "decompressed inside the CPU plugin's kernels; activations float"))
    return result or ExportResult("openvino", files, _entry(compressed, extra))
