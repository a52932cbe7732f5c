"""awq: activation-aware 4-bit weight-only quantization (Lin et al. 2023, arXiv:2306.00978).

For each group of Linears that read the same input (q/k/v, gate/up, ...), AWQ measures the mean |x| of
every input channel on calibration data, grid-searches alpha in s = mean|x|^alpha (alpha = 0, 1/grid, ...),
scales the weight columns by s before round-to-nearest int4 quantization and divides the input by s,
keeping the alpha whose quantized group output is closest (MSE) to the full-precision output. The 1/s is
folded into the weights of what produces the input when that is exact: the RMSNorm/LayerNorm before q/k/v
and gate/up in pre-norm (Llama-style) blocks, up_proj before down_proj, v_proj before o_proj when their
shapes match. Otherwise the module keeps an explicit per-channel ``input_scale`` buffer (``InputScaledLinear``).
Weights are stored exactly like ``int4-weight-only`` (packed int4, fp16 scales/zeros).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import torch
from torch import nn

from squeezebench.errors import SqueezebenchError
from squeezebench.methods.base import POSITIVE, MethodConfig, MethodContext, Range, register_method
from squeezebench.methods.lib.calibrated_weight_only import (MODEL_TYPES, finish_facts, restore_calibrated,
                                                             target_linears)
from squeezebench.methods.lib.calibration_capture import (InputRecorder, calibrate_blockwise, calibration_source,
                                                          input_groups, samples_for, work_device)
from squeezebench.methods.lib.packed_linear import SCALE_DTYPE
from squeezebench.methods.lib.rtn import rtn_params
from squeezebench.methods.weight_only import check_has_linears, in_features_of, quantized_linear

log = logging.getLogger(__name__)

MAX_SEARCH_TOKENS = 2048  # calibration tokens per group used for the alpha search loss (evenly spaced)
NORM_BEFORE = {"input_layernorm": ("q_proj", "k_proj", "v_proj"),
               "post_attention_layernorm": ("gate_proj", "up_proj")}
LINEAR_BEFORE = {"down_proj": "up_proj", "o_proj": "v_proj"}


@dataclass(frozen=True)
class AWQConfig(MethodConfig):
    """bits/group_size: as int4-weight-only. grid: number of alpha values tried in [0, 1).
    calibration_samples: None means the run's --calibration-samples.
    embeddings/head: as int4-weight-only, for the same coverage: the input embedding table and a head tied to
    it are quantized round-to-nearest without scaling; an untied head gets AWQ scaling (explicit input scale)."""

    name: ClassVar[str] = "awq"
    bounds: ClassVar[dict[str, Range]] = {"bits": Range(lo=4, hi=4), "group_size": POSITIVE, "grid": POSITIVE,
                                          "calibration_samples": POSITIVE}
    bits: int = 4
    group_size: int = 128
    grid: int = 20
    calibration_samples: Optional[int] = None
    embeddings: bool = True
    head: bool = True


class InputScaledLinear(nn.Module):
    """A quantized Linear whose input is multiplied by a per-channel ``input_scale`` (AWQ's 1/s) first."""

    def __init__(self, linear: nn.Module, in_features: int):
        super().__init__()
        self.linear = linear
        self.register_buffer("input_scale", torch.ones(in_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x * self.input_scale.to(x.dtype))


def rtn_dequantized(weight: torch.Tensor, bits: int, group_size: int) -> torch.Tensor:
    """Round-to-nearest quantized-dequantized weight: the grid of ``rtn.quantize_rtn`` (groups of
    ``group_size`` columns, the last one padded with its last column), with fp16-rounded scales as stored."""
    rows, cols = weight.shape
    g = cols if group_size <= 0 or group_size >= cols else group_size
    n_groups = -(-cols // g)
    pad = n_groups * g - cols
    w = torch.cat([weight, weight[:, -1:].expand(rows, pad)], 1) if pad else weight
    w = w.reshape(rows, n_groups, g)
    scales, zeros = rtn_params(w.reshape(rows, -1), bits, g)
    scales = scales.to(SCALE_DTYPE).float().unsqueeze(2)
    zeros = zeros.unsqueeze(2)
    codes = torch.clamp(torch.round(w / scales) + zeros, 0, 2 ** bits - 1)
    return ((codes - zeros) * scales).reshape(rows, -1)[:, :cols]


@torch.no_grad()
def search_scale(weight: torch.Tensor, x: torch.Tensor, bits: int, group_size: int, grid: int
                 ) -> tuple[torch.Tensor, float, dict[str, float]]:
    """Best per-input-channel scale s for ``weight`` [rows, in] given inputs ``x`` [tokens, in].
    Returns (s, alpha, {"rtn_mse":..., "awq_mse":...})."""
    weight = weight.float()
    x = x.float()
    if x.shape[0] > MAX_SEARCH_TOKENS:
        x = x[torch.linspace(0, x.shape[0] - 1, MAX_SEARCH_TOKENS).long()]
    x_mean = x.abs().mean(0)
    ref = x @ weight.T
    best = (float("inf"), None, 0.0)
    losses = {}
    for k in range(grid):
        alpha = k / grid
        s = x_mean.pow(alpha).clamp(min=1e-4)
        s = s / (s.max() * s.min()).sqrt()
        q = rtn_dequantized(weight * s, bits, group_size) / s
        loss = float(((x @ q.T - ref) ** 2).mean())
        losses[alpha] = loss
        if loss < best[0]:
            best = (loss, s, alpha)
    return best[1], best[2], {"rtn_mse": losses[0.0], "awq_mse": best[0]}


def _foldable_norm(norm: nn.Module, x_in: torch.Tensor, s: torch.Tensor) -> bool:
    """True when dividing the norm's weight (and bias) by s divides its output by s exactly."""
    weight = getattr(norm, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.shape != s.shape:
        return False
    bias = getattr(norm, "bias", None)
    with torch.no_grad():
        before = norm(x_in)
        old_w, old_b = weight.detach().clone(), bias.detach().clone() if isinstance(bias, torch.Tensor) else None
        weight.div_(s.to(weight.dtype))
        if old_b is not None:
            bias.div_(s.to(bias.dtype))
        after = norm(x_in)
        weight.copy_(old_w)
        if old_b is not None:
            bias.copy_(old_b)
    return torch.allclose(after * s, before, rtol=1e-4, atol=1e-5 * float(before.abs().max()))


def _fold_into_norm(norm: nn.Module, s: torch.Tensor) -> None:
    with torch.no_grad():
        norm.weight.div_(s.to(norm.weight.dtype))
        if isinstance(getattr(norm, "bias", None), torch.Tensor):
            norm.bias.div_(s.to(norm.bias.dtype))


def _fold_into_linear(prev: nn.Linear, s: torch.Tensor) -> None:
    with torch.no_grad():
        prev.weight.div_(s.to(prev.weight.dtype).unsqueeze(1))
        if prev.bias is not None:
            prev.bias.div_(s.to(prev.bias.dtype))


def _sibling(name: str, leaf: str) -> str:
    head, _, _ = name.rpartition(".")
    return f"{head}.{leaf}" if head else leaf


@torch.no_grad()
def _awq_scope(root: nn.Module, names: dict[str, nn.Linear], run, config: AWQConfig, stats: dict) -> list[str]:
    """Search, fold and quantize the Linears ``names`` of ``root``; returns names that got an input scale."""
    groups = input_groups(root, names, run)
    inputs: dict[str, list[torch.Tensor]] = {g[0]: [] for g in groups}
    norm_inputs: dict[str, torch.Tensor] = {}
    norm_outputs: dict[str, torch.Tensor] = {}  # first sample's tensors, compared by identity

    def record(name, x):
        if name in inputs:
            inputs[name].append(x)

    norms = {n: m for n, m in root.named_modules() if n.rpartition(".")[2] in NORM_BEFORE}
    handles = []
    for n, m in norms.items():
        def hook(_m, args, out, n=n):
            if n not in norm_inputs:
                norm_inputs[n] = args[0].detach()
                norm_outputs[n] = out
        handles.append(m.register_forward_hook(hook))
    ptrs: dict[str, torch.Tensor] = {}
    for g in groups:
        def first_ptr(_m, args, g0=g[0]):
            ptrs.setdefault(g0, args[0])
        handles.append(root.get_submodule(g[0]).register_forward_pre_hook(first_ptr))
    try:
        with InputRecorder({g[0]: root.get_submodule(g[0]) for g in groups}, record):
            run()
    finally:
        for h in handles:
            h.remove()

    plans = []  # (group, s or None, fold target)
    for g in groups:
        if not inputs[g[0]]:
            plans.append((g, None, None))
            continue
        x = torch.cat(inputs[g[0]], 0)
        W = torch.cat([root.get_submodule(n).weight.detach().float() for n in g], 0).to(x.device)
        s, alpha, losses = search_scale(W, x, config.bits, config.group_size, config.grid)
        stats["rtn_mse"] += losses["rtn_mse"]
        stats["awq_mse"] += losses["awq_mse"]
        stats["groups"] += 1
        if alpha == 0.0:
            plans.append((g, None, None))
            continue
        target = _fold_target(root, g, s, norms, norm_inputs, norm_outputs, ptrs)
        plans.append((g, s, target))
    scaled: list[str] = []
    for g, s, target in plans:  # fold every scale first (fp), then quantize: folds touch earlier Linears
        if s is None:
            continue
        if isinstance(target, str) and target in norms:
            _fold_into_norm(norms[target], s)
        elif isinstance(target, str):
            _fold_into_linear(root.get_submodule(target), s)
        for n in g:
            lin = root.get_submodule(n)
            lin.weight.mul_(s.to(lin.weight.dtype))
        if target is None:
            scaled.extend(g)
    for g, s, target in plans:
        for n in g:
            lin = root.get_submodule(n)
            new = quantized_linear(lin, config.bits, config.group_size)
            if s is not None and target is None:
                wrapped = InputScaledLinear(new, lin.in_features)
                wrapped.input_scale.copy_(1.0 / s)
                new = wrapped
            root.set_submodule(n, new.to(lin.weight.device))
    stats["folded_groups"] += sum(1 for _, s, t in plans if s is not None and t is not None)
    stats["explicit_scale_groups"] += sum(1 for _, s, t in plans if s is not None and t is None)
    return scaled


def _fold_target(root, group, s, norms, norm_inputs, norm_outputs, ptrs) -> Optional[str]:
    """Where 1/s can be folded exactly for this group: a norm name, a Linear name, or None."""
    leaves = {n.rpartition(".")[2] for n in group}
    for norm_name, consumers in NORM_BEFORE.items():
        for n in norms:
            if n.rpartition(".")[2] != norm_name or norm_outputs.get(n) is not ptrs.get(group[0]):
                continue
            if leaves <= set(consumers) and n in norm_inputs and _foldable_norm(norms[n], norm_inputs[n], s):
                return n
    if len(group) == 1:
        leaf = group[0].rpartition(".")[2]
        prev_name = _sibling(group[0], LINEAR_BEFORE.get(leaf, ""))
        if leaf in LINEAR_BEFORE:
            try:
                prev = root.get_submodule(prev_name)
            except AttributeError:
                return None
            if isinstance(prev, nn.Linear) and prev.out_features == s.numel():
                return prev_name
    return None


def awq_model(model: nn.Module, samples: list[dict], config: AWQConfig, device: str) -> dict[str, Any]:
    targets = target_linears(model, config.head)
    if not targets:
        raise SqueezebenchError("awq: the model has no Linear layers to quantize")
    stats = {"rtn_mse": 0.0, "awq_mse": 0.0, "groups": 0, "folded_groups": 0, "explicit_scale_groups": 0}
    scaled: list[str] = []

    def scope(root, names, run, prefix):
        scaled.extend(prefix + n for n in _awq_scope(root, names, run, config, stats))

    # feed_quantized=False: the next block sees the full-precision outputs (as in AWQ)
    calibrate_blockwise(model, samples, device, targets, scope, feed_quantized=False, label="awq")
    return {"quantized_layers": sorted(targets), "quantized_linears": len(targets),
            "awq_input_scaled": sorted(scaled), "awq_search": stats}


def restore_awq(module: nn.Module, config: AWQConfig, facts: dict) -> nn.Module:
    module = restore_calibrated(module, config, facts)
    for name in facts.get("awq_input_scaled", []):
        inner = module.get_submodule(name)
        module.set_submodule(name, InputScaledLinear(inner, in_features_of(inner)))
    return module


@register_method(AWQConfig, "AWQ 4-bit weight-only quantization (activation-aware channel scaling, calibrated)",
                 restore=restore_awq, check=check_has_linears, devices=("cpu", "cuda"), model_types=MODEL_TYPES,
                 needs_calibration=True)
def awq(module: nn.Module, config: AWQConfig, ctx: MethodContext) -> nn.Module:
    samples = samples_for(config, ctx)
    facts = awq_model(module, samples, config, work_device(ctx))
    ctx.facts.update(finish_facts(module, config, facts, samples))
    cal, s = ctx.facts, facts["awq_search"]
    ctx.notes.append(f"awq: calibrated on {cal['calibration_samples']} samples x {cal['calibration_seq_len']} tokens "
                     f"({calibration_source(ctx)}); grid={config.grid}; {s['folded_groups']} scale groups folded "
                     f"into the previous norm/Linear, {s['explicit_scale_groups']} kept as an input_scale buffer; "
                     f"summed search MSE rtn={s['rtn_mse']:.4g} awq={s['awq_mse']:.4g}")
    return module
