"""Packed int8 / int4 layers: what int8/int4-weight-only, GPTQ and AWQ leave in the model.

- ``WeightOnlyLinear``: an ``nn.Linear`` replacement holding the compressed weight as buffers (uint8 codes, two per
  byte for 4 bits; fp16 scales; uint8 zero points). ``forward`` dequantizes the weight on each call (peak extra
  memory: one layer's float weight); its state dict holds only the compressed tensors, so saved files are small.
- ``QuantizedEmbedding``: the same format for an embedding table; a lookup dequantizes only the gathered rows.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from squeezebench.methods.lib.bitpack import pack_int4, unpack_int4
from squeezebench.methods.lib.rtn import dequantize, n_groups, quantize_rtn

SCALE_DTYPE = torch.float16  # how scales are stored (GPTQ and AWQ round their scales to it while solving)


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
