"""prune-2of4: 2:4 semi-structured sparsity of Linear weights (named without a colon because ``:`` starts a
method's parameters). Saved as kept values + 2-bit positions (compact weights); on CUDA the dense weight becomes
a ``to_sparse_semi_structured`` tensor at the first forward, so sm80+ sparse tensor cores run it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

import torch
from torch import nn

from squeezebench.errors import SqueezebenchError
from squeezebench.methods.base import MethodConfig, MethodContext, register_method
from squeezebench.methods.lib.bitpack import pack_codes, unpack_codes
from squeezebench.methods.lib.compact import attach_compact, compact_layout, empty_buffers, weight_modules


@dataclass(frozen=True)
class SemiStructuredConfig(MethodConfig):
    """2:4 sparsity of Linear weights (2 largest of every 4 along the input), run with sparse tensor cores."""

    name: ClassVar[str] = "prune-2of4"


def _decode_24(m: nn.Module) -> torch.Tensor:
    rows, cols = m._dense_shape
    groups = rows * cols // 4
    codes = unpack_codes(m.weight_index, 2, groups * 2).view(groups, 2)
    dense = m.weight_values.new_zeros(groups, 4)
    dense.scatter_(1, codes, m.weight_values.view(groups, 2))
    return dense.view(rows, cols)


def _to_semi_structured(m: nn.Module, args) -> None:
    w = m._buffers["weight"]
    if w.is_cuda and not getattr(m, "_semi_structured", False):
        from torch.sparse import to_sparse_semi_structured

        m._buffers["weight"] = to_sparse_semi_structured(w)
        m._semi_structured = True


def _attach_24(m: nn.Module, buffers: dict[str, torch.Tensor], decode_now: bool = True) -> None:
    attach_compact(m, buffers, _decode_24, decode_now)
    m.register_forward_pre_hook(_to_semi_structured)
    m.register_load_state_dict_post_hook(lambda mod, _: setattr(mod, "_semi_structured", False))


def _check_24(config, ctx: MethodContext) -> Optional[str]:
    if not ctx.device.startswith("cuda"):
        return "2:4 sparse kernels (to_sparse_semi_structured) are CUDA-only"
    if not torch.cuda.is_available():
        return "no CUDA device visible to PyTorch"
    major, minor = torch.cuda.get_device_capability()
    if major < 8:
        return f"{torch.cuda.get_device_name()} (sm{major}{minor}) has no sparse tensor cores (needs sm80+)"
    return None


def _prune_24(module: nn.Module, config, ctx: MethodContext) -> nn.Module:
    layouts = {}
    with torch.no_grad():
        for name, m in weight_modules(module, (nn.Linear,)):
            rows, cols = m.weight.shape
            if cols % 64 or rows % 32:  # shapes the semi-structured kernels accept without padding
                continue
            groups = m.weight.detach().reshape(-1, 4)
            index = groups.abs().topk(2, dim=1).indices.sort(dim=1).values
            values = groups.gather(1, index).contiguous()
            _attach_24(m, {"weight_index": pack_codes(index, 2), "weight_values": values.view(-1)})
            layouts[name] = compact_layout(m)
    if not layouts:
        raise SqueezebenchError("prune-2of4 found no Linear layer with in_features % 64 == 0 "
                                "and out_features % 32 == 0")
    ctx.facts.update({"in_memory_compressed": True,
                      "in_memory_format": "2:4 semi-structured sparse (torch.sparse) on CUDA",
                      "storage": "kept values (original dtype) + 2-bit positions: 4 bits per group of 4",
                      "compact_layers": layouts})
    return module


def _restore_24(module, config, facts):
    for name, layout in facts["compact_layers"].items():
        _attach_24(module.get_submodule(name), empty_buffers(layout), decode_now=False)
    return module


register_method(SemiStructuredConfig, "2:4 semi-structured sparsity of Linear weights (CUDA sm80+ sparse kernels)",
                restore=_restore_24, check=_check_24, devices=("cuda",))(_prune_24)

