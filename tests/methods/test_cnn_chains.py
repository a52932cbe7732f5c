"""The fx chain finder: conv -> conv and conv -> pool/flatten -> Linear chains, never through a residual sum."""

from __future__ import annotations

import torch
from torch import nn

from squeezebench.methods.lib.cnn_chains import cnn_chains, is_depthwise
from tests.helpers_models import TinyCNN


def test_tiny_cnn_chains_pass_batchnorm_and_pooling():
    model = TinyCNN()
    chains = cnn_chains(model)
    f = model.features
    assert [(c["producer"], c["path"], c["consumer"]) for c in chains] == [(f[0], [f[1]], f[3]), (f[3], [f[4]], model.fc)]


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        h = torch.relu(self.stem(x))
        return self.head(self.dw(self.conv(h)) + h)  # stem's channels feed a sum: not prunable alone


def test_residual_use_stops_a_chain_and_depthwise_convs_are_passed_through():
    model = _Residual()
    chains = cnn_chains(model)
    assert [(c["producer"], c["consumer"]) for c in chains] == []  # conv -> dw -> (+): the sum ends it
    assert is_depthwise(model.dw) and not is_depthwise(model.conv)

    plain = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3, groups=8), nn.Conv2d(8, 4, 1))
    (chain,) = cnn_chains(plain)
    assert chain["producer"] is plain[0] and chain["path"] == [plain[2]] and chain["consumer"] is plain[3]
