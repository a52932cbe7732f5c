"""What gptq and awq share as int4 weight-only methods: parameter checks, the Linears they quantize, the
round-to-nearest pass over what calibration does not reach (input embeddings, a tied head), their facts, and
one restore (the same packed layers as int4-weight-only)."""

from __future__ import annotations

from typing import Any

from torch import nn

from squeezebench.methods.lib.calibration_capture import calibration_facts
from squeezebench.methods.weight_only import linears_to_quantize, model_embeddings, quantize_model, restore_as

MODEL_TYPES = "transformer decoder LMs (Llama-style); encoders too where linears exist"


def target_linears(model: nn.Module, head: bool = True) -> dict[str, nn.Linear]:
    """The Linears a calibrated method quantizes itself, by qualified name: every ``nn.Linear``, heads only
    with ``head``, never a head tied to the input embeddings (``quantize_rest`` handles it)."""
    emb = model_embeddings(model, "input")
    tied = getattr(emb, "weight", None)
    return {n: m for n, m in linears_to_quantize(model, head) if tied is None or m.weight is not tied}


def quantize_rest(module: nn.Module, config, empty: bool = False) -> dict[str, Any]:
    """Input embeddings, a tied head and any Linear left over, round-to-nearest as int4-weight-only does
    (``empty``: only the structure, for restore). Returns int4-weight-only's facts (format, counts)."""
    return quantize_model(module, config.bits, config.group_size, False, config.embeddings, config.head, empty=empty)


def finish_facts(module: nn.Module, config, facts: dict[str, Any], samples: list[dict]) -> dict[str, Any]:
    """Quantize what the calibrated pass left (embeddings, tied head) and merge every fact for the record."""
    rest = quantize_rest(module, config)
    rtn = rest.pop("quantized_linear_layers")
    return {**rest, **facts, **calibration_facts(samples), "rtn_linear_layers": rtn,
            "quantized_linear_layers": facts["quantized_linears"] + rtn}


def restore_calibrated(module: nn.Module, config, facts: dict) -> nn.Module:
    """Empty packed layers where the calibrated pass and the round-to-nearest rest put them."""
    module = restore_as(module, config.bits, config.group_size, facts) or module
    quantize_rest(module, config, empty=True)
    return module
