"""Round-to-nearest integer quantization per output row and group of ``group_size`` input columns
(``group_size <= 0``: one group per row). The last group of a row is shorter when ``in_features`` is not a multiple
of ``group_size``; ``n_groups = ceil(in / group_size)``. Convention: ``w ~= (code - zero) * scale`` with integer
codes in ``[0, 2**bits - 1]``. The grid of int8/int4-weight-only, and the one GPTQ and AWQ round to.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


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
