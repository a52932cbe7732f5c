"""Compact weights: only the compact buffers are saved, the dense weight is decoded again after every load."""

from __future__ import annotations

import torch
from torch import nn

from squeezebench.methods.lib.compact import (attach_compact, compact_layout, empty_buffers, restore_compact,
                                              weight_modules)


def _decode_halves(m: nn.Module) -> torch.Tensor:
    """A toy format: the weight stored as fp16."""
    return m.weight_half.to(m._dense_dtype).view(m._dense_shape)


def _compress(model: nn.Module) -> dict:
    layouts = {}
    for name, m in weight_modules(model, (nn.Linear,)):
        attach_compact(m, {"weight_half": m.weight.detach().half().reshape(-1)}, _decode_halves)
        layouts[name] = compact_layout(m)
    return layouts


def test_state_dict_holds_only_compact_buffers_and_reload_redecodes():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 2))
    layouts = _compress(model)
    assert layouts == {"0": {"weight_half": [[24], "torch.float16"]}, "2": {"weight_half": [[8], "torch.float16"]}}
    state = model.state_dict()
    assert "0.weight" not in state and state["0.weight_half"].dtype == torch.float16
    assert model[0].weight.dtype == torch.float32 and model[0].weight.shape == (4, 6)

    skeleton = restore_compact(nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 2)), layouts, _decode_halves)
    assert not torch.equal(skeleton[0].weight, model[0].weight)  # placeholder until the state dict is loaded
    skeleton.load_state_dict(state, strict=True)
    x = torch.randn(3, 6)
    assert torch.equal(skeleton(x), model(x))
    assert torch.equal(skeleton[2].weight, model[2].weight)


def test_empty_buffers_follow_the_layout():
    buffers = empty_buffers({"a": [[2, 3], "torch.int16"], "b": [[5], "torch.uint8"]})
    assert buffers["a"].shape == (2, 3) and buffers["a"].dtype == torch.int16
    assert buffers["b"].shape == (5,) and buffers["b"].dtype == torch.uint8


def test_weight_modules_skip_tied_weights():
    emb = nn.Embedding(10, 4)
    head = nn.Linear(4, 10, bias=False)
    head.weight = emb.weight
    model = nn.ModuleDict({"emb": emb, "head": head, "mid": nn.Linear(4, 4)})
    assert [n for n, _ in weight_modules(model, (nn.Linear, nn.Embedding))] == ["mid"]
