"""Compact weights (pruning and clustering): a Linear/Conv/Embedding whose ``weight`` parameter is replaced by
persistent compact buffers (what is saved) plus a non-persistent dense ``weight`` buffer decoded from them once,
at transform time and again after every ``load_state_dict``. The state dict therefore holds only the compact
buffers, and the forward is the module's own dense one (no custom kernels, no speed-up from sparsity).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

# dtype names as compact_layout records them in facts
DTYPES = {str(d): d for d in (torch.float32, torch.float16, torch.bfloat16, torch.uint8, torch.int8,
                              torch.int16, torch.int32, torch.int64)}
# the layers pruning and clustering compress (and distillation fine-tunes)
PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)

Decoder = Callable[[nn.Module], torch.Tensor]


def _redecode(module: nn.Module, incompatible_keys) -> None:
    ref = next(iter(module._compact_names))
    module._buffers["weight"] = module._decode_weight(module).to(getattr(module, ref).device)


def attach_compact(module: nn.Module, buffers: dict[str, torch.Tensor], decode: Decoder,
                   decode_now: bool = True) -> None:
    """Replace ``module.weight`` by persistent ``buffers`` and a non-persistent dense weight ``decode(module)``
    (decoded now, and again after each load_state_dict; ``decode_now=False`` leaves a placeholder until the load)."""
    shape, dtype = tuple(module.weight.shape), module.weight.dtype
    del module._parameters["weight"]
    for name, tensor in buffers.items():
        module.register_buffer(name, tensor)
    module._compact_names = tuple(buffers)
    module._dense_shape, module._dense_dtype = shape, dtype
    module._decode_weight = decode
    dense = decode(module) if decode_now else torch.empty(shape, dtype=dtype)
    module.register_buffer("weight", dense, persistent=False)
    module.register_load_state_dict_post_hook(_redecode)


def compact_layout(module: nn.Module) -> dict[str, list]:
    """Shapes and dtypes of a compact module's buffers, for ``facts`` (restore rebuilds them empty)."""
    return {n: [list(getattr(module, n).shape), str(getattr(module, n).dtype)] for n in module._compact_names}


def empty_buffers(layout: dict[str, list]) -> dict[str, torch.Tensor]:
    """Zero buffers of a recorded ``compact_layout`` (restore fills them from the saved state dict)."""
    return {b: torch.zeros(shape, dtype=DTYPES[dtype]) for b, (shape, dtype) in layout.items()}


def restore_compact(root: nn.Module, layouts: dict[str, dict[str, list]], decode: Decoder) -> nn.Module:
    """On a fresh skeleton, give each named module empty compact buffers of the recorded layout."""
    for name, layout in layouts.items():
        attach_compact(root.get_submodule(name), empty_buffers(layout), decode, decode_now=False)
    return root


def shared_weight_ids(root: nn.Module) -> set[int]:
    """ids of parameters used by more than one module (tied embeddings): left uncompressed."""
    seen: dict[int, int] = {}
    for _, p in root.named_parameters(remove_duplicate=False):
        seen[id(p)] = seen.get(id(p), 0) + 1
    return {i for i, n in seen.items() if n > 1}


def weight_modules(root: nn.Module, kinds: tuple[type, ...]) -> list[tuple[str, nn.Module]]:
    """Modules of ``kinds`` that own an unshared ``weight`` parameter."""
    shared = shared_weight_ids(root)
    out = []
    for name, m in root.named_modules():
        w = m._parameters.get("weight") if isinstance(m, kinds) else None
        if isinstance(w, nn.Parameter) and id(w) not in shared:
            out.append((name, m))
    return out
