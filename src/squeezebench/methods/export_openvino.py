"""openvino, openvino-int8, openvino-int8-weights: export the task's module to an OpenVINO IR.

The wrapped module (forward(**inputs) -> one tensor) is converted directly from PyTorch with
``openvino.convert_model`` (no ONNX step), inputs named after the task and with a dynamic batch
(and, for token inputs, sequence) dimension. ``openvino-int8`` then runs NNCF post-training
quantization (weights and activations, calibrated on task data); ``openvino-int8-weights`` runs
NNCF weight-only compression. The IR is saved as model.xml (graph) + model.bin (weights).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional

import torch

from squeezebench.errors import SqueezebenchError
from squeezebench.methods.base import calibration_count, ExportResult, MethodConfig, MethodContext, register_export
from squeezebench.runtimes.openvino import BIN_FILE, INSTALL_HINT, XML_FILE, missing_openvino
from squeezebench.runtimes.pytorch import module_dtype

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
    samples: Optional[int] = None
    model_type: Literal["auto", "transformer", "cnn"] = "auto"
    preset: Literal["auto", "performance", "mixed"] = "auto"


@dataclass(frozen=True)
class OpenVinoInt8WeightsConfig(MethodConfig):
    """mode: asymmetric (zero point) or symmetric per-channel int8 weights."""

    name: ClassVar[str] = "openvino-int8-weights"
    mode: Literal["int8_asym", "int8_sym"] = "int8_asym"


def _check(config: MethodConfig, ctx: MethodContext) -> Optional[str]:
    reason = missing_openvino()
    if reason is None and config.name != "openvino":
        try:
            import nncf  # noqa: F401
        except ImportError:
            return f"nncf is not installed; {INSTALL_HINT}"
    return reason


def convert(wrapped: torch.nn.Module, ctx: MethodContext) -> Any:
    """An ov.Model of ``wrapped``: named task inputs, dynamic batch (and token sequence) dimensions."""
    import openvino as ov

    example = _example_inputs(ctx)
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


def _example_inputs(ctx: MethodContext) -> dict[str, torch.Tensor]:
    if ctx.calibration is None:
        raise SqueezebenchError("an OpenVINO export needs example inputs from the task data")
    sample = ctx.calibration(1)
    if not sample:
        raise SqueezebenchError("the task data gave no example input for the OpenVINO export; raise --limit")
    names = ctx.task.input_names or tuple(sample[0])
    dtype = module_dtype(ctx.bundle.module)
    return {n: sample[0][n].to(dtype) if sample[0][n].is_floating_point() else sample[0][n] for n in names}


def _save(model: Any, directory: Path, compress_to_fp16: bool = False) -> list[Path]:
    import openvino as ov

    ov.save_model(model, str(directory / XML_FILE), compress_to_fp16=compress_to_fp16)
    return [directory / BIN_FILE]


def _manifest(model: Any, extra: dict[str, Any]) -> dict[str, Any]:
    import openvino as ov

    shapes = {i.get_any_name(): str(i.get_partial_shape()) for i in model.inputs}
    return {"openvino_xml": XML_FILE, "openvino_version": ov.get_version(), "export": {
        "converter": "openvino.convert_model (PyTorch frontend, no ONNX)", "input_shapes": shapes, **extra}}


@register_export(OpenVinoConfig, "OpenVINO IR (converted from PyTorch), run by the OpenVINO CPU plugin",
                 check=_check, devices=("cpu",))
def export_openvino(wrapped, config: OpenVinoConfig, ctx: MethodContext, directory: Path) -> ExportResult:
    model = convert(wrapped, ctx)
    files = _save(model, directory, compress_to_fp16=config.precision == "fp16")
    ctx.facts.update(in_memory_compressed=False, in_memory_format=(
        "fp32" if config.precision == "fp32" else
        "fp16 weights in the IR, f32 compute; whether the CPU plugin keeps them as fp16 in RAM is not verified"))
    return ExportResult("openvino", files, _manifest(model, {"precision": config.precision}))


def _is_transformer(module: torch.nn.Module) -> bool:
    return any("attention" in type(m).__name__.lower() for m in module.modules())


@register_export(OpenVinoInt8Config, "OpenVINO IR + NNCF post-training int8 quantization (weights and activations)",
                 check=_check, devices=("cpu",), needs_calibration=True)
def export_openvino_int8(wrapped, config: OpenVinoInt8Config, ctx: MethodContext, directory: Path) -> ExportResult:
    import nncf

    model = convert(wrapped, ctx)
    names = [i.get_any_name() for i in model.inputs]
    calibration = ctx.calibration(config.samples or calibration_count(ctx))
    if not calibration:
        raise SqueezebenchError("openvino-int8 got no calibration inputs from the task data; raise --limit")
    dataset = nncf.Dataset(calibration, lambda d: {n: d[n].numpy() for n in names})
    transformer = _is_transformer(wrapped) if config.model_type == "auto" else config.model_type == "transformer"
    kwargs: dict[str, Any] = {"subset_size": len(calibration)}
    if transformer:
        kwargs["model_type"] = nncf.ModelType.TRANSFORMER
    if config.preset != "auto":
        kwargs["preset"] = nncf.QuantizationPreset(config.preset)
    try:
        quantized = nncf.quantize(model, dataset, **kwargs)
    except Exception as exc:  # noqa: BLE001
        raise SqueezebenchError(f"nncf.quantize failed: {str(exc).splitlines()[0]}") from None
    files = _save(quantized, directory)
    ctx.facts.update(in_memory_compressed=True, in_memory_format=(
        "int8 weights + int8 activations (NNCF FakeQuantize, executed by int8 kernels)"),
        calibration_samples=len(calibration))
    return ExportResult("openvino", files, _manifest(quantized, {
        "quantization": "nncf.quantize", "nncf_version": nncf.__version__, "calibration_samples": len(calibration),
        "model_type": "transformer" if transformer else "default", "preset": config.preset}))


@register_export(OpenVinoInt8WeightsConfig, "OpenVINO IR + NNCF weight-only int8 compression (no calibration)",
                 check=_check, devices=("cpu",))
def export_openvino_int8_weights(wrapped, config: OpenVinoInt8WeightsConfig, ctx: MethodContext,
                                 directory: Path) -> ExportResult:
    import nncf

    model = convert(wrapped, ctx)
    mode = nncf.CompressWeightsMode.INT8_ASYM if config.mode == "int8_asym" else nncf.CompressWeightsMode.INT8_SYM
    try:
        compressed = nncf.compress_weights(model, mode=mode)
    except Exception as exc:  # noqa: BLE001
        raise SqueezebenchError(f"nncf.compress_weights failed: {str(exc).splitlines()[0]}") from None
    files = _save(compressed, directory)
    ctx.facts.update(in_memory_compressed=True, in_memory_format=(
        f"{config.mode} per-channel weights, decompressed inside f32 kernels; activations f32"))
    return ExportResult("openvino", files, _manifest(compressed, {
        "quantization": "nncf.compress_weights", "nncf_version": nncf.__version__, "mode": config.mode}))


@dataclass(frozen=True)
class OpenVinoInt4Config(MethodConfig):
    """NNCF weight-only int4 (data-free): mode sym/asym, group_size weights per scale, ratio: share of the
    compressible layers put in int4 (NNCF keeps the rest, e.g. the embedding, int8_asym)."""

    name: ClassVar[str] = "openvino-int4"
    mode: Literal["int4_sym", "int4_asym"] = "int4_sym"
    group_size: int = 32  # as llama.cpp's Q4_0; NNCF's 128 does not divide SmolLM2's 576-wide rows
    ratio: float = 1.0

    def __post_init__(self):
        if not 0 < self.ratio <= 1:
            raise ValueError("ratio must be in (0, 1]")
        if self.group_size != -1 and self.group_size < 8:
            raise ValueError("group_size must be >= 8, or -1 for one scale per output channel")


class _FullMaskLM(torch.nn.Module):
    """forward(input_ids) -> logits with an explicit all-ones attention mask: transformers 5 otherwise derives
    packed-sequence masks with ``torch.diff``, which the OpenVINO (and ONNX) converters cannot translate."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), use_cache=False).logits


def _for_conversion(wrapped: torch.nn.Module) -> torch.nn.Module:
    from squeezebench.tasks.causal_lm import NextTokenLogits

    return _FullMaskLM(wrapped.model).eval() if isinstance(wrapped, NextTokenLogits) else wrapped


@register_export(OpenVinoInt4Config, "OpenVINO IR + NNCF weight-only int4 compression (groups of 32, no calibration)",
                 check=_check, devices=("cpu",))
def export_openvino_int4(wrapped, config: OpenVinoInt4Config, ctx: MethodContext, directory: Path) -> ExportResult:
    import nncf

    model = convert(_for_conversion(wrapped), ctx)
    mode = nncf.CompressWeightsMode.INT4_SYM if config.mode == "int4_sym" else nncf.CompressWeightsMode.INT4_ASYM
    try:
        compressed = nncf.compress_weights(model, mode=mode, group_size=config.group_size, ratio=config.ratio)
    except Exception as exc:  # noqa: BLE001
        raise SqueezebenchError(f"nncf.compress_weights failed: {str(exc).splitlines()[0]}") from None
    files = _save(compressed, directory)
    ctx.facts.update(in_memory_compressed=True, in_memory_format=(
        f"{config.mode} weights in groups of {config.group_size} ({config.ratio:.0%} of layers; the rest int8_asym), "
        "decompressed inside the CPU plugin's kernels; activations float"))
    return ExportResult("openvino", files, _manifest(compressed, {
        "quantization": "nncf.compress_weights", "nncf_version": nncf.__version__, "mode": config.mode,
        "group_size": config.group_size, "ratio": config.ratio,
        "converted_with": "explicit all-ones attention mask" if isinstance(_for_conversion(wrapped), _FullMaskLM)
        else "the task's module"}))
