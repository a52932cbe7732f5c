"""Pruning: prune-unstructured (magnitude, stored sparse), prune-structured (smaller dense model), prune-2of4
(2:4 semi-structured; named without a colon because ``:`` starts a method's parameters).

Compact weights (also used by clustering): a Linear/Conv/Embedding whose ``weight`` parameter is replaced by
persistent compact buffers (what is saved) plus a non-persistent dense ``weight`` buffer decoded from them once,
at transform time and again after every ``load_state_dict``. The state dict therefore holds only the compact
buffers, and the forward is the module's own dense one (no custom kernels, no speed-up from sparsity).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable, ClassVar, Literal, Optional

import torch
from torch import nn

from squeezebench.errors import SqueezebenchError
from squeezebench.methods.base import NON_NEGATIVE, POSITIVE, FRACTION, Range, MethodConfig, MethodContext, register_method, stack_inputs, wrap_module

log = logging.getLogger(__name__)

DTYPES = {str(d): d for d in (torch.float32, torch.float16, torch.bfloat16, torch.uint8, torch.int8,
                              torch.int16, torch.int32, torch.int64)}
PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
CALIBRATION_SAMPLES = 16

# ---------------------------------------------------------------------------------------------------------------
# bit packing
# ---------------------------------------------------------------------------------------------------------------


def pack_bits(flags: torch.Tensor) -> torch.Tensor:
    """Pack a flat bool/0-1 tensor into uint8, 8 flags a byte (least significant bit first)."""
    flat = flags.reshape(-1).to(torch.uint8)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    shifts = torch.arange(8, dtype=torch.uint8, device=flat.device)
    return (flat.view(-1, 8) << shifts).sum(dim=1, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, count: int) -> torch.Tensor:
    """Inverse of pack_bits: the first ``count`` flags as a bool tensor."""
    shifts = torch.arange(8, dtype=torch.uint8, device=packed.device)
    return ((packed.view(-1, 1) >> shifts) & 1).view(-1)[:count].bool()


CODE_CHUNK = 1 << 20  # codes per step when (un)packing: bounds the temporary memory (a multiple of 8)


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack integer codes in [0, 2**bits) with ``bits`` bits each into uint8 (bit planes, LSB first)."""
    flat = codes.reshape(-1)
    shifts = torch.arange(bits, device=flat.device, dtype=torch.int32)
    parts = [pack_bits(((flat[i:i + CODE_CHUNK].to(torch.int32).view(-1, 1) >> shifts) & 1).view(-1))
             for i in range(0, flat.numel(), CODE_CHUNK)]
    return torch.cat(parts) if parts else flat.new_zeros(0, dtype=torch.uint8)


def iter_codes(packed: torch.Tensor, bits: int, count: int):
    """Unpack pack_codes output chunk by chunk: yields (start, int64 codes) with bounded temporary memory."""
    shifts = torch.arange(bits, device=packed.device, dtype=torch.int32)
    step = CODE_CHUNK * bits // 8  # bytes per chunk
    for i in range(0, count, CODE_CHUNK):
        n = min(CODE_CHUNK, count - i)
        planes = unpack_bits(packed[i // CODE_CHUNK * step:][:step], n * bits).view(n, bits).to(torch.int32)
        yield i, (planes << shifts).sum(dim=1, dtype=torch.int64)


def unpack_codes(packed: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """Inverse of pack_codes: ``count`` int64 codes."""
    out = torch.empty(count, dtype=torch.int64, device=packed.device)
    for start, codes in iter_codes(packed, bits, count):
        out[start:start + codes.numel()] = codes
    return out


# ---------------------------------------------------------------------------------------------------------------
# compact weights
# ---------------------------------------------------------------------------------------------------------------

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


def restore_compact(root: nn.Module, layouts: dict[str, dict[str, list]], decode: Decoder) -> nn.Module:
    """On a fresh skeleton, give each named module empty compact buffers of the recorded layout."""
    for name, layout in layouts.items():
        module = root.get_submodule(name)
        buffers = {b: torch.zeros(shape, dtype=DTYPES[dtype]) for b, (shape, dtype) in layout.items()}
        attach_compact(module, buffers, decode, decode_now=False)
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


# ---------------------------------------------------------------------------------------------------------------
# prune-unstructured
# ---------------------------------------------------------------------------------------------------------------


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

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got {self.sparsity}")


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
                restore=_restore_unstructured)(_prune_unstructured)


# ---------------------------------------------------------------------------------------------------------------
# prune-structured
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StructuredConfig(MethodConfig):
    """Remove ``ratio`` of attention heads and FFN neurons per transformer layer (or of CNN channels)."""

    name: ClassVar[str] = "prune-structured"
    bounds: ClassVar[dict[str, Range]] = {"ratio": FRACTION, "bn_samples": NON_NEGATIVE}
    ratio: float = 0.3
    bn_samples: int = 256  # CNNs: calibration inputs that re-estimate batch-norm statistics after pruning; 0 = off

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.ratio < 1.0:
            raise ValueError(f"ratio must be in [0, 1), got {self.ratio}")
        if self.bn_samples < 0:
            raise ValueError(f"bn_samples must be >= 0, got {self.bn_samples}")


def _kept(n: int, ratio: float) -> int:
    return max(1, n - int(round(ratio * n)))


class _Recorder:
    """Slices parameters and remembers the new shapes and attributes for restore."""

    def __init__(self, root: nn.Module):
        self.root = root
        self.names = {id(m): n for n, m in root.named_modules()}
        self.shapes: dict[str, list[int]] = {}
        self.attrs: dict[str, dict[str, int]] = {}

    def slice(self, module: nn.Module, dim_by_tensor: dict[str, int], index: torch.Tensor) -> None:
        prefix = self.names[id(module)]
        for tname, dim in dim_by_tensor.items():
            t = getattr(module, tname, None)
            if t is None:
                continue
            new = t.detach().index_select(dim, index).contiguous()
            if isinstance(t, nn.Parameter):
                module._parameters[tname] = nn.Parameter(new, requires_grad=t.requires_grad)
            else:
                module._buffers[tname] = new
            self.shapes[f"{prefix}.{tname}" if prefix else tname] = list(new.shape)

    def set(self, module: nn.Module, **attrs: int) -> None:
        for k, v in attrs.items():
            setattr(module, k, v)
        self.attrs.setdefault(self.names[id(module)], {}).update(attrs)

    def linear_out(self, lin: nn.Linear, index: torch.Tensor) -> None:
        self.slice(lin, {"weight": 0, "bias": 0}, index)
        self.set(lin, out_features=len(index))

    def linear_in(self, lin: nn.Linear, index: torch.Tensor) -> None:
        self.slice(lin, {"weight": 1}, index)
        self.set(lin, in_features=len(index))


def _input_importance(ctx: MethodContext, consumers: list[nn.Module]) -> dict[int, torch.Tensor]:
    """Mean |input| per channel (dim 1 for convs, last dim otherwise) of each consumer, over calibration data."""
    if ctx.calibration is None or ctx.task is None or ctx.bundle is None:
        return {}
    sums: dict[int, torch.Tensor] = {}

    def hook(mod, args):
        x = args[0].detach().abs().float()
        x = x.transpose(1, -1) if isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) else x
        per_channel = x.reshape(-1, x.shape[-1]).mean(dim=0)
        sums[id(mod)] = sums.get(id(mod), 0) + per_channel

    handles = [m.register_forward_pre_hook(hook) for m in consumers]
    try:
        wrapped = ctx.task.wrap(ctx.bundle).eval()
        with torch.no_grad():
            for inputs in ctx.calibration(CALIBRATION_SAMPLES):
                wrapped(**inputs)
    finally:
        for h in handles:
            h.remove()
    return sums


def _column_scores(consumer: nn.Module, act: Optional[torch.Tensor]) -> torch.Tensor:
    """Importance of each input channel of ``consumer``: ||W[:, j]|| (x mean |x_j| when calibrated)."""
    w = consumer.weight.detach().float()
    w = w.transpose(0, 1).reshape(w.shape[1], -1)
    norms = w.norm(dim=1)
    return norms * act if act is not None else norms


def _top(scores: torch.Tensor, keep: int) -> torch.Tensor:
    return scores.topk(keep).indices.sort().values


def _bart_like(m: nn.Module) -> Optional[dict[str, nn.Module]]:
    """Whisper/BART/wav2vec2-like layers: self_attn or attention (q/k/v/out_proj, num_heads) and an FFN (fc1/fc2, or
    feed_forward.intermediate_dense/output_dense). Cross-attention (Whisper's encoder_attn) is left whole."""
    sa, ffn = getattr(m, "self_attn", None) or getattr(m, "attention", None), getattr(m, "feed_forward", None)
    up, down = (getattr(m, "fc1", None), getattr(m, "fc2", None)) if hasattr(m, "fc1") else \
        (getattr(ffn, "intermediate_dense", None), getattr(ffn, "output_dense", None))
    if (sa is not None and hasattr(sa, "head_dim") and hasattr(sa, "num_heads") and isinstance(up, nn.Linear)
            and isinstance(down, nn.Linear)
            and all(isinstance(getattr(sa, k, None), nn.Linear) for k in ("q_proj", "k_proj", "v_proj", "out_proj"))):
        return {"kind": "bart", "self": sa, "o": sa.out_proj, "up": up, "down": down}
    return None


def _transformer_layers(root: nn.Module) -> list[tuple[str, dict[str, nn.Module]]]:
    """Known encoder/decoder layer shapes: BERT-like (attention.self/output, intermediate, output), Llama-like
    and Whisper/BART/wav2vec2-like."""
    found = []
    for name, m in root.named_modules():
        att = getattr(m, "attention", None)
        if att is not None and hasattr(att, "self") and hasattr(m, "intermediate") and hasattr(m, "output"):
            s = att.self
            if all(isinstance(getattr(s, k, None), nn.Linear) for k in ("query", "key", "value")) \
                    and hasattr(s, "attention_head_size"):
                found.append((name, {"kind": "bert", "self": s, "o": att.output.dense, "up": m.intermediate.dense,
                                     "down": m.output.dense}))
            continue
        sa, mlp = getattr(m, "self_attn", None), getattr(m, "mlp", None)
        if (sa is not None and mlp is not None and hasattr(sa, "head_dim")
                and all(hasattr(sa, k) for k in ("q_proj", "k_proj", "v_proj", "o_proj"))
                and all(hasattr(mlp, k) for k in ("gate_proj", "up_proj", "down_proj"))):
            found.append((name, {"kind": "llama", "self": sa, "o": sa.o_proj, "mlp": mlp, "down": mlp.down_proj}))
        elif (bart := _bart_like(m)) is not None:
            found.append((name, bart))
    return found


def _prune_transformer(layers, ratio: float, acts: dict[int, torch.Tensor], rec: _Recorder) -> list[str]:
    summary = []
    for _, layer in layers:
        o, down = layer["o"], layer["down"]
        col_o = _column_scores(o, acts.get(id(o)))
        col_down = _column_scores(down, acts.get(id(down)))
        if layer["kind"] == "bart":
            sa = layer["self"]
            hd = sa.head_dim
            heads = sa.q_proj.out_features // hd
            keep_heads = _top(col_o.view(heads, hd).sum(dim=1), _kept(heads, ratio))
            index = (keep_heads.view(-1, 1) * hd + torch.arange(hd)).view(-1)
            for lin in (sa.q_proj, sa.k_proj, sa.v_proj):
                rec.linear_out(lin, index)
            rec.linear_in(o, index)
            rec.set(sa, num_heads=len(keep_heads))
            neurons = col_down.numel()
            keep_n = _top(col_down, _kept(neurons, ratio))
            rec.linear_out(layer["up"], keep_n)
            rec.linear_in(down, keep_n)
            summary.append(f"{len(keep_heads)}/{heads} heads, {len(keep_n)}/{neurons} FFN")
        elif layer["kind"] == "bert":
            s = layer["self"]
            hd = s.attention_head_size
            heads = s.all_head_size // hd
            keep_heads = _top(col_o.view(heads, hd).sum(dim=1), _kept(heads, ratio))
            index = (keep_heads.view(-1, 1) * hd + torch.arange(hd)).view(-1)
            for lin in (s.query, s.key, s.value):
                rec.linear_out(lin, index)
            rec.linear_in(o, index)
            rec.set(s, num_attention_heads=len(keep_heads), all_head_size=len(index))
            neurons = col_down.numel()
            keep_n = _top(col_down, _kept(neurons, ratio))
            rec.linear_out(layer["up"], keep_n)
            rec.linear_in(down, keep_n)
            summary.append(f"{len(keep_heads)}/{heads} heads, {len(keep_n)}/{neurons} FFN")
        else:  # llama-like with GQA: remove whole KV groups (a KV head with its query heads)
            sa, mlp = layer["self"], layer["mlp"]
            hd = sa.head_dim
            kv_heads = sa.k_proj.out_features // hd
            q_heads = sa.q_proj.out_features // hd
            rep = q_heads // kv_heads
            group_scores = col_o.view(kv_heads, rep * hd).sum(dim=1)
            keep_groups = _top(group_scores, _kept(kv_heads, ratio))
            kv_index = (keep_groups.view(-1, 1) * hd + torch.arange(hd)).view(-1)
            q_index = (keep_groups.view(-1, 1) * rep * hd + torch.arange(rep * hd)).view(-1)
            rec.linear_out(sa.q_proj, q_index)
            rec.linear_out(sa.k_proj, kv_index)
            rec.linear_out(sa.v_proj, kv_index)
            rec.linear_in(o, q_index)
            neurons = col_down.numel()
            keep_n = _top(col_down, _kept(neurons, ratio))
            rec.linear_out(mlp.gate_proj, keep_n)
            rec.linear_out(mlp.up_proj, keep_n)
            rec.linear_in(down, keep_n)
            rec.set(mlp, intermediate_size=len(keep_n))
            summary.append(f"{len(keep_groups)}/{kv_heads} KV groups ({len(keep_groups) * rep}/{q_heads} heads), "
                           f"{len(keep_n)}/{neurons} FFN")
    return summary


# --- CNNs: channel chains found by torch.fx ---------------------------------------------------------------------

_ELEMENTWISE_MODULES = (nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh,
                        nn.LeakyReLU, nn.ELU, nn.Mish, nn.Identity, nn.Dropout, nn.Dropout2d)
_ELEMENTWISE_FUNCS = {torch.relu, torch.sigmoid, torch.tanh, nn.functional.relu, nn.functional.relu6,
                      nn.functional.silu, nn.functional.gelu, nn.functional.hardswish, nn.functional.dropout}
_ELEMENTWISE_METHODS = {"relu", "sigmoid", "tanh", "contiguous"}
_POOL_FUNCS = {nn.functional.adaptive_avg_pool2d, torch.flatten}


def _is_elementwise_module(m: nn.Module) -> bool:
    return isinstance(m, _ELEMENTWISE_MODULES) or (type(m).__name__.endswith("Swish") and not list(m.parameters()))


def _is_conv(m) -> bool:
    return isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d))


def _is_depthwise(m) -> bool:
    return _is_conv(m) and m.groups > 1 and m.groups == m.in_channels == m.out_channels


class _LeafTracer(torch.fx.Tracer):
    def is_leaf_module(self, m, qualname):
        return isinstance(m, PRUNABLE + (nn.modules.batchnorm._BatchNorm,)) or not list(m.children())


def _cnn_chains(root: nn.Module) -> list[dict]:
    """Conv -> [BN | activation | depthwise conv]* -> conv (or pool/flatten -> Linear) paths whose channels
    feed nothing else, so the producer's output channels can be removed without touching residual sums."""
    graph = _LeafTracer().trace(root)
    mods = dict(root.named_modules())
    chains = []
    for node in graph.nodes:
        prod = mods.get(node.target) if node.op == "call_module" else None
        if not (_is_conv(prod) and prod.groups == 1):
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
            if isinstance(m, nn.modules.batchnorm._BatchNorm) or _is_depthwise(m):
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
            elif _is_conv(m) and m.groups == 1 and not flat:
                chains.append({"producer": prod, "path": path, "consumer": m})
                break
            elif isinstance(m, nn.Linear) and flat == "flat":
                chains.append({"producer": prod, "path": path, "consumer": m})
                break
            else:
                break
            cur = u
    return chains


def _prune_cnn(chains: list[dict], ratio: float, acts: dict[int, torch.Tensor], rec: _Recorder) -> list[str]:
    summary = []
    for chain in chains:
        prod, consumer = chain["producer"], chain["consumer"]
        n = prod.out_channels
        act = acts.get(id(consumer))
        if act is not None:
            scores = _column_scores(consumer, act)
        else:  # no calibration: L1 norm of each producer filter
            scores = prod.weight.detach().abs().reshape(n, -1).sum(dim=1)
        index = _top(scores, _kept(n, ratio))
        rec.slice(prod, {"weight": 0, "bias": 0}, index)
        rec.set(prod, out_channels=len(index))
        for m in chain["path"]:
            if _is_depthwise(m):
                rec.slice(m, {"weight": 0, "bias": 0}, index)
                rec.set(m, in_channels=len(index), out_channels=len(index), groups=len(index))
            else:
                rec.slice(m, {"weight": 0, "bias": 0, "running_mean": 0, "running_var": 0}, index)
                rec.set(m, num_features=len(index))
        if isinstance(consumer, nn.Linear):
            rec.linear_in(consumer, index)
        else:
            rec.slice(consumer, {"weight": 1}, index)
            rec.set(consumer, in_channels=len(index))
        summary.append(f"{len(index)}/{n}")
    return summary


def recalibrate_batchnorm(module: nn.Module, ctx: MethodContext, samples: int) -> int:
    """Re-estimate every batch-norm's running mean/var (cumulative average) on ``samples`` calibration inputs:
    removing input channels of a consumer conv shifts its output statistics and everything downstream.
    Returns the number of inputs used (0 when there is no batch norm or no calibration data)."""
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns or samples <= 0 or ctx.calibration is None or ctx.task is None or ctx.bundle is None:
        return 0
    batches = stack_inputs(ctx.calibration(samples), 32)
    wrapped = wrap_module(ctx, module)
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over all batches
        m.train()
    try:
        with torch.no_grad():
            for b in batches:
                wrapped(**b)
    finally:
        for m, momentum in zip(bns, momenta):
            m.momentum = momentum
            m.eval()
    return sum(next(iter(b.values())).shape[0] for b in batches)


def _structured_plan(module: nn.Module) -> tuple[str, list]:
    layers = _transformer_layers(module)
    if layers:
        return "transformer", layers
    try:
        chains = _cnn_chains(module)
    except Exception as exc:  # noqa: BLE001 - fx cannot trace every model; that is a reason, not a crash
        return f"torch.fx cannot trace this model ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})", []
    if chains:
        return "cnn", chains
    return ("no prunable structure found (known: BERT-, Llama- and Whisper/wav2vec2-like transformer layers, "
            "conv -> conv chains without residual use)"), []


def _check_structured(config: StructuredConfig, ctx: MethodContext) -> Optional[str]:
    if ctx.bundle is None:  # measuring a saved artifact: the shapes come from facts
        return None
    kind, _ = _structured_plan(ctx.bundle.module)
    return None if kind in ("transformer", "cnn") else kind


def _prune_structured(module: nn.Module, config: StructuredConfig, ctx: MethodContext) -> nn.Module:
    kind, plan = _structured_plan(module)
    if kind not in ("transformer", "cnn"):
        raise SqueezebenchError(f"prune-structured: {kind}")
    before = sum(p.numel() for p in module.parameters())
    if kind == "transformer":
        consumers = [layer["o"] for _, layer in plan] + [layer["down"] for _, layer in plan]
    else:
        consumers = [c["consumer"] for c in plan]
    acts = _input_importance(ctx, consumers)
    rec = _Recorder(module)
    with torch.no_grad():
        summary = (_prune_transformer if kind == "transformer" else _prune_cnn)(plan, config.ratio, acts, rec)
    after = sum(p.numel() for p in module.parameters())
    bn_inputs = recalibrate_batchnorm(module, ctx, config.bn_samples) if kind == "cnn" else 0
    importance = ("||W_col|| x mean|x| on calibration data" if acts else "weight norms (no calibration data)")
    ctx.facts.update({
        "in_memory_compressed": True,
        "in_memory_format": "smaller dense fp32 model (pruned shapes)",
        "storage": f"dense, {after}/{before} parameters kept",
        "structured_shapes": rec.shapes,
        "structured_attrs": rec.attrs,
        "structured_summary": summary,
        "batchnorm_recalibration_inputs": bn_inputs,
    })
    what = "per layer: " + "; ".join(summary) if kind == "transformer" else f"{len(summary)} conv channel chains"
    if bn_inputs:
        what += f"; batch-norm statistics re-estimated on {bn_inputs} calibration inputs"
    ctx.notes.append(f"prune-structured ({kind}, importance {importance}, no fine-tuning): {what}")
    log.info("prune-structured kept %d of %d parameters", after, before)
    return module


def _restore_structured(module: nn.Module, config, facts) -> nn.Module:
    for full, shape in facts["structured_shapes"].items():
        owner, _, tname = full.rpartition(".")
        m = module.get_submodule(owner)
        old = getattr(m, tname)
        new = torch.empty(shape, dtype=old.dtype)
        if isinstance(old, nn.Parameter):
            m._parameters[tname] = nn.Parameter(new, requires_grad=old.requires_grad)
        else:
            m._buffers[tname] = new
    for owner, attrs in facts["structured_attrs"].items():
        m = module.get_submodule(owner)
        for k, v in attrs.items():
            setattr(m, k, v)
    return module


register_method(StructuredConfig, "remove attention heads + FFN neurons (transformers) or conv channels (CNNs): "
                "a smaller dense model", restore=_restore_structured, check=_check_structured,
                needs_calibration=True)(_prune_structured)


# ---------------------------------------------------------------------------------------------------------------
# prune-2of4 (2:4 semi-structured)
# ---------------------------------------------------------------------------------------------------------------


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
        m = module.get_submodule(name)
        _attach_24(m, {b: torch.zeros(s, dtype=DTYPES[d]) for b, (s, d) in layout.items()}, decode_now=False)
    return module


register_method(SemiStructuredConfig, "2:4 semi-structured sparsity of Linear weights (CUDA sm80+ sparse kernels)",
                restore=_restore_24, check=_check_24, devices=("cuda",))(_prune_24)

