"""Bit packing: flags 8 to a byte, and integer codes of any width as bit planes (what compact weights store).

Used by prune-unstructured (bitmask), prune-2of4 (2-bit positions) and cluster-kmeans (codebook indices).
``pack_int4`` is another layout, two codes per byte along a row, for the packed int4 layers (packed_linear.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pack_bits(flags: torch.Tensor) -> torch.Tensor:
    """Pack a flat bool/0-1 tensor into uint8, 8 flags a byte (least significant bit first)."""
    flat = flags.reshape(-1).to(torch.uint8)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    shifts = torch.arange(8, dtype=torch.uint8, device=flat.device)
    return (flat.view(-1, 8) << shifts).sum(dim=1, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, count: int) -> torch.Tensor:
    """Inverse of pack_bits: the first ``count`` flags as a bool tensor."""
    shifts = torch.arange(8, dtype=torch.uint8, device=packed.device)
    return ((packed.view(-1, 1) >> shifts) & 1).view(-1)[:count].bool()


CODE_CHUNK = 1 << 20  # codes per step when (un)packing: bounds the temporary memory (a multiple of 8)


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack integer codes in [0, 2**bits) with ``bits`` bits each into uint8 (bit planes, LSB first)."""
    flat = codes.reshape(-1)
    shifts = torch.arange(bits, device=flat.device, dtype=torch.int32)
    parts = [pack_bits(((flat[i:i + CODE_CHUNK].to(torch.int32).view(-1, 1) >> shifts) & 1).view(-1))
             for i in range(0, flat.numel(), CODE_CHUNK)]
    return torch.cat(parts) if parts else flat.new_zeros(0, dtype=torch.uint8)


def iter_codes(packed: torch.Tensor, bits: int, count: int):
    """Unpack pack_codes output chunk by chunk: yields (start, int64 codes) with bounded temporary memory."""
    shifts = torch.arange(bits, device=packed.device, dtype=torch.int32)
    step = CODE_CHUNK * bits // 8  # bytes per chunk
    for i in range(0, count, CODE_CHUNK):
        n = min(CODE_CHUNK, count - i)
        planes = unpack_bits(packed[i // CODE_CHUNK * step:][:step], n * bits).view(n, bits).to(torch.int32)
        yield i, (planes << shifts).sum(dim=1, dtype=torch.int64)


def unpack_codes(packed: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """Inverse of pack_codes: ``count`` int64 codes."""
    out = torch.empty(count, dtype=torch.int64, device=packed.device)
    for start, codes in iter_codes(packed, bits, count):
        out[start:start + codes.numel()] = codes
    return out


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """uint8 codes [rows, cols] in 0..15 -> [rows, ceil(cols/2)] bytes; even column in the low nibble."""
    if codes.shape[1] % 2:
        codes = F.pad(codes, (0, 1))
    codes = codes.to(torch.uint8)
    return codes[:, 0::2] | (codes[:, 1::2] << 4)


def unpack_int4(packed: torch.Tensor, cols: int) -> torch.Tensor:
    """Inverse of ``pack_int4``: [rows, ceil(cols/2)] bytes -> uint8 codes [rows, cols]."""
    out = torch.empty(*packed.shape, 2, dtype=torch.uint8, device=packed.device)
    torch.bitwise_and(packed, 15, out=out[..., 0])
    torch.bitwise_right_shift(packed, 4, out=out[..., 1])
    out = out.reshape(packed.shape[0], -1)
    return out if out.shape[1] == cols else out[:, :cols]
