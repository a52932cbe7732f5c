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
from squeezebench.methods import weight_only
from squeezebench.methods.base import NON_NEGATIVE, POSITIVE, FRACTION, Range, calibration_count, first_tensor, MethodConfig, MethodContext, register_method
from squeezebench.methods.packed_linear import SCALE_DTYPE, WeightOnlyLinear
from squeezebench.methods.rtn import quantize_rtn, rtn_params

log = logging.getLogger(__name__)

MODEL_TYPES = "transformer decoder LMs (Llama-style); encoders too where linears exist"


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

    def __post_init__(self):
        super().__post_init__()
        check_bits_group(self.bits, self.group_size)
        if not 0 < self.damp < 1:
            raise ValueError("damp must be in (0, 1)")
        if self.block_size < 1:
            raise ValueError("block_size must be >= 1")


def check_bits_group(bits: int, group_size: int) -> None:
    if bits != 4:
        raise ValueError("only bits=4 is supported (weights are stored as packed int4)")
    if group_size < 1:
        raise ValueError("group_size must be a positive number of input channels")


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


# ---------------------------------------------------------------------------------------------------------
# Calibration plumbing shared with awq: blocks, their captured inputs, and Linears grouped by shared input


class _Stop(Exception):
    pass


def target_linears(model: nn.Module, head: bool = True) -> dict[str, nn.Linear]:
    """The Linears a calibrated method quantizes itself, by qualified name: every ``nn.Linear``, heads only
    with ``head``, never a head tied to the input embeddings (``weight_only.quantize_model`` handles it)."""
    get_in = getattr(model, "get_input_embeddings", None)
    emb = get_in() if callable(get_in) else None
    tied = getattr(emb, "weight", None)
    return {n: m for n, m in weight_only.linears_to_quantize(model, head) if tied is None or m.weight is not tied}


def find_blocks(model: nn.Module) -> tuple[str, nn.ModuleList] | None:
    """The repeated blocks (the ModuleList holding the most Linears, e.g. ``model.layers``)."""
    best, best_count = None, 0
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.ModuleList) or len(mod) == 0:
            continue
        counts = [sum(isinstance(m, nn.Linear) for m in child.modules()) for child in mod]
        if min(counts) > 0 and sum(counts) > best_count:
            best, best_count = (name, mod), sum(counts)
    return best


def _hidden(args: tuple, kwargs: dict) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def _with_hidden(args: tuple, kwargs: dict, hidden: torch.Tensor) -> tuple[tuple, dict]:
    if args:
        return (hidden, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": hidden}



class CalibrationRun:
    """Model inputs on a device, run with the KV cache off; knows how to feed blocks one by one."""

    def __init__(self, model: nn.Module, samples: list[dict], device: str):
        self.model = model
        self.device = device
        self.samples = [{k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in s.items()}
                        for s in samples]

    def __enter__(self):
        cfg = getattr(self.model, "config", None)
        self._use_cache = getattr(cfg, "use_cache", None)
        if cfg is not None and self._use_cache is not None:
            cfg.use_cache = False  # a cache would make re-running a block attend to stale keys
        return self

    def __exit__(self, *exc):
        cfg = getattr(self.model, "config", None)
        if cfg is not None and self._use_cache is not None:
            cfg.use_cache = self._use_cache

    @torch.no_grad()
    def run_model(self) -> None:
        for s in self.samples:
            self.model(**s)

    @torch.no_grad()
    def block_inputs(self, first_block: nn.Module) -> list[tuple[tuple, dict]]:
        """(args, kwargs) of the first block for every sample; the rest of the model is not run."""
        captured: list[tuple[tuple, dict]] = []

        def hook(_mod, args, kwargs):
            captured.append((args, kwargs))
            raise _Stop

        handle = first_block.register_forward_pre_hook(hook, with_kwargs=True)
        try:
            for s in self.samples:
                try:
                    self.model(**s)
                except _Stop:
                    pass
        finally:
            handle.remove()
        return captured


@torch.no_grad()
def run_block(block: nn.Module, inputs: list[tuple[tuple, dict]]) -> list[torch.Tensor]:
    return [first_tensor(block(*a, **k)) for a, k in inputs]


@torch.no_grad()
def input_groups(root: nn.Module, names: dict[str, nn.Linear], run: Callable[[], Any]) -> list[list[str]]:
    """``names`` (relative to ``root``) in call order, Linears that read the same input tensor grouped."""
    seen: list[tuple[str, torch.Tensor]] = []  # holding the tensors keeps their memory from being reused
    done: set[str] = set()

    def make_hook(name):
        def hook(_mod, args):
            if name not in done:
                done.add(name)
                seen.append((name, args[0]))
        return hook

    handles = [mod.register_forward_pre_hook(make_hook(n)) for n, mod in names.items()]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    groups: list[list[str]] = []
    last: Optional[torch.Tensor] = None
    for name, x in seen:
        if last is not None and x is last:
            groups[-1].append(name)
        else:
            groups.append([name])
            last = x
    groups.extend([[n] for n in names if n not in done])  # never called: still quantized (no data: RTN)
    return groups


class InputRecorder:
    """Forward pre-hooks on Linears: hand every input (as [tokens, features] float32) to a callback."""

    def __init__(self, modules: dict[str, nn.Module], on_input: Callable[[str, torch.Tensor], None]):
        self.handles = []
        for name, mod in modules.items():
            self.handles.append(mod.register_forward_pre_hook(
                lambda _m, args, name=name: on_input(name, args[0].detach().reshape(-1, args[0].shape[-1]).float())))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()


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


def samples_for(config, ctx: MethodContext) -> list[dict]:
    if ctx.calibration is None:
        raise SqueezebenchError(f"{config.name} needs calibration data, and this run provides none")
    n = config.calibration_samples
    samples = ctx.calibration(n) if n is not None else ctx.calibration(calibration_count(ctx))
    if not samples:
        raise SqueezebenchError(f"{config.name}: the task gave no calibration samples; raise --calibration-samples")
    return samples


def calibration_source(ctx: MethodContext) -> str:
    """Where the task's calibration inputs come from, for the record's notes."""
    name = getattr(ctx.task, "name", "")
    if name in ("causal-lm", "text-classification", "image-classification"):
        return f"{name} takes them from the data it scores: not held out"
    return f"{name or 'the task'}'s calibration split"


def work_device(ctx: MethodContext) -> str:
    return ctx.device if ctx.device.startswith("cuda") and torch.cuda.is_available() else "cpu"


def calibration_facts(samples: list[dict]) -> dict[str, Any]:
    lengths = [int(next(v for v in s.values() if isinstance(v, torch.Tensor)).shape[-1]) for s in samples]
    return {"calibration_samples": len(samples), "calibration_seq_len": max(lengths),
            "calibration_tokens": sum(lengths)}


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
    model.to(device).eval()
    found = find_blocks(model)
    done: set[str] = set()
    with CalibrationRun(model, samples, device) as cal:
        if found is not None:
            prefix, blocks = found
            inputs = cal.block_inputs(blocks[0])
            for i, block in enumerate(blocks):
                block_prefix = f"{prefix}.{i}." if prefix else f"{i}."
                names = {n[len(block_prefix):]: m for n, m in targets.items() if n.startswith(block_prefix)}
                _quantize_scope(block, names, lambda: run_block(block, inputs), config)
                done.update(block_prefix + n for n in names)
                outputs = run_block(block, inputs)
                inputs = [_with_hidden(a, k, out) for (a, k), out in zip(inputs, outputs)]
                log.info("gptq: block %d/%d quantized", i + 1, len(blocks))
        rest = {n: m for n, m in targets.items() if n not in done}
        if rest:  # Linears outside the repeated blocks (heads, poolers), after every block is quantized
            _quantize_scope(model, rest, cal.run_model, config)
    model.to("cpu")
    return {"quantized_layers": sorted(targets), "quantized_linears": len(targets),
            "sequential_blocks": len(found[1]) if found else 0}


def check_has_linears(config: MethodConfig, ctx: MethodContext) -> Optional[str]:
    if ctx.bundle is None:  # measure phase: the structure comes from restore
        return None
    if not weight_only.has_linear(ctx.bundle.module):
        return "the model has no nn.Linear layers to quantize"
    return None


def quantize_rest(module: nn.Module, config, empty: bool = False) -> dict[str, Any]:
    """Input embeddings, a tied head and any Linear left over, round-to-nearest as int4-weight-only does
    (``empty``: only the structure, for restore). Returns int4-weight-only's facts (format, counts)."""
    return weight_only.quantize_model(module, config.bits, config.group_size, False, config.embeddings,
                                      config.head, empty=empty)


def finish_facts(module: nn.Module, config, facts: dict[str, Any], samples: list[dict]) -> dict[str, Any]:
    """Quantize what the calibrated pass left (embeddings, tied head) and merge every fact for the record."""
    rest = quantize_rest(module, config)
    rtn = rest.pop("quantized_linear_layers")
    return {**rest, **facts, **calibration_facts(samples), "rtn_linear_layers": rtn,
            "quantized_linear_layers": facts["quantized_linears"] + rtn}


def restore_gptq(module: nn.Module, config: GPTQConfig, facts: dict) -> nn.Module:
    module = weight_only.restore_as(module, config.bits, config.group_size, facts) or module
    quantize_rest(module, config, empty=True)
    return module


@register_method(GPTQConfig, "GPTQ 4-bit weight-only quantization (Hessian-based error compensation, calibrated)",
                 restore=restore_gptq, check=check_has_linears, devices=("cpu", "cuda"), model_types=MODEL_TYPES,
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
