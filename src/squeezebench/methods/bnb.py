"""bnb-int8 and bnb-nf4: bitsandbytes quantized Linear layers (CUDA only; bitsandbytes is an optional install).

bnb-int8: ``bnb.nn.Linear8bitLt`` (LLM.int8(): int8 weights per row, input columns above ``threshold`` kept in
fp16). bnb-nf4: ``bnb.nn.Linear4bit`` with 4-bit NormalFloat codes, one absmax per 64 weights (itself quantized,
"double quantization"). Every Linear except the output heads (``weight_only.head_names``, as transformers'
BitsAndBytesConfig does by default) is replaced; the rest of the model is cast to ``dtype``.

The artifact is the state dict bitsandbytes writes (int8 weights + row scales; packed nf4 codes + quantization
state tensors), saved as safetensors. ``restore`` rebuilds bitsandbytes layers on the skeleton; an int8 layer must
hold quantized weights before a quantized state dict loads into it, and a 4-bit layer's quantization state is
read back with ``Params4bit.from_prequantized`` (a load_state_dict pre-hook).
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from typing import ClassVar, Literal, Optional

import torch
from torch import nn

from squeezebench.methods.base import NON_NEGATIVE, POSITIVE, FRACTION, Range, MethodConfig, MethodContext, register_method
from squeezebench.methods.weight_only import has_linear, head_names, replace_linears

log = logging.getLogger(__name__)

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


@dataclass(frozen=True)
class BnbInt8Config(MethodConfig):
    """threshold: outlier threshold of LLM.int8() (0 disables the fp16 outlier path). dtype: the rest of the model."""

    name: ClassVar[str] = "bnb-int8"
    bounds: ClassVar[dict[str, Range]] = {"threshold": NON_NEGATIVE}
    threshold: float = 6.0
    dtype: Literal["float16", "bfloat16", "float32"] = "float16"


@dataclass(frozen=True)
class BnbNf4Config(MethodConfig):
    """double_quant: quantize the per-block absmax values too. dtype: compute dtype and the rest of the model."""

    name: ClassVar[str] = "bnb-nf4"
    double_quant: bool = True
    dtype: Literal["float16", "bfloat16", "float32"] = "float16"


def _check(config, ctx: MethodContext) -> Optional[str]:
    if importlib.util.find_spec("bitsandbytes") is None:
        return "bitsandbytes is not installed (pip install bitsandbytes)"
    if not ctx.device.startswith("cuda") or not torch.cuda.is_available():
        return "bitsandbytes needs a CUDA GPU"
    module = getattr(ctx.bundle, "module", None) if ctx.bundle is not None else None
    if module is not None and not has_linear(module):
        return "the model has no nn.Linear layers to quantize"
    return None


def _bnb_linear(config, lin: nn.Linear, weight: Optional[torch.Tensor]) -> nn.Module:
    """A bitsandbytes layer for ``lin``; ``weight`` None: placeholder values (restore)."""
    import bitsandbytes as bnb

    dtype = DTYPES[config.dtype]
    data = (weight if weight is not None else torch.zeros(lin.out_features, lin.in_features)).detach().to(dtype)
    if config.name == "bnb-int8":
        new = bnb.nn.Linear8bitLt(lin.in_features, lin.out_features, bias=lin.bias is not None,
                                  has_fp16_weights=False, threshold=config.threshold)
        new.weight = bnb.nn.Int8Params(data.clone(), requires_grad=False, has_fp16_weights=False)
    else:
        new = bnb.nn.Linear4bit(lin.in_features, lin.out_features, bias=lin.bias is not None, compute_dtype=dtype,
                                compress_statistics=config.double_quant, quant_type="nf4")
        new.weight = bnb.nn.Params4bit(data.clone(), requires_grad=False, compress_statistics=config.double_quant,
                                       quant_type="nf4")
        new.register_load_state_dict_pre_hook(_load_prequantized_4bit)
    if lin.bias is not None:
        new.bias = nn.Parameter(lin.bias.detach().to(dtype).clone(), requires_grad=False)
    return new


def _load_prequantized_4bit(module, state_dict, prefix, local_metadata, strict, missing, unexpected, errors) -> None:
    """Turn the saved ``weight`` + ``weight.*`` quantization state into a quantized Params4bit before loading."""
    import bitsandbytes as bnb

    key = prefix + "weight"
    stats = {k[len(key) + 1:]: state_dict.pop(k) for k in list(state_dict) if k.startswith(key + ".")}
    if key not in state_dict or not stats:
        return
    device = module.weight.device if module.weight.device.type != "meta" else torch.device("cpu")
    module.weight = bnb.nn.Params4bit.from_prequantized(data=state_dict[key], quantized_stats=stats,
                                                        requires_grad=False, device=device)


def _convert(model: nn.Module, config, device: str, keep_weights: bool) -> int:
    heads = head_names(model)
    model.to(DTYPES[config.dtype])
    replaced = replace_linears(model, lambda name, lin: _bnb_linear(config, lin, lin.weight if keep_weights else None),
                               skip=lambda name, lin: name in heads)
    model.to(device)  # bitsandbytes quantizes the weights when they move to a device
    return len(replaced)


def _transform(model: nn.Module, config, ctx: MethodContext) -> nn.Module:
    import bitsandbytes as bnb

    device = ctx.device if ctx.device.startswith("cuda") else "cpu"
    count = _convert(model, config, device, keep_weights=True)
    fmt = (f"bitsandbytes LLM.int8() (int8 weights per row, outliers above {config.threshold} in fp16)"
           if config.name == "bnb-int8" else
           f"bitsandbytes nf4 (4-bit NormalFloat, blocks of 64{', double-quantized absmax' if config.double_quant else ''})")
    ctx.facts.update({"in_memory_compressed": True, "quantized_linear_layers": count,
                      "in_memory_format": f"{fmt}; other layers {config.dtype}",
                      "bitsandbytes_version": bnb.__version__})
    return model


def _restore(model: nn.Module, config, facts: dict) -> nn.Module:
    _convert(model, config, "cpu", keep_weights=False)  # int8 layers must hold quantized weights before loading
    return model


register_method(BnbInt8Config, "bitsandbytes LLM.int8(): int8 Linear weights with fp16 outlier columns (CUDA only)",
                restore=_restore, check=_check, devices=("cuda",))(_transform)
register_method(BnbNf4Config, "bitsandbytes 4-bit NormalFloat (nf4) Linear weights, double-quantized scales "
                "(CUDA only)", restore=_restore, check=_check, devices=("cuda",))(_transform)
