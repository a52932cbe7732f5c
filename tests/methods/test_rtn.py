"""Round-to-nearest grid: error within half a step, short last groups, one group per row."""

from __future__ import annotations

import torch

from squeezebench.methods.lib.rtn import dequantize, quantize_rtn


def test_rtn_error_is_at_most_half_a_step():
    torch.manual_seed(0)
    w = torch.randn(8, 300)  # 300 = 2 full groups of 128 and a short one of 44
    for bits in (4, 8):
        for symmetric in (False, True):
            codes, scales, zeros = quantize_rtn(w, bits, 128, symmetric)
            assert codes.dtype == torch.uint8 and codes.shape == w.shape
            assert scales.shape == zeros.shape == (8, 3)
            assert int(codes.max()) <= 2 ** bits - 1
            err = (dequantize(codes, scales, zeros, 128) - w).abs()
            step = scales.repeat_interleave(128, dim=1)[:, :300]
            assert (err <= step / 2 + 1e-6).all()
    # group_size <= 0: one group per row
    codes, scales, zeros = quantize_rtn(w, 4, -1)
    assert scales.shape == (8, 1)
