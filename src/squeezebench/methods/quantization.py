"""int8-dynamic and int8-static: PyTorch's own int8 Linear kernels (fbgemm / x86 backend) on CPU.

int8-dynamic: ``torch.ao.quantization.quantize_dynamic`` on the ``nn.Linear`` layers: int8 weights (per output channel
by default), activations quantized per call from their observed range; int8 x int8 matmuls. PyTorch's x86/fbgemm
dynamic Linear always quantizes activations to 7 bits (``reduce_range=True``, so that AVX2 kernels without VNNI cannot
saturate), which is too coarse for the inputs of the feed-forward down projections (after GELU/SiLU they carry
outliers): by default those layers, recognised as Linear layers whose input is wider than their output (BERT's
``output.dense``, Whisper's ``fc2``, Llama's ``down_proj``; tiny classification heads too), stay fp32. Measured on
all-MiniLM-L6-v2 (32 BBC articles x 128 tokens): embedding cosine to fp32 0.983 with every Linear int8, 0.9925 with the
down projections float (min 0.990); ``float_down_projections=false`` quantizes them all.

int8-static: post-training static quantization of each ``nn.Linear`` in eager mode. Every Linear is wrapped as
quantize -> quantized Linear -> dequantize (``torch.ao.quantization.QuantWrapper``); the input and output ranges are
fixed from calibration data (histogram observers, the x86 default qconfig), so no range is computed at run time.
Whole-graph static quantization (FX or PT2E) was not used: FX tracing of transformers models is fragile, and a PT2E
graph only runs as int8 after ``torch.compile`` with Inductor, which the saved state-dict artifact cannot carry;
per-Linear wrapping keeps the rest of the model (attention, norms, activations) in fp32 and works on any model.

Both save the state dict with the packed int8 weights (``torch.save``, reloaded with ``weights_only=True``);
``restore`` applies the same conversion to the fp32 skeleton, whose packed weights the loaded state dict replaces.
"""

from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar, Optional

import torch
from torch import nn

from squeezebench.errors import SqueezebenchError
from squeezebench.methods.base import NON_NEGATIVE, POSITIVE, FRACTION, Range, calibration_count, MethodConfig, MethodContext, register_method
from squeezebench.methods.lib.packed_linear import QuantizedEmbedding
from squeezebench.methods.weight_only import has_linear, input_embedding

log = logging.getLogger(__name__)


@contextmanager
def _quiet():
    """torch.ao.quantization warns that it is deprecated (it still works in torch 2.x); keep logs readable."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*torch.ao.quantization.*")
        warnings.filterwarnings("ignore", message=".*must run observer before calling calculate_qparams.*")
        warnings.filterwarnings("ignore", message=".*reduce_range will be deprecated.*")
        yield


def _engine() -> Optional[str]:
    engines = torch.backends.quantized.supported_engines
    for name in ("x86", "fbgemm"):
        if name in engines:
            return name
    return None


def _check(config, ctx: MethodContext) -> Optional[str]:
    if not ctx.device.startswith("cpu"):
        return "PyTorch's int8 quantized kernels run on CPU only"
    if _engine() is None:
        return f"this PyTorch build has no x86/fbgemm quantized engine ({torch.backends.quantized.supported_engines})"
    module = getattr(ctx.bundle, "module", None) if ctx.bundle is not None else None
    if module is not None and not has_linear(module):
        return "the model has no nn.Linear layers to quantize"
    return None


def _quantize_embedding(model: nn.Module, empty: bool) -> bool:
    """Replace the input embedding table by an int8 ``QuantizedEmbedding`` (per row); False when there is none."""
    entry = input_embedding(model)
    if entry is None:
        return False
    name, emb = entry
    new = (QuantizedEmbedding(emb.num_embeddings, emb.embedding_dim, 8, -1, emb.padding_idx) if empty
           else QuantizedEmbedding.from_embedding(emb, 8, -1))
    model.set_submodule(name, new)
    return True


# ------------------------------------------------------------------------------------------------- dynamic
@dataclass(frozen=True)
class Int8DynamicConfig(MethodConfig):
    """per_channel: one weight scale per output row (else one per tensor, PyTorch's default).
    embeddings: also store the input embedding table as int8 (dequantized rows at lookup).
    float_down_projections: keep Linear layers whose input is wider than their output in fp32 (see the module doc)."""

    name: ClassVar[str] = "int8-dynamic"
    per_channel: bool = True
    embeddings: bool = False
    float_down_projections: bool = True


def dynamic_int8_layers(model: nn.Module, config: Int8DynamicConfig) -> list[str]:
    """Names of the Linear layers int8-dynamic quantizes: all of them, or all but the down projections."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.Linear)
            and not (config.float_down_projections and m.in_features > m.out_features)]


def _dynamic(model: nn.Module, config: Int8DynamicConfig) -> nn.Module:
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

    torch.backends.quantized.engine = _engine()
    qconfig = per_channel_dynamic_qconfig if config.per_channel else default_dynamic_qconfig
    spec = {name: qconfig for name in dynamic_int8_layers(model, config)}
    with _quiet():
        return quantize_dynamic(model, spec, dtype=torch.qint8, inplace=True) or model


def _count_dynamic(model: nn.Module) -> int:
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    return sum(isinstance(m, DynamicLinear) for m in model.modules())


def _restore_dynamic(model: nn.Module, config: Int8DynamicConfig, facts: dict) -> nn.Module:
    if facts.get("quantized_embedding"):
        _quantize_embedding(model, empty=True)
    return _dynamic(model, config)


@register_method(Int8DynamicConfig, "PyTorch dynamic int8 (quantize_dynamic): int8 Linear weights, activations "
                 "quantized at run time; CPU (fbgemm/x86)", restore=_restore_dynamic, check=_check, devices=("cpu",))
def int8_dynamic(model: nn.Module, config: Int8DynamicConfig, ctx: MethodContext) -> nn.Module:
    embedded = _quantize_embedding(model, empty=False) if config.embeddings else False
    model = _dynamic(model, config)
    ctx.facts.update({
        "in_memory_compressed": True, "quantized_embedding": embedded, "quantized_linear_layers": _count_dynamic(model),
        "float_linear_layers": sum(isinstance(m, nn.Linear) for m in model.modules()),
        "in_memory_format": (f"int8 Linear weights packed for {_engine()} "
                             f"({'per channel' if config.per_channel else 'per tensor'}), 7-bit activations with "
                             "ranges computed per call" + ("; down projections fp32" if config.float_down_projections
                                                           else "") + ("; int8 embedding table" if embedded else ""))})
    return model


# ------------------------------------------------------------------------------------------------- static
@dataclass(frozen=True)
class Int8StaticConfig(MethodConfig):
    """calibration_samples: None means the run's --calibration-samples. embeddings: also store the input
    embedding table as int8."""

    name: ClassVar[str] = "int8-static"
    bounds: ClassVar[dict[str, Range]] = {"calibration_samples": POSITIVE}
    calibration_samples: Optional[int] = None
    embeddings: bool = False


def _wrap_linears(model: nn.Module, qconfig) -> int:
    from torch.ao.quantization import QuantWrapper

    names = [n for n, m in model.named_modules() if type(m) is nn.Linear]
    for name in names:
        linear = model.get_submodule(name)
        wrapper = QuantWrapper(linear).train(linear.training)
        wrapper.qconfig = qconfig
        model.set_submodule(name, wrapper)
    return len(names)


def _static_structure(model: nn.Module, qconfig, calibrate=None) -> int:
    """Wrap, observe (running ``calibrate()`` if given) and convert every Linear; returns how many."""
    from torch.ao.quantization import convert, prepare

    torch.backends.quantized.engine = _engine()
    with _quiet():
        count = _wrap_linears(model, qconfig)
        prepare(model, inplace=True)
        if calibrate is not None:
            calibrate()
        convert(model, inplace=True)
    return count


def _samples(config: Int8StaticConfig, ctx: MethodContext) -> list[dict]:
    if ctx.calibration is None:
        raise SqueezebenchError("int8-static needs calibration data, and this run provides none")
    n = config.calibration_samples
    n = calibration_count(ctx, n)
    samples = ctx.calibration(n)
    if not samples:
        raise SqueezebenchError("int8-static: the task gave no calibration samples; raise --calibration-samples")
    return samples


@register_method(Int8StaticConfig, "PyTorch static int8 on each Linear: int8 weights per channel, activation ranges "
                 "fixed from calibration data; CPU (fbgemm/x86)", restore=lambda m, c, f: _restore_static(m, c, f),
                 check=_check, devices=("cpu",), needs_calibration=True)
def int8_static(model: nn.Module, config: Int8StaticConfig, ctx: MethodContext) -> nn.Module:
    from torch.ao.quantization import get_default_qconfig

    samples = _samples(config, ctx)
    embedded = _quantize_embedding(model, empty=False) if config.embeddings else False
    wrapped = ctx.task.wrap(ctx.bundle).eval()
    if ctx.bundle.module is not model:
        raise SqueezebenchError("int8-static must transform the bundle's model in place")

    def calibrate():
        with torch.inference_mode():
            for sample in samples:
                names = [k for k in ctx.task.input_names if k in sample] or list(sample)
                wrapped(**{k: sample[k] for k in names})

    count = _static_structure(model, get_default_qconfig(_engine()), calibrate)
    tokens = sum(int(next(iter(s.values())).numel()) for s in samples)
    ctx.notes.append(f"int8-static: activation ranges from {len(samples)} calibration samples ({tokens} input elements)")
    ctx.facts.update({
        "in_memory_compressed": True, "quantized_embedding": embedded, "quantized_linear_layers": count,
        "calibration_samples": len(samples),
        "in_memory_format": (f"int8 Linear weights per channel packed for {_engine()}; each Linear's input and output "
                             "quantized to 8 bits with calibrated scales (other ops in fp32)"
                             + ("; int8 embedding table" if embedded else ""))})
    return model


def _restore_static(model: nn.Module, config: Int8StaticConfig, facts: dict) -> nn.Module:
    from torch.ao.quantization import QConfig, default_per_channel_weight_observer
    from torch.ao.quantization.observer import MinMaxObserver

    if facts.get("quantized_embedding"):
        _quantize_embedding(model, empty=True)
    # observers only fix the structure and dtypes here; scales and packed weights come from the state dict
    qconfig = QConfig(activation=MinMaxObserver.with_args(dtype=torch.quint8, reduce_range=True),
                      weight=default_per_channel_weight_observer)
    _static_structure(model, qconfig)
    return model
