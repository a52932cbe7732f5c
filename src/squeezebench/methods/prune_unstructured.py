"""prune-unstructured: magnitude pruning of Linear/Conv weights, stored sparse (bitmask or CSR + kept values, as
compact weights) and run dense, or as torch sparse CSR at high sparsity."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn

from squeezebench.errors import SqueezebenchError
from squeezebench.methods.base import FRACTION, MethodConfig, MethodContext, Range, register_method
from squeezebench.methods.lib.bitpack import pack_bits, unpack_bits
from squeezebench.methods.lib.compact import PRUNABLE, attach_compact, compact_layout, restore_compact, weight_modules


@dataclass(frozen=True)
class UnstructuredConfig(MethodConfig):
    """Magnitude pruning of Linear/Conv weights; ``scope=global`` ranks all weights together.

    ``csr_matmul``: hold a Linear weight as a torch sparse CSR tensor at inference (F.linear then runs the sparse
    kernel) instead of dense; ``auto`` does it for layers at >= 90 % sparsity, where it measured faster here."""

    name: ClassVar[str] = "prune-unstructured"
    bounds: ClassVar[dict[str, Range]] = {"sparsity": FRACTION}
    sparsity: float = 0.5
    scope: Literal["global", "layer"] = "global"
    csr_matmul: Literal["auto", "on", "off"] = "auto"


def _decode_bitmask(m: nn.Module) -> torch.Tensor:
    n = math.prod(m._dense_shape)
    mask = unpack_bits(m.weight_mask, n)
    dense = m.weight_values.new_zeros(m._dense_shape)
    dense.view(-1)[mask] = m.weight_values
    return dense


def _decode_csr(m: nn.Module) -> torch.Tensor:
    rows = m._dense_shape[0]
    cols = math.prod(m._dense_shape) // rows
    row = torch.repeat_interleave(torch.arange(rows, device=m.weight_crow.device), m.weight_crow.long().diff())
    dense = m.weight_values.new_zeros(m._dense_shape)
    dense.view(rows, cols)[row, m.weight_col.long()] = m.weight_values
    return dense


CSR_MATMUL_MIN_SPARSITY = 0.9


def _decode_sparse(m: nn.Module) -> torch.Tensor:
    dense = _decode_csr(m) if "weight_crow" in m._compact_names else _decode_bitmask(m)
    return dense.to_sparse_csr() if getattr(m, "_csr_matmul", False) else dense


def _wants_csr_matmul(m: nn.Module, layer_sparsity: float, config: "UnstructuredConfig") -> bool:
    if not isinstance(m, nn.Linear) or config.csr_matmul == "off":
        return False
    return config.csr_matmul == "on" or layer_sparsity >= CSR_MATMUL_MIN_SPARSITY


def sparse_buffers(weight: torch.Tensor, keep: torch.Tensor) -> dict[str, torch.Tensor]:
    """The smaller of a bitmask (1 bit/weight + values) and CSR (16/32-bit column per value + row pointers)."""
    values = weight.reshape(-1)[keep].contiguous()
    rows = weight.shape[0]
    cols = weight.numel() // rows
    mask_bytes = math.ceil(weight.numel() / 8)
    col_dtype = torch.int16 if cols <= 32767 else torch.int32
    csr_bytes = values.numel() * (2 if col_dtype is torch.int16 else 4) + (rows + 1) * 4
    if mask_bytes <= csr_bytes:
        return {"weight_mask": pack_bits(keep), "weight_values": values}
    keep2d = keep.view(rows, cols)
    crow = torch.zeros(rows + 1, dtype=torch.int32)
    crow[1:] = keep2d.sum(dim=1).cumsum(0)
    col = keep2d.nonzero()[:, 1].to(col_dtype)
    return {"weight_crow": crow, "weight_col": col, "weight_values": weight.view(rows, cols)[keep2d].contiguous()}


def _prune_unstructured(module: nn.Module, config: UnstructuredConfig, ctx: MethodContext) -> nn.Module:
    targets = weight_modules(module, PRUNABLE)
    if not targets:
        raise SqueezebenchError("prune-unstructured found no Linear/Conv weights to prune in this model")
    with torch.no_grad():
        if config.scope == "global":
            scores = torch.cat([m.weight.detach().abs().reshape(-1) for _, m in targets])
            k = int(config.sparsity * scores.numel())
            threshold = scores.kthvalue(k).values.item() if k > 0 else -1.0
            del scores
        layouts, kept, total, mask_layers, csr_layers = {}, 0, 0, 0, []
        for name, m in targets:
            w = m.weight.detach()
            if config.scope == "layer":
                k = int(config.sparsity * w.numel())
                threshold = w.abs().reshape(-1).kthvalue(k).values.item() if k > 0 else -1.0
            keep = (w.abs() > threshold).reshape(-1)
            buffers = sparse_buffers(w, keep)
            mask_layers += "weight_mask" in buffers
            if _wants_csr_matmul(m, 1 - float(keep.float().mean()), config):
                m._csr_matmul = True
                csr_layers.append(name)
            attach_compact(m, buffers, _decode_sparse)
            layouts[name] = compact_layout(m)
            kept += int(keep.sum())
            total += keep.numel()
    achieved = 1 - kept / total
    if csr_layers:
        in_memory = (f"{len(csr_layers)}/{len(targets)} layers as torch sparse CSR (fp32 value + int64 column per "
                     "kept weight, sparse matmul), the rest dense (zeros included) rebuilt at load")
    else:
        in_memory = "dense (zeros included) rebuilt at load; dense kernels: no speed-up expected"
    ctx.facts.update({
        "in_memory_compressed": len(csr_layers) == len(targets),
        "in_memory_format": in_memory,
        "csr_matmul_layers": csr_layers,
        "storage": (f"{mask_layers} layers bitmask (1 bit/weight) + kept values in the original dtype, "
                    f"{len(targets) - mask_layers} layers CSR (int16/int32 column + value per kept weight); "
                    f"achieved sparsity {achieved:.4f} over {total} Linear/Conv weights"),
        "sparsity_achieved": achieved,
        "compact_layers": layouts,
    })
    ctx.notes.append(f"prune-unstructured: {achieved:.1%} of Linear/Conv weights are zero ({config.scope} magnitude); "
                     "no fine-tuning; embeddings, norms and biases untouched")
    return module


def _restore_unstructured(module, config, facts):
    for name in facts.get("csr_matmul_layers", []):
        module.get_submodule(name)._csr_matmul = True
    return restore_compact(module, facts["compact_layers"], _decode_sparse)


register_method(UnstructuredConfig, "magnitude pruning of Linear/Conv weights, saved as bitmask/CSR + values "
                "(dense at inference; sparse CSR matmul at >= 90 % sparsity)",
                restore=_restore_unstructured, keeps_float=True)(_prune_unstructured)
