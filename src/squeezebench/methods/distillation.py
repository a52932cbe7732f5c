"""distill: knowledge distillation that fine-tunes a compressed model (student) towards its original (teacher).

It follows a method that changed the weights, e.g. ``prune-structured:ratio=0.3+distill+onnx-int8-dynamic``: the
teacher is the model as loaded, before the chain. Training data are unlabelled task inputs from the calibration
source (examples outside the evaluated ones; for sentence-embedding the classifier's train split, then the rest).
Loss: the task output (1 − cosine for embeddings, temperature-scaled KL for logits) plus the MSE of every block
output of the model's layer lists (``encoder.layer.N``, ``model.layers.N``, CNN stages) that kept its shape,
normalised by the teacher's variance. Dropout stays off (eval mode); batch-norm statistics stay frozen.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from squeezebench.errors import SqueezebenchError
from squeezebench.methods.base import (NON_NEGATIVE, POSITIVE, FRACTION, Range, MethodConfig, MethodContext, first_tensor, register_method, stack_inputs,
                                       wrap_module)
from squeezebench.methods.lib.compact import PRUNABLE

log = logging.getLogger(__name__)

CACHE_BYTES = 1 << 30  # teacher outputs kept in memory up to this size


@dataclass(frozen=True)
class DistillConfig(MethodConfig):
    """``steps`` AdamW steps of ``batch_size`` inputs drawn from ``samples`` distinct training inputs."""

    name: ClassVar[str] = "distill"
    bounds: ClassVar[dict[str, Range]] = {"steps": POSITIVE, "batch_size": POSITIVE, "samples": POSITIVE,
                                          "lr": Range(lo=0, lo_open=True), "temperature": Range(lo=0, lo_open=True),
                                          "hidden_weight": NON_NEGATIVE}
    steps: int = 300
    batch_size: int = 16
    lr: float = 5e-5
    samples: int = 1024
    hidden_weight: float = 1.0
    temperature: float = 2.0
    seed: int = 0


def trainable_weight_count(module: nn.Module) -> int:
    """Linear/Conv layers whose weight is a floating-point nn.Parameter (what distillation can train)."""
    return sum(1 for m in module.modules() if isinstance(m, PRUNABLE)
               and isinstance(m._parameters.get("weight"), nn.Parameter) and m.weight.is_floating_point())


def block_names(teacher: nn.Module, student: nn.Module) -> list[str]:
    """Elements of the teacher's nn.ModuleLists that hold parameters and also exist in the student."""
    student_names = dict(student.named_modules())
    names = []
    for name, m in teacher.named_modules():
        if isinstance(m, nn.ModuleList):
            for i, block in enumerate(m):
                full = f"{name}.{i}" if name else str(i)
                if any(True for _ in block.parameters()) and full in student_names:
                    names.append(full)
    return names


class _Taps:
    """Forward hooks that keep the first tensor output of named blocks."""

    def __init__(self, root: nn.Module, names: list[str]):
        self.outputs: dict[str, torch.Tensor] = {}
        mods = dict(root.named_modules())
        self.handles = [mods[n].register_forward_hook(self._hook(n)) for n in names]

    def _hook(self, name):
        def hook(mod, args, out):
            t = first_tensor(out)
            if t is not None and t.is_floating_point():
                self.outputs[name] = t
        return hook

    def remove(self):
        for h in self.handles:
            h.remove()


def output_loss(student: torch.Tensor, teacher: torch.Tensor, kind: str, temperature: float) -> torch.Tensor:
    """1 − cosine for embeddings; KL(teacher ‖ student) of temperature-softened logits (× T²) otherwise."""
    s, t = student.float(), teacher.float()
    if kind == "embedding":
        return (1 - nn.functional.cosine_similarity(s.flatten(1), t.flatten(1), dim=1)).mean()
    s = s.reshape(-1, s.shape[-1]) / temperature
    t = t.reshape(-1, t.shape[-1]) / temperature
    return nn.functional.kl_div(s.log_softmax(-1), t.log_softmax(-1), log_target=True,
                                reduction="batchmean") * temperature ** 2


def _train(student, teacher, t_taps, s_taps, batches, params, kind: str, config: DistillConfig):
    """The training loop; returns (first loss, last loss, names of matched blocks, teacher outputs cached?)."""

    def teacher_targets(batch):
        with torch.no_grad():
            out = teacher(**batch)
        return out.detach(), {n: t.detach() for n, t in t_taps.outputs.items()}

    # the teacher's outputs are kept per batch when they fit in CACHE_BYTES, else recomputed at every step
    probe = teacher_targets(batches[0])
    per_batch = probe[0].numel() * probe[0].element_size() + sum(t.numel() * t.element_size()
                                                               for t in probe[1].values())
    cached = per_batch * len(batches) <= CACHE_BYTES
    targets = [probe] + [teacher_targets(b) for b in batches[1:]] if cached else None
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    warmup = max(1, config.steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(  # linear warm-up, cosine decay
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * s / config.steps)))
    gen = torch.Generator().manual_seed(config.seed)
    order: list[int] = []
    first = last = None
    used_blocks: set[str] = set()
    with torch.enable_grad():
        for step in range(config.steps):
            if not order:
                order = torch.randperm(len(batches), generator=gen).tolist()
            i = order.pop()
            out = student(**batches[i])
            t_out, t_hidden = targets[i] if cached else teacher_targets(batches[i])
            loss = output_loss(out, t_out, kind, config.temperature)
            hidden = []
            for n, t in t_hidden.items():
                s = s_taps.outputs.get(n)
                if s is not None and s.shape == t.shape:
                    hidden.append(nn.functional.mse_loss(s.float(), t.float()) / t.float().var().clamp(min=1e-8))
                    used_blocks.add(n)
            if hidden:
                loss = loss + config.hidden_weight * torch.stack(hidden).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            value = float(loss.detach())
            if not math.isfinite(value):
                raise SqueezebenchError(f"distill: the loss became {value} at step {step}; lower lr")
            first = value if first is None else first
            last = value
            if step % 50 == 0:
                log.info("distill step %d/%d loss %.5f", step, config.steps, value)
    return first, last, used_blocks, cached


def _distill(module: nn.Module, config: DistillConfig, ctx: MethodContext) -> nn.Module:
    teacher_module = ctx.original
    if teacher_module is None:
        raise SqueezebenchError("distill needs the original model as teacher; put it after a method in a chain, "
                                "e.g. prune-structured:ratio=0.3+distill")
    if ctx.calibration is None or ctx.task is None or ctx.bundle is None:
        raise SqueezebenchError("distill needs training inputs from the task's data")
    if trainable_weight_count(module) < trainable_weight_count(teacher_module):
        raise SqueezebenchError("distill can only train float weights; put it before quantization, clustering or "
                                "unstructured pruning in the chain (e.g. prune-structured+distill+int8-dynamic)")
    inputs = ctx.calibration(config.samples)
    if not inputs:
        raise SqueezebenchError("distill found no training inputs in the dataset")
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    batches = [{k: v.to(device) for k, v in b.items()} for b in stack_inputs(inputs, config.batch_size)]
    kind = getattr(ctx.task, "output_kind", "logits")
    student, teacher = wrap_module(ctx, module), wrap_module(ctx, teacher_module)
    names = block_names(teacher_module, module) if config.hidden_weight > 0 else []
    t_taps, s_taps = _Taps(teacher_module, names), _Taps(module, names)
    params = [p for p in module.parameters() if p.is_floating_point()]
    t0 = time.perf_counter()
    try:
        first, last, used_blocks, cached = _train(student, teacher, t_taps, s_taps, batches, params, kind, config)
    finally:
        s_taps.remove()
        t_taps.remove()
        for p in params:
            p.requires_grad_(False)
            p.grad = None
    seconds = time.perf_counter() - t0
    n_inputs = sum(next(iter(b.values())).shape[0] for b in batches)
    ctx.facts.update({"distill": {"loss_first": first, "loss_last": last, "steps": config.steps,
                                  "inputs": n_inputs, "blocks_matched": len(used_blocks), "train_s": seconds,
                                  "teacher_outputs_cached": cached}})
    ctx.notes.append(f"distill: {config.steps} AdamW steps (batch {config.batch_size}, lr {config.lr}) on {n_inputs} "
                     f"unlabelled inputs outside the evaluated examples; loss {first:.4g} -> {last:.4g}; "
                     f"{len(used_blocks)} block outputs matched; {seconds:.0f} s")
    return module


def _restore(module: nn.Module, config: DistillConfig, facts) -> nn.Module:
    return module  # new values, same structure: the saved weights load into the earlier links' skeleton


register_method(DistillConfig, "knowledge distillation: fine-tune the compressed model to reproduce the original's "
                "outputs and block outputs (after a method in a chain)", restore=_restore, needs_calibration=True,
                needs_original=True)(_distill)
