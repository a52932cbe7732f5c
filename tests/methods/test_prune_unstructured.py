"""prune-unstructured on tiny config-built models: sparsity, bitmask/CSR storage, CSR matmul, round trip."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.methods.pruning_helpers import TEXT, bert, round_trip


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_unstructured_round_trip_sparsity_and_size(tiny_bert_dir, tmp_path, scope):
    r = round_trip(f"prune-unstructured:sparsity=0.5,scope={scope}", lambda: bert(tiny_bert_dir), TEXT, tmp_path)
    assert torch.equal(r["out"], r["reloaded"])
    assert not torch.equal(r["out"], r["ref"])
    assert abs(r["facts"]["sparsity_achieved"] - 0.5) < 0.01
    linears = [m for m in r["skeleton"].modules() if isinstance(m, nn.Linear)]
    zeros = sum(int((m.weight == 0).sum()) for m in linears)
    assert abs(zeros / sum(m.weight.numel() for m in linears) - 0.5) < 0.01
    if scope == "layer":
        for m in linears:
            assert abs(float((m.weight == 0).float().mean()) - 0.5) < 0.02
    # only compact buffers are saved: no dense Linear weight in the state dict
    state = r["model"].state_dict()
    assert "encoder.layer.0.attention.self.query.weight" not in state
    assert state["encoder.layer.0.attention.self.query.weight_mask"].dtype == torch.uint8
    # the tiny model is dominated by its (unpruned) embeddings: the Linear part shrinks to 17/32
    linear_bytes = sum(m.weight.numel() * 4 for m in linears)
    assert r["orig_size"] - r["size"] > 0.4 * linear_bytes
    assert r["facts"]["in_memory_compressed"] is False


def test_more_sparsity_means_larger_error(tiny_bert_dir, tmp_path):
    errors = []
    for i, s in enumerate((0.3, 0.6, 0.9)):
        (tmp_path / str(i)).mkdir()
        r = round_trip(f"prune-unstructured:sparsity={s}", lambda: bert(tiny_bert_dir), TEXT, tmp_path / str(i))
        errors.append(float((r["out"] - r["ref"]).abs().mean()))
    assert errors[0] < errors[1] < errors[2]


def test_unstructured_high_sparsity_uses_csr_and_round_trips(tmp_path):
    def build():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 8)).eval()

    x = {"input": torch.randn(3, 512)}
    r = round_trip("prune-unstructured:sparsity=0.97,scope=layer", build, x, tmp_path)
    assert "weight_crow" in r["model"][0]._compact_names
    assert torch.allclose(r["out"], r["reloaded"], atol=1e-6)
    assert r["size"] < 0.1 * r["orig_size"]
    # >= 90 % sparse Linear layers run the sparse CSR matmul; the result equals the dense pruned weight's
    weight = r["skeleton"][0].weight
    assert weight.layout == torch.sparse_csr and r["facts"]["in_memory_compressed"] is True
    dense = weight.to_dense()
    assert torch.allclose(r["skeleton"][0](x["input"]), x["input"] @ dense.T + r["skeleton"][0].bias, atol=1e-5)
    off = round_trip("prune-unstructured:sparsity=0.97,scope=layer,csr_matmul=off", build, x, tmp_path / "off")
    assert off["skeleton"][0].weight.layout == torch.strided
    assert torch.allclose(off["out"], r["out"], atol=1e-5)
