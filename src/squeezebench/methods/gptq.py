"""gptq: 4-bit weight-only quantization with GPTQ (Frantar et al. 2022, arXiv:2210.17323).

Per Linear layer, GPTQ accumulates H = 2 X Xᵀ / n from the layer's real inputs, dampens and inverts it
(Cholesky), then quantizes the weight column by column, spreading each column's rounding error over the
columns not yet quantized (lazy batch updates of ``block_size`` columns). The model is processed block by
block (decoder layers in order) so later layers are calibrated on the outputs of already-quantized earlier
ones; inside a block, Linears are processed in the order they run ("true sequential"), Linears that read the
same input (q/k/v, gate/up) together. The result is stored exactly like ``int4-weight-only`` (packed int4
codes, fp16 scales and zero points, contiguous groups) and reloads with the same restore.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Optional

import torch
from torch import nn

from squeezebench.errors import SqueezebenchError
from squeezebench.methods.base import POSITIVE, MethodConfig, MethodContext, Range, register_method
from squeezebench.methods.lib.calibrated_weight_only import (MODEL_TYPES, finish_facts, restore_calibrated,
                                                             target_linears)
from squeezebench.methods.lib.calibration_capture import (InputRecorder, calibrate_blockwise, calibration_source,
                                                          input_groups, samples_for, work_device)
from squeezebench.methods.lib.packed_linear import SCALE_DTYPE, WeightOnlyLinear
from squeezebench.methods.lib.rtn import quantize_rtn, rtn_params
from squeezebench.methods.weight_only import check_has_linears

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GPTQConfig(MethodConfig):
    """bits/group_size: as int4-weight-only. damp: fraction of mean(diag H) added to the diagonal.
    act_order: quantize columns in decreasing diag(H) order (groups then use statically computed
    scales so they stay contiguous). block_size: columns per lazy batch update.
    calibration_samples: None means the run's --calibration-samples.
    embeddings/head: as int4-weight-only, for the same coverage: the input embedding table and a head tied to
    it are quantized round-to-nearest (GPTQ needs a Linear's inputs); an untied head goes through GPTQ."""

    name: ClassVar[str] = "gptq"
    bounds: ClassVar[dict[str, Range]] = {"bits": Range(lo=4, hi=4), "group_size": POSITIVE,
                                          "damp": Range(lo=0, hi=1, lo_open=True, hi_open=True),
                                          "block_size": POSITIVE, "calibration_samples": POSITIVE}
    bits: int = 4
    group_size: int = 128
    damp: float = 0.01
    act_order: bool = False
    block_size: int = 128
    true_sequential: bool = True
    calibration_samples: Optional[int] = None
    embeddings: bool = True
    head: bool = True


# ---------------------------------------------------------------------------------------------------------
# The GPTQ solver for one weight matrix


def _group_grid(weight: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point (each [rows, 1], float32) that round-to-nearest gives this slice as one group,
    rounded as they will be stored (fp16 scales), so the solver rounds to exactly the grid that is saved."""
    scales, zeros = rtn_params(weight, bits, weight.shape[1])
    return scales.to(SCALE_DTYPE).float().reshape(-1, 1), zeros.float().reshape(-1, 1)


def _round_to_grid(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor,
                   maxq: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes and their dequantized values for a column (scale/zero: [rows])."""
    codes = torch.clamp(torch.round(w / scale) + zero, 0, maxq)
    return codes, (codes - zero) * scale


def gptq_quantize(weight: torch.Tensor, hessian: torch.Tensor, bits: int = 4, group_size: int = 128,
                  damp: float = 0.01, block_size: int = 128, act_order: bool = False
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Quantize ``weight`` [rows, cols] given H [cols, cols]; returns (codes, scales, zeros) in the
    layout of ``rtn.quantize_rtn`` (contiguous groups of ``group_size`` input channels)."""
    W = weight.detach().clone().float()
    H = hessian.detach().clone().double()
    rows, cols = W.shape
    maxq = 2 ** bits - 1
    gs = min(group_size, cols)
    n_groups = math.ceil(cols / gs)
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    scales = torch.zeros(rows, n_groups, device=W.device)
    zeros = torch.zeros(rows, n_groups, device=W.device)
    if act_order:  # static groups: the grid of every group comes from the unmodified weights
        for g in range(n_groups):
            scales[:, g:g + 1], zeros[:, g:g + 1] = _group_grid(W[:, g * gs:(g + 1) * gs], bits)
        perm = torch.argsort(torch.diag(H), descending=True)
        W, H = W[:, perm], H[perm][:, perm]
    else:
        perm = torch.arange(cols)
    perm = perm.tolist()
    hinv = _inverse_cholesky(H, damp).float()
    WT = W.T.contiguous()  # columns as contiguous rows: the inner loop updates whole rows
    codes = torch.zeros(cols, rows, device=W.device)
    for i1 in range(0, cols, block_size):
        i2 = min(i1 + block_size, cols)
        W1 = WT[i1:i2].clone()
        err1 = torch.zeros_like(W1)
        hinv1 = hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = perm[i1 + i]
            g = col // gs
            if not act_order and col % gs == 0:  # group start: its grid from the error-updated weights
                n = min(gs, cols - col)
                group = torch.cat([W1[i:i + n], WT[i2:i1 + i + n]], 0)
                scales[:, g:g + 1], zeros[:, g:g + 1] = _group_grid(group.T, bits)
            w = W1[i]
            q, dq = _round_to_grid(w, scales[:, g], zeros[:, g], maxq)
            codes[col] = q
            err = (w - dq) / hinv1[i, i]
            W1[i + 1:].addr_(hinv1[i, i + 1:], err, alpha=-1)
            err1[i] = err
        WT[i2:].addmm_(hinv[i1:i2, i2:].T, err1, alpha=-1)
    return codes.T.to(torch.uint8), scales, zeros


def _inverse_cholesky(H: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor of the inverse of the dampened H, as GPTQ uses it."""
    mean_diag = torch.mean(torch.diag(H))
    for attempt in range(6):
        Hd = H.clone()
        Hd.diagonal().add_(damp * (10 ** attempt) * mean_diag)
        try:
            L = torch.linalg.cholesky(Hd)
            return torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True)
        except RuntimeError:  # torch.linalg.LinAlgError subclasses RuntimeError
            log.warning("GPTQ: Hessian not positive definite with damp=%g; retrying with more damping",
                        damp * 10 ** attempt)
    raise SqueezebenchError("GPTQ: the layer Hessian stayed singular after damping; check the calibration data")


class Hessians:
    """Running H = 2 X Xᵀ / n per named input."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.tokens: dict[str, int] = {}

    def add(self, name: str, x: torch.Tensor) -> None:
        if name not in self.sums:
            self.sums[name] = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64, device=x.device)
            self.tokens[name] = 0
        self.sums[name] += (x.T @ x).double()
        self.tokens[name] += x.shape[0]

    def get(self, name: str) -> Optional[torch.Tensor]:
        if name not in self.sums:
            return None
        return 2 * self.sums[name] / self.tokens[name]


# ---------------------------------------------------------------------------------------------------------
# The method


def _quantize_group(root: nn.Module, names: list[str], hessian: Optional[torch.Tensor], config: GPTQConfig) -> None:
    """GPTQ on Linears that share an input (their rows stacked: same H), then swap in int4 modules."""
    mods = [root.get_submodule(n) for n in names]
    W = torch.cat([m.weight.detach().float() for m in mods], 0)
    if hessian is None:
        codes, scales, zeros = quantize_rtn(W, config.bits, config.group_size)
        scales = scales.to(SCALE_DTYPE)
        log.warning("GPTQ: %s never ran on calibration data; quantized to nearest instead", ", ".join(names))
    else:
        codes, scales, zeros = gptq_quantize(W, hessian.to(W.device), config.bits, config.group_size,
                                             config.damp, config.block_size, config.act_order)
    start = 0
    for name, mod in zip(names, mods):
        rows = mod.out_features
        new = WeightOnlyLinear.from_quantized(
            codes[start:start + rows], scales[start:start + rows], zeros[start:start + rows], mod.bias,
            config.bits, config.group_size, mod.in_features, mod.out_features)
        root.set_submodule(name, new.to(mod.weight.device))
        start += rows


def _quantize_scope(root: nn.Module, names: dict[str, nn.Linear], run: Callable[[], Any], config: GPTQConfig) -> None:
    """Quantize ``names`` inside ``root``; ``run`` runs the calibration data through ``root``."""
    groups = input_groups(root, names, run)
    stages = groups if config.true_sequential else [sum(groups, [])]
    for stage in stages:
        stage_groups = [g for g in groups if g[0] in stage]
        hessians = Hessians()
        with InputRecorder({g[0]: root.get_submodule(g[0]) for g in stage_groups}, hessians.add):
            run()
        for g in stage_groups:
            _quantize_group(root, g, hessians.get(g[0]), config)


def gptq_model(model: nn.Module, samples: list[dict], config: GPTQConfig, device: str) -> dict[str, Any]:
    """Quantize every target Linear of ``model`` in place with GPTQ; returns facts."""
    targets = target_linears(model, config.head)
    if not targets:
        raise SqueezebenchError("gptq: the model has no Linear layers to quantize")
    blocks = calibrate_blockwise(model, samples, device, targets,
                                 lambda root, names, run, prefix: _quantize_scope(root, names, run, config),
                                 feed_quantized=True, label="gptq")
    return {"quantized_layers": sorted(targets), "quantized_linears": len(targets), "sequential_blocks": blocks}


@register_method(GPTQConfig, "GPTQ 4-bit weight-only quantization (Hessian-based error compensation, calibrated)",
                 restore=restore_calibrated, check=check_has_linears, devices=("cpu", "cuda"), model_types=MODEL_TYPES,
                 needs_calibration=True)
def gptq(module: nn.Module, config: GPTQConfig, ctx: MethodContext) -> nn.Module:
    samples = samples_for(config, ctx)
    facts = gptq_model(module, samples, config, work_device(ctx))
    ctx.facts.update(finish_facts(module, config, facts, samples))
    cal = ctx.facts
    ctx.notes.append(f"gptq: calibrated on {cal['calibration_samples']} samples x {cal['calibration_seq_len']} "
                     f"tokens ({calibration_source(ctx)}); damp={config.damp}, block={config.block_size}, "
                     f"act_order={config.act_order}, true_sequential={config.true_sequential}")
    return module
