"""Packed int8/int4 layers: only compressed buffers in the state dict, strict reload, row-wise embedding lookup."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from squeezebench.methods.lib.packed_linear import QuantizedEmbedding, WeightOnlyLinear


@pytest.mark.parametrize("bits", [4, 8])
def test_weight_only_linear_holds_only_compressed_buffers(bits):
    torch.manual_seed(0)
    lin = nn.Linear(256, 64)
    q = WeightOnlyLinear.from_linear(lin, bits, 128)
    state = q.state_dict()
    assert set(state) == {"qweight", "scales", "zeros", "bias"}
    assert state["qweight"].dtype == torch.uint8 and state["scales"].dtype == torch.float16
    assert state["qweight"].numel() == 64 * 256 * bits // 8
    x = torch.randn(3, 256)
    rel = ((q(x) - lin(x)).norm() / lin(x).norm()).item()
    assert rel < (0.15 if bits == 4 else 0.01)
    # an empty module of the same shape takes the state dict strictly and computes the same
    empty = WeightOnlyLinear.empty(256, 64, bits, 128)
    empty.load_state_dict(state, strict=True)
    assert torch.equal(empty(x), q(x))


def test_quantized_embedding_gathers_dequantized_rows():
    torch.manual_seed(0)
    emb = nn.Embedding(50, 32, padding_idx=0)
    q = QuantizedEmbedding.from_embedding(emb, 4, 16)
    ids = torch.tensor([[3, 7, 7], [0, 49, 1]])
    full = q.weight
    assert torch.equal(q(ids), full[ids])
    assert (q(ids) - emb(ids)).abs().max() < 0.2
