"""Weight-only integer quantization: int8 / int4 weights, float activations.

Building blocks (also used by GPTQ / AWQ):

- ``quantize_rtn`` / ``rtn_params`` / ``quantize_with`` / ``dequantize``: round-to-nearest quantization per output
  row and group of ``group_size`` input columns (``group_size <= 0``: one group per row). The last group of a row is
  shorter when ``in_features`` is not a multiple of ``group_size``; ``n_groups = ceil(in / group_size)``.
  Convention: ``w ~= (code - zero) * scale`` with integer codes in ``[0, 2**bits - 1]``.
- ``WeightOnlyLinear``: an ``nn.Linear`` replacement holding the compressed weight as buffers (uint8 codes, two per
  byte for 4 bits; fp16 scales; uint8 zero points). ``forward`` dequantizes the weight on each call (peak extra
  memory: one layer's float weight); its state dict holds only the compressed tensors, so saved files are small.
- ``QuantizedEmbedding``: the same format for an embedding table; a lookup dequantizes only the gathered rows.
- ``replace_linears``: swap ``nn.Linear`` layers for whatever a factory returns.

Methods registered here: ``int8-weight-only`` and ``int4-weight-only``. By default they quantize every Linear layer,
the output head included (``head=true``), and the input embedding table (``embeddings=true``): in encoders like
MiniLM the word embeddings are about half the parameters, so leaving them at fp32 caps the size gain. An LM head tied
to the input embeddings stays tied: the head reads the quantized embedding's tensors, saved once.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable, ClassVar, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from squeezebench.methods.base import NON_NEGATIVE, POSITIVE, FRACTION, Range, MethodConfig, MethodContext, register_method

log = logging.getLogger(__name__)

SCALE_DTYPE = torch.float16


# ------------------------------------------------------------------------------------------------- tensors
def n_groups(in_features: int, group_size: int) -> int:
    return 1 if group_size <= 0 else math.ceil(in_features / group_size)


def _group_view(weight: Tensor, group_size: int) -> tuple[Tensor, int]:
    """weight [out, in] -> [out, n_groups, g] (last group padded by repeating the last column)."""
    out_f, in_f = weight.shape
    g = in_f if group_size <= 0 else group_size
    ng = math.ceil(in_f / g)
    pad = ng * g - in_f
    if pad:
        weight = torch.cat([weight, weight[:, -1:].expand(out_f, pad)], dim=1)
    return weight.reshape(out_f, ng, g), g


def _expand(per_group: Tensor, group_size: int, in_features: int) -> Tensor:
    """[out, n_groups] -> [out, in] (each group value repeated over its columns)."""
    g = in_features if group_size <= 0 else group_size
    return per_group.repeat_interleave(g, dim=1)[:, :in_features]


def rtn_params(weight: Tensor, bits: int, group_size: int, symmetric: bool = False) -> tuple[Tensor, Tensor]:
    """Scales and integer zero points (float32 tensors [out, n_groups]) from each group's min/max.

    Asymmetric: the range [min, max] (widened to include 0) maps onto [0, 2**bits - 1].
    Symmetric: zero point ``2**(bits-1)``, scale ``absmax / (2**(bits-1) - 1)``.
    """
    w, _ = _group_view(weight.detach().float(), group_size)
    maxq = 2 ** bits - 1
    if symmetric:
        absmax = w.abs().amax(dim=2)
        scales = (absmax / (2 ** (bits - 1) - 1)).clamp(min=1e-8)
        zeros = torch.full_like(scales, 2 ** (bits - 1))
    else:
        lo = w.amin(dim=2).clamp(max=0)
        hi = w.amax(dim=2).clamp(min=0)
        scales = ((hi - lo) / maxq).clamp(min=1e-8)
        zeros = torch.round(-lo / scales).clamp(0, maxq)
    return scales, zeros


def quantize_with(weight: Tensor, scales: Tensor, zeros: Tensor, bits: int, group_size: int) -> Tensor:
    """Integer codes (uint8 [out, in]) of ``weight`` for given per-group scales and zero points."""
    in_f = weight.shape[1]
    s = _expand(scales.float(), group_size, in_f)
    z = _expand(zeros.float(), group_size, in_f)
    return torch.clamp(torch.round(weight.detach().float() / s) + z, 0, 2 ** bits - 1).to(torch.uint8)


def quantize_rtn(weight: Tensor, bits: int, group_size: int, symmetric: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """Round-to-nearest quantization of a [out, in] weight.

    Returns (codes uint8 [out, in], scales float32 [out, n_groups], zeros float32 [out, n_groups] holding integers),
    with ``weight ~= dequantize(codes, scales, zeros, group_size)``.
    """
    if not 2 <= bits <= 8:
        raise ValueError(f"bits must be between 2 and 8, got {bits}")
    scales, zeros = rtn_params(weight, bits, group_size, symmetric)
    return quantize_with(weight, scales, zeros, bits, group_size), scales, zeros


def dequantize(codes: Tensor, scales: Tensor, zeros: Tensor, group_size: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Float weight [out, in] from codes [out, in] and per-group scales / zero points [out, n_groups]."""
    rows, in_f = codes.shape
    g = in_f if group_size <= 0 else group_size
    if in_f % g == 0:  # equal groups: broadcast per-group values instead of materialising them per weight
        w = codes.reshape(rows, in_f // g, g).to(dtype)
        return ((w - zeros.to(dtype).unsqueeze(-1)) * scales.to(dtype).unsqueeze(-1)).reshape(rows, in_f)
    s = _expand(scales.to(dtype), group_size, in_f)
    z = _expand(zeros.to(dtype), group_size, in_f)
    return (codes.to(dtype) - z) * s


def pack_int4(codes: Tensor) -> Tensor:
    """uint8 codes [rows, cols] in 0..15 -> [rows, ceil(cols/2)] bytes; even column in the low nibble."""
    if codes.shape[1] % 2:
        codes = F.pad(codes, (0, 1))
    codes = codes.to(torch.uint8)
    return codes[:, 0::2] | (codes[:, 1::2] << 4)


def unpack_int4(packed: Tensor, cols: int) -> Tensor:
    """Inverse of ``pack_int4``: [rows, ceil(cols/2)] bytes -> uint8 codes [rows, cols]."""
    out = torch.empty(*packed.shape, 2, dtype=torch.uint8, device=packed.device)
    torch.bitwise_and(packed, 15, out=out[..., 0])
    torch.bitwise_right_shift(packed, 4, out=out[..., 1])
    out = out.reshape(packed.shape[0], -1)
    return out if out.shape[1] == cols else out[:, :cols]


# ------------------------------------------------------------------------------------------------- modules
class _PackedWeight(nn.Module):
    """Compressed [rows, cols] matrix: ``qweight`` (uint8, 2 codes per byte when bits == 4), ``scales`` (fp16),
    ``zeros`` (uint8 zero points), both [rows, n_groups]."""

    def _init_packed(self, rows: int, cols: int, bits: int, group_size: int, device=None) -> None:
        if bits not in (4, 8):
            raise ValueError(f"packed storage supports 4 or 8 bits, got {bits}")
        self.bits, self.group_size = bits, (group_size if 0 < group_size < cols else -1)
        ng = n_groups(cols, self.group_size)
        qcols = math.ceil(cols / 2) if bits == 4 else cols
        self.register_buffer("qweight", torch.zeros(rows, qcols, dtype=torch.uint8, device=device))
        self.register_buffer("scales", torch.ones(rows, ng, dtype=SCALE_DTYPE, device=device))
        self.register_buffer("zeros", torch.zeros(rows, ng, dtype=torch.uint8, device=device))

    def _set_packed(self, codes: Tensor, scales: Tensor, zeros: Tensor) -> None:
        if getattr(self, "_holder", None):
            raise ValueError("a module sharing another's compressed tensors cannot be given its own")
        q = pack_int4(codes) if self.bits == 4 else codes.to(torch.uint8)
        self.qweight.copy_(q)
        self.scales.copy_(scales.to(SCALE_DTYPE))
        self.zeros.copy_(zeros.round().to(torch.uint8))

    def _share_packed(self, other: "_PackedWeight") -> None:
        """Read ``other``'s tensors instead of holding any (a head tied to the input embedding): the state dict
        and device moves see one copy, held by ``other``."""
        for name in ("qweight", "scales", "zeros"):
            del self._buffers[name]
        self._holder = [other]  # a list, so that ``other`` is not registered as a submodule

    def packed(self) -> "_PackedWeight":
        """The module holding the compressed tensors (itself, or the embedding a tied head shares)."""
        holder = getattr(self, "_holder", None)
        return holder[0] if holder else self

    def codes(self, rows: Optional[Tensor] = None) -> Tensor:
        qweight = self.packed().qweight
        q = qweight if rows is None else qweight[rows]
        return unpack_int4(q, self._cols) if self.bits == 4 else q

    def weight_float(self, dtype: torch.dtype = torch.float32) -> Tensor:
        p = self.packed()
        return dequantize(self.codes(), p.scales, p.zeros, self.group_size, dtype)

    def compressed_bytes(self) -> int:
        p = self.packed()
        return sum(t.numel() * t.element_size() for t in (p.qweight, p.scales, p.zeros))


class WeightOnlyLinear(_PackedWeight):
    """``nn.Linear`` with an int8 / int4 weight kept compressed; ``forward`` dequantizes it per call."""

    def __init__(self, in_features: int, out_features: int, bits: int, group_size: int, bias: bool = True,
                 device=None, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.in_features, self.out_features, self._cols = in_features, out_features, in_features
        self._init_packed(out_features, in_features, bits, group_size, device)
        self.bias = nn.Parameter(torch.zeros(out_features, device=device, dtype=dtype)) if bias else None

    @classmethod
    def empty(cls, in_features: int, out_features: int, bits: int, group_size: int, bias: bool = True,
              device=None, dtype: torch.dtype = torch.float32) -> "WeightOnlyLinear":
        """Right shapes, placeholder values (a skeleton to load a saved state dict into)."""
        return cls(in_features, out_features, bits, group_size, bias, device, dtype)

    @classmethod
    def from_quantized(cls, codes: Tensor, scales: Tensor, zeros: Tensor, bias: Optional[Tensor], bits: int,
                       group_size: int, in_features: int, out_features: int) -> "WeightOnlyLinear":
        """Wrap codes / scales / zeros as produced by ``quantize_rtn`` (or GPTQ, AWQ...)."""
        dtype = bias.dtype if bias is not None else torch.float32
        mod = cls(in_features, out_features, bits, group_size, bias is not None, codes.device, dtype)
        mod._set_packed(codes, scales, zeros)
        if bias is not None:
            mod.bias.data.copy_(bias.detach())
        return mod

    @classmethod
    def from_linear(cls, linear: nn.Linear, bits: int, group_size: int, symmetric: bool = False) -> "WeightOnlyLinear":
        codes, scales, zeros = quantize_rtn(linear.weight, bits, group_size, symmetric)
        return cls.from_quantized(codes, scales, zeros, linear.bias, bits, group_size,
                                  linear.in_features, linear.out_features)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight_float(x.dtype), self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}, "
                f"group_size={self.group_size}, bias={self.bias is not None}")


class QuantizedEmbedding(_PackedWeight):
    """``nn.Embedding`` with an int8 / int4 table (groups along the embedding dimension); a lookup dequantizes
    only the rows it gathers."""

    def __init__(self, num_embeddings: int, embedding_dim: int, bits: int, group_size: int,
                 padding_idx: Optional[int] = None, device=None, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.num_embeddings, self.embedding_dim, self._cols = num_embeddings, embedding_dim, embedding_dim
        self.padding_idx, self.out_dtype = padding_idx, dtype
        self._init_packed(num_embeddings, embedding_dim, bits, group_size, device)

    @classmethod
    def from_embedding(cls, emb: nn.Embedding, bits: int, group_size: int, symmetric: bool = False) -> "QuantizedEmbedding":
        mod = cls(emb.num_embeddings, emb.embedding_dim, bits, group_size, emb.padding_idx, emb.weight.device,
                  emb.weight.dtype)
        mod._set_packed(*quantize_rtn(emb.weight, bits, mod.group_size, symmetric))
        return mod

    @property
    def weight(self) -> Tensor:
        """The dequantized table (for code that reads ``get_input_embeddings().weight``, e.g. its dtype)."""
        return self.weight_float(self.out_dtype)

    def forward(self, ids: Tensor) -> Tensor:
        flat = ids.reshape(-1)
        rows = dequantize(self.codes(flat), self.scales[flat], self.zeros[flat], self.group_size, self.out_dtype)
        return rows.reshape(*ids.shape, self.embedding_dim)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, bits={self.bits}, group_size={self.group_size}"


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


def _input_embedding(model: nn.Module) -> Optional[tuple[str, nn.Embedding]]:
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
    emb_entry = _input_embedding(model) if embeddings else None
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


def _check(config, ctx: MethodContext) -> Optional[str]:
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
                restore=_restore, check=_check)(_transform)
register_method(Int4WeightOnlyConfig, "int4 weights (round to nearest, groups of 128), two per byte, float activations; "
                "weights stay packed in memory, dequantized per layer at each call",
                restore=_restore, check=_check)(_transform)
