"""Bit packing round trips: flags, integer codes of every width, int4 nibbles."""

from __future__ import annotations

import torch

from squeezebench.methods.lib.bitpack import pack_bits, pack_codes, pack_int4, unpack_bits, unpack_codes, unpack_int4


def test_bit_packing_round_trips():
    flags = torch.rand(101) > 0.5
    assert pack_bits(flags).numel() == 13
    assert torch.equal(unpack_bits(pack_bits(flags), 101), flags)
    for bits in (1, 2, 3, 4, 5, 8):
        codes = torch.randint(0, 2 ** bits, (77,))
        assert pack_codes(codes, bits).numel() == -(-77 * bits // 8)
        assert torch.equal(unpack_codes(pack_codes(codes, bits), bits, 77), codes)


def test_int4_packing_round_trips_and_halves_bytes():
    codes = torch.randint(0, 16, (5, 77), dtype=torch.uint8)
    packed = pack_int4(codes)
    assert packed.shape == (5, 39) and packed.dtype == torch.uint8
    assert torch.equal(unpack_int4(packed, 77), codes)
