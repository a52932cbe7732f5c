"""prune-structured: a smaller dense model. Removes attention heads (whole KV groups under GQA) and FFN neurons
per transformer layer, or conv channels along the chains ``cnn_chains`` finds; importance is ||W_col|| x mean|x|
on calibration data (weight norms without it). Restore replays the recorded shapes on a fresh skeleton."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar, Optional

import torch
from torch import nn

from squeezebench.errors import SqueezebenchError
from squeezebench.methods.base import (FRACTION, NON_NEGATIVE, MethodConfig, MethodContext, Range, register_method,
                                       stack_inputs, wrap_module)
from squeezebench.methods.lib.cnn_chains import cnn_chains, is_depthwise

log = logging.getLogger(__name__)

CALIBRATION_SAMPLES = 16


@dataclass(frozen=True)
class StructuredConfig(MethodConfig):
    """Remove ``ratio`` of attention heads and FFN neurons per transformer layer (or of CNN channels)."""

    name: ClassVar[str] = "prune-structured"
    bounds: ClassVar[dict[str, Range]] = {"ratio": FRACTION, "bn_samples": NON_NEGATIVE}
    ratio: float = 0.3
    bn_samples: int = 256  # CNNs: calibration inputs that re-estimate batch-norm statistics after pruning; 0 = off


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
            if is_depthwise(m):
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
        chains = cnn_chains(module)
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
                needs_calibration=True, keeps_float=True)(_prune_structured)
