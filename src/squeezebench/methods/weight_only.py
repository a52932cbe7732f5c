"""Weight-only integer quantization: int8 / int4 weights, float activations.

The grid is round-to-nearest (``rtn.py``); the layers that hold the packed weights are in ``packed_linear.py``.
Model surgery here (also used by GPTQ / AWQ / bnb): ``replace_linears`` swaps ``nn.Linear`` layers for whatever a
factory returns, ``head_names`` finds output heads, ``quantize_model`` quantizes Linears and the input embedding,
``restore_as`` rebuilds a calibrated method's layers on a skeleton.

Methods registered here: ``int8-weight-only`` and ``int4-weight-only``. By default they quantize every Linear layer,
the output head included (``head=true``), and the input embedding table (``embeddings=true``): in encoders like
MiniLM the word embeddings are about half the parameters, so leaving them at fp32 caps the size gain. An LM head tied
to the input embeddings stays tied: the head reads the quantized embedding's tensors, saved once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, ClassVar, Optional

from torch import nn

from squeezebench.methods.base import NON_NEGATIVE, POSITIVE, FRACTION, Range, MethodConfig, MethodContext, register_method
from squeezebench.methods.lib.packed_linear import QuantizedEmbedding, WeightOnlyLinear

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------- model surgery
def head_names(model: nn.Module) -> set[str]:
    """Names of the output head Linear layers: a transformers model's output embeddings (``lm_head``) and
    classification heads (``classifier``, ``score`` and their ``out_proj`` / ``dense`` layers)."""
    names: set[str] = set()
    out = model_embeddings(model, "output")
    for name, mod in model.named_modules():
        if out is not None and mod is out:
            names.add(name)
        first = name.split(".")[0]
        if isinstance(mod, nn.Linear) and first in ("classifier", "score", "lm_head"):
            names.add(name)
    return names


def replace_linears(module: nn.Module, make: Callable[[str, nn.Linear], Optional[nn.Module]],
                    skip: Callable[[str, nn.Linear], bool] = lambda name, lin: False) -> list[str]:
    """Replace each ``nn.Linear`` (exact type) ``name`` with ``make(name, linear)`` unless ``skip`` says so or
    ``make`` returns None. Returns the replaced names. Embeddings are not Linear layers and are never touched
    here; pass a ``skip`` built from ``head_names`` to keep output heads."""
    replaced = []
    for name, linear in list(module.named_modules()):
        if type(linear) is not nn.Linear or skip(name, linear):
            continue
        new = make(name, linear)
        if new is None:
            continue
        new.train(linear.training)
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, child, new)
        replaced.append(name)
    return replaced


def linears_to_quantize(model: nn.Module, head: bool = False) -> list[tuple[str, nn.Linear]]:
    """(name, layer) of every ``nn.Linear`` (exact type), output heads (``head_names``) only when ``head``.
    This is the set calibrated methods (GPTQ, AWQ) quantize; ``restore_as`` rebuilds the same set."""
    heads = set() if head else head_names(model)
    return [(n, m) for n, m in model.named_modules() if type(m) is nn.Linear and n not in heads]


def quantized_linear(linear: nn.Linear, bits: int, group_size: int, symmetric: bool = False) -> "WeightOnlyLinear":
    """Round-to-nearest ``WeightOnlyLinear`` of ``linear``."""
    return WeightOnlyLinear.from_linear(linear, bits, group_size, symmetric)


def in_features_of(module: nn.Module) -> int:
    return int(module.in_features)


def restore_as(model: nn.Module, bits: int, group_size: int, facts: dict, head: bool = False) -> nn.Module:
    """Swap empty ``WeightOnlyLinear`` modules in a skeleton for the layers a calibrated method quantized:
    ``facts["quantized_layers"]`` when recorded, else ``linears_to_quantize(model, head)``; a recorded count
    (``facts["quantized_linears"]``) must match."""
    names = facts.get("quantized_layers")
    targets = ([(n, model.get_submodule(n)) for n in names] if names is not None
               else linears_to_quantize(model, head))
    expected = facts.get("quantized_linears")
    if expected is not None and int(expected) != len(targets):
        from squeezebench.errors import SqueezebenchError

        raise SqueezebenchError(f"the artifact quantized {expected} Linear layers but the rebuilt model has "
                                f"{len(targets)} candidates; it was written by another version of squeezebench")
    for name, lin in targets:
        model.set_submodule(name, WeightOnlyLinear.empty(lin.in_features, lin.out_features, bits, group_size,
                                                         lin.bias is not None))
    return model


def model_embeddings(model: nn.Module, which: str) -> Optional[nn.Module]:
    """``model.get_input_embeddings()`` / ``get_output_embeddings()``; None for models without them (wav2vec2's
    raises NotImplementedError)."""
    get = getattr(model, f"get_{which}_embeddings", None)
    try:
        return get() if callable(get) else None
    except NotImplementedError:
        return None


def input_embedding(model: nn.Module) -> Optional[tuple[str, nn.Embedding]]:
    """(name, module) of a transformers model's input embedding table when it is a plain ``nn.Embedding``."""
    emb = model_embeddings(model, "input")
    if type(emb) is not nn.Embedding:
        return None
    for name, mod in model.named_modules():
        if mod is emb:
            return name, emb
    return None


def quantize_model(model: nn.Module, bits: int, group_size: int, symmetric: bool, embeddings: bool, head: bool,
                   empty: bool = False) -> dict:
    """Quantize (or, with ``empty``, only restructure) Linear layers and optionally the input embedding table.

    A head whose weight is the input embedding's (tied) shares the quantized embedding's tensors when both are
    quantized. Returns facts: layer counts and the in-memory format.
    """
    heads = head_names(model) if not head else set()
    emb_entry = input_embedding(model) if embeddings else None
    tied_head = None
    qemb = None
    if emb_entry is not None:
        emb_name, emb = emb_entry
        for name, mod in model.named_modules():
            if type(mod) is nn.Linear and mod.weight is emb.weight:
                tied_head = name
        qemb = (QuantizedEmbedding(emb.num_embeddings, emb.embedding_dim, bits, group_size, emb.padding_idx)
                if empty else QuantizedEmbedding.from_embedding(emb, bits, group_size, symmetric))
        parent_name, _, child = emb_name.rpartition(".")
        qemb.train(emb.training)
        setattr(model.get_submodule(parent_name) if parent_name else model, child, qemb)

    def make(name: str, lin: nn.Linear) -> nn.Module:
        if name == tied_head and qemb is not None and qemb.group_size == (group_size if 0 < group_size < lin.in_features else -1):
            new = WeightOnlyLinear.empty(lin.in_features, lin.out_features, bits, group_size, lin.bias is not None)
            new._share_packed(qemb)
            if lin.bias is not None:
                new.bias.data.copy_(lin.bias.detach())
            return new
        if empty:
            return WeightOnlyLinear.empty(lin.in_features, lin.out_features, bits, group_size, lin.bias is not None)
        return WeightOnlyLinear.from_linear(lin, bits, group_size, symmetric)

    replaced = replace_linears(model, make, skip=lambda name, lin: name in heads)
    if tied_head is not None and tied_head not in replaced:  # head kept in float: it keeps the float weight
        log.info("%s keeps the float embedding weight it is tied to", tied_head)
    gs = "per output channel" if group_size <= 0 else f"groups of {group_size}"
    return {"in_memory_compressed": True,
            "in_memory_format": (f"int{bits} weights ({'two codes per byte, ' if bits == 4 else ''}{gs}, fp16 scales, "
                                 f"uint8 zero points), dequantized per layer at each call; float activations"),
            "quantized_linear_layers": len(replaced),
            "quantized_embedding": qemb is not None,
            "tied_head_shares_embedding": bool(tied_head and tied_head in replaced and qemb is not None)}


# ------------------------------------------------------------------------------------------------- methods
@dataclass(frozen=True)
class Int8WeightOnlyConfig(MethodConfig):
    """int8 weights (uint8 codes + zero point), float activations. group_size <= 0: one scale per output row."""

    name: ClassVar[str] = "int8-weight-only"
    bounds: ClassVar[dict[str, Range]] = {"group_size": Range(lo=1, also=((-1, "one group per row"),))}
    group_size: int = -1
    symmetric: bool = False
    embeddings: bool = True
    head: bool = True
    bits: ClassVar[int] = 8


@dataclass(frozen=True)
class Int4WeightOnlyConfig(MethodConfig):
    """int4 weights packed two per byte, one fp16 scale and zero point per group of input columns."""

    name: ClassVar[str] = "int4-weight-only"
    bounds: ClassVar[dict[str, Range]] = {"group_size": Range(lo=1, also=((-1, "one group per row"),))}
    group_size: int = 128
    symmetric: bool = False
    embeddings: bool = True
    head: bool = True
    bits: ClassVar[int] = 4


def has_linear(module: nn.Module) -> bool:
    return any(type(m) is nn.Linear for m in module.modules())


def check_has_linears(config, ctx: MethodContext) -> Optional[str]:
    """A reason when the model to transform has no nn.Linear (None in the measure phase: no bundle)."""
    module = getattr(ctx.bundle, "module", None) if ctx.bundle is not None else None
    if module is not None and not has_linear(module):
        return "the model has no nn.Linear layers to quantize"
    return None


def _transform(module: nn.Module, config, ctx: MethodContext) -> nn.Module:
    facts = quantize_model(module, config.bits, config.group_size, config.symmetric, config.embeddings, config.head)
    ctx.facts.update(facts)
    return module


def _restore(module: nn.Module, config, facts: dict) -> nn.Module:
    quantize_model(module, config.bits, config.group_size, config.symmetric, config.embeddings, config.head, empty=True)
    return module


register_method(Int8WeightOnlyConfig, "int8 weights (round to nearest, per channel by default), float activations; "
                "weights stay int8 in memory, dequantized per layer at each call",
                restore=_restore, check=check_has_linears)(_transform)
register_method(Int4WeightOnlyConfig, "int4 weights (round to nearest, groups of 128), two per byte, float activations; "
                "weights stay packed in memory, dequantized per layer at each call",
                restore=_restore, check=check_has_linears)(_transform)
