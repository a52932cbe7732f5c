"""prune-2of4: the CUDA check, the 2:4 pattern and its round trip on CPU, semi-structured kernels on CUDA."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from squeezebench.methods import METHODS, MethodContext, parse_method
from tests.methods.pruning_helpers import round_trip


def test_24_check_on_cpu_and_pattern(tmp_path):
    method = METHODS.get("prune-2of4")
    assert "CUDA" in method.check(parse_method("prune-2of4"), MethodContext(task=None, bundle=None, device="cpu"))

    def build():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10)).eval()

    r = round_trip("prune-2of4", build, {"input": torch.randn(3, 128)}, tmp_path)
    w = r["skeleton"][0].weight
    assert torch.equal((w.view(-1, 4) != 0).sum(dim=1), torch.full((64 * 32,), 2))
    assert "weight" in dict(r["skeleton"][2].named_parameters())  # 64x10 is not a kernel-friendly shape
    assert torch.equal(r["out"], r["reloaded"])


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] < 8,
                    reason="2:4 sparse kernels need a CUDA GPU with sm80+")
def test_24_runs_semi_structured_on_cuda():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(128, 128)).half().eval()
    method = METHODS.get("prune-2of4")
    model = method.transform(model, parse_method("prune-2of4"), MethodContext(task=None, bundle=None, device="cuda"))
    x = torch.randn(64, 128, dtype=torch.float16)
    dense_out = model(x)
    model.cuda()
    out = model(x.cuda())
    assert model[0]._semi_structured
    assert torch.allclose(out.float().cpu(), dense_out.float(), atol=1e-2)
