"""Calibration capture for methods that quantize a model block by block on real inputs (gptq, awq).

``CalibrationRun`` holds the calibration samples on the working device (KV cache off) and captures the first
repeated block's inputs; ``calibrate_blockwise`` walks the blocks in order, feeding each the previous block's
outputs; ``input_groups`` orders a block's Linears by call and groups those that read the same tensor;
``InputRecorder`` hands every input of chosen Linears to a callback. The helpers at the end turn the run's
calibration settings into samples, notes and record facts.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Optional

import torch
from torch import nn

from squeezebench.errors import SqueezebenchError
from squeezebench.methods.base import MethodContext, calibration_count, first_tensor

log = logging.getLogger(__name__)

# scope(root, names, run, prefix): quantize ``names`` (relative to ``root``, whose qualified prefix is ``prefix``);
# ``run()`` runs the calibration data through ``root``
Scope = Callable[[nn.Module, dict[str, nn.Linear], Callable[[], Any], str], None]


class _Stop(Exception):
    """Raised by the capture hook: the rest of the model need not run once the first block's inputs are seen."""


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


def with_hidden(args: tuple, kwargs: dict, hidden: torch.Tensor) -> tuple[tuple, dict]:
    """A block's call arguments with its hidden states (first positional, or ``hidden_states=``) replaced."""
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


def calibrate_blockwise(model: nn.Module, samples: list[dict], device: str, targets: dict[str, nn.Linear],
                        scope: Scope, *, feed_quantized: bool, label: str) -> int:
    """Run ``scope`` on each repeated block of ``model`` in order (``run`` feeds the block its captured inputs),
    then on the ``targets`` outside the blocks (``run`` runs the whole model). A block's inputs are the previous
    block's outputs after its ``scope`` (``feed_quantized``: GPTQ) or before it (full precision: AWQ). The model
    works on ``device`` and ends on the CPU. Returns the number of repeated blocks (0: none found)."""
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
                outputs = None if feed_quantized else run_block(block, inputs)
                scope(block, names, lambda: run_block(block, inputs), block_prefix)
                if outputs is None:
                    outputs = run_block(block, inputs)
                done.update(block_prefix + n for n in names)
                inputs = [with_hidden(a, k, out) for (a, k), out in zip(inputs, outputs)]
                log.info("%s: block %d/%d quantized", label, i + 1, len(blocks))
        rest = {n: m for n, m in targets.items() if n not in done}
        if rest:  # Linears outside the repeated blocks (heads, poolers), after every block is quantized
            scope(model, rest, cal.run_model, "")
    model.to("cpu")
    return len(found[1]) if found else 0


def samples_for(config, ctx: MethodContext) -> list[dict]:
    """The method's calibration inputs: its own ``calibration_samples``, else the run's count (one-line errors)."""
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
    if not getattr(ctx.task, "calibration_held_out", True):
        return f"{name} takes them from the data it scores: not held out"
    return f"{name or 'the task'}'s calibration split"


def work_device(ctx: MethodContext) -> str:
    """Where the calibrated pass runs: the run's CUDA device when there is one, else the CPU."""
    return ctx.device if ctx.device.startswith("cuda") and torch.cuda.is_available() else "cpu"


def calibration_facts(samples: list[dict]) -> dict[str, Any]:
    """Sample count, longest sequence and total tokens, for the record (the last dim of each sample's first tensor)."""
    lengths = [int(next(v for v in s.values() if isinstance(v, torch.Tensor)).shape[-1]) for s in samples]
    return {"calibration_samples": len(samples), "calibration_seq_len": max(lengths),
            "calibration_tokens": sum(lengths)}
