"""Conv channel chains found by torch.fx: where prune-structured can remove a conv's output channels (a CNN's
producer -> consumer paths whose channels feed nothing else, e.g. no residual sum)."""

from __future__ import annotations

import torch
from torch import nn

from squeezebench.methods.lib.compact import PRUNABLE

_ELEMENTWISE_MODULES = (nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh,
                        nn.LeakyReLU, nn.ELU, nn.Mish, nn.Identity, nn.Dropout, nn.Dropout2d)
_ELEMENTWISE_FUNCS = {torch.relu, torch.sigmoid, torch.tanh, nn.functional.relu, nn.functional.relu6,
                      nn.functional.silu, nn.functional.gelu, nn.functional.hardswish, nn.functional.dropout}
_ELEMENTWISE_METHODS = {"relu", "sigmoid", "tanh", "contiguous"}


def _is_elementwise_module(m: nn.Module) -> bool:
    return isinstance(m, _ELEMENTWISE_MODULES) or (type(m).__name__.endswith("Swish") and not list(m.parameters()))


def is_conv(m) -> bool:
    return isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d))


def is_depthwise(m) -> bool:
    return is_conv(m) and m.groups > 1 and m.groups == m.in_channels == m.out_channels


class _LeafTracer(torch.fx.Tracer):
    def is_leaf_module(self, m, qualname):
        return isinstance(m, PRUNABLE + (nn.modules.batchnorm._BatchNorm,)) or not list(m.children())


def cnn_chains(root: nn.Module) -> list[dict]:
    """Conv -> [BN | activation | depthwise conv]* -> conv (or pool/flatten -> Linear) paths whose channels
    feed nothing else, so the producer's output channels can be removed without touching residual sums."""
    graph = _LeafTracer().trace(root)
    mods = dict(root.named_modules())
    chains = []
    for node in graph.nodes:
        prod = mods.get(node.target) if node.op == "call_module" else None
        if not (is_conv(prod) and prod.groups == 1):
            continue
        path, cur, flat = [], node, False
        while True:
            users = list(cur.users)
            if len(users) != 1:
                break
            u = users[0]
            m = mods.get(u.target) if u.op == "call_module" else None
            if u.args[:1] != (cur,) or any(a is cur for a in list(u.args[1:]) + list(u.kwargs.values())):
                break
            if isinstance(m, nn.modules.batchnorm._BatchNorm) or is_depthwise(m):
                if flat:
                    break
                path.append(m)
            elif m is not None and _is_elementwise_module(m):
                pass
            elif isinstance(m, nn.AdaptiveAvgPool2d) and m.output_size in (1, (1, 1)):
                flat = "pooled"
            elif u.op == "call_function" and u.target in _ELEMENTWISE_FUNCS:
                pass
            elif u.op == "call_method" and u.target in _ELEMENTWISE_METHODS:
                pass
            elif (u.op == "call_function" and u.target is nn.functional.adaptive_avg_pool2d
                  and u.args[1:2] in ((1,), ((1, 1),))):
                flat = "pooled"
            elif flat and ((u.op == "call_method" and u.target == "flatten") or u.target is torch.flatten):
                start = u.kwargs.get("start_dim", u.args[1] if len(u.args) > 1 else (0 if u.op == "call_method" else 0))
                if start != 1:
                    break
                flat = "flat"
            elif is_conv(m) and m.groups == 1 and not flat:
                chains.append({"producer": prod, "path": path, "consumer": m})
                break
            elif isinstance(m, nn.Linear) and flat == "flat":
                chains.append({"producer": prod, "path": path, "consumer": m})
                break
            else:
                break
            cur = u
    return chains
