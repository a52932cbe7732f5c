"""Knowledge-distillation training loop shared by ``distill`` (recover a compressed model towards its original) and
``student`` (train a smaller model built from the teacher's layers): the output loss (1 − cosine for embeddings,
temperature-scaled KL for logits), hidden-state MSE on pairs of (teacher block, student block) whose outputs have the
same shape, AdamW with linear warm-up and cosine decay, seeded batch order, an optional time budget, a progress line
with loss and ETA, a short loss curve for the record, and a checkpoint to resume from (a killed run continues where
its last checkpoint left it; a run stopped by its time budget continues when it is given a larger one)."""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional

import torch
from torch import nn

from squeezebench.errors import SqueezebenchError
from squeezebench.methods.base import NON_NEGATIVE, POSITIVE, MethodConfig, Range, first_tensor

log = logging.getLogger(__name__)

CACHE_BYTES = 1 << 30  # teacher outputs kept in memory up to this size
CURVE_POINTS = 20  # the loss curve kept in the record: at most this many (step, mean loss) points
PROGRESS_EVERY_S = 10.0  # a progress line at least this often (and every 50 steps)
CHECKPOINT_EVERY_S = 120.0  # the training state saved at least this often (and when training ends)
CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class KDConfig(MethodConfig):
    """The training parameters of every distillation method: ``steps`` AdamW steps of ``batch_size`` inputs drawn
    from ``samples`` distinct training inputs (subclasses name the method and add their own)."""

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

    def settings(self, label: str, **extra: Any) -> "KDSettings":
        return KDSettings(steps=self.steps, lr=self.lr, temperature=self.temperature,
                          hidden_weight=self.hidden_weight, seed=self.seed, label=label, **extra)


@dataclass
class KDSettings:
    steps: int
    lr: float
    temperature: float
    hidden_weight: float
    seed: int
    budget_s: Optional[float] = None  # stop after this many seconds of training (None: run every step)
    label: str = "distill"  # the method name in progress lines and errors
    cache_bytes: int = CACHE_BYTES  # teacher outputs kept per batch up to this size, else recomputed every step
    checkpoint: Optional["Checkpoint"] = None  # where the training state is saved and resumed from


@dataclass(frozen=True)
class Checkpoint:
    """A training state file: the trained parameters, AdamW and scheduler states, the batch order and random
    states, the losses so far and the training seconds spent. ``key`` says what it is the state of (the method's
    parameters but its time budget, the teacher's weights, the training inputs): a file with another key is not
    resumed from (and is replaced)."""

    path: Path
    key: str
    every_s: Optional[float] = None  # None: CHECKPOINT_EVERY_S


@dataclass
class KDResult:
    first: float
    last: float
    steps_done: int
    curve: list[list[float]]  # [step, mean loss of the steps up to it], at most CURVE_POINTS points
    matched: set[str] = field(default_factory=set)  # student blocks whose output was matched to the teacher's
    cached: bool = True  # the teacher's outputs were kept per batch (else recomputed at every step)
    stopped_by_budget: bool = False
    seconds: float = 0.0  # training seconds, those of the runs it resumed from included
    resumed_from: int = 0  # the step the training resumed from (0: it started from the initialisation)


class Taps:
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


def downsample_curve(losses: list[float], points: int = CURVE_POINTS) -> list[list[float]]:
    """[last step of each segment (1-based), mean loss of the segment] for at most ``points`` equal segments."""
    if not losses:
        return []
    n = min(points, len(losses))
    bounds = [round(i * len(losses) / n) for i in range(n + 1)]
    return [[bounds[i + 1], sum(losses[bounds[i]:bounds[i + 1]]) / (bounds[i + 1] - bounds[i])] for i in range(n)]


def train_kd(student: nn.Module, teacher: nn.Module, batches: list[dict[str, Any]], params: list[nn.Parameter],
             kind: str, settings: KDSettings, pairs: list[tuple[str, str]], student_root: nn.Module,
             teacher_root: nn.Module) -> KDResult:
    """Train ``params`` so that ``student(**batch)`` reproduces ``teacher(**batch)``; ``pairs`` name (teacher block,
    student block) whose outputs are matched by MSE (normalised by the teacher's variance) when their shapes agree.
    Leaves ``params`` frozen (requires_grad False, no grad) whatever happens."""
    t_taps = Taps(teacher_root, sorted({t for t, _ in pairs}))
    s_taps = Taps(student_root, sorted({s for _, s in pairs}))
    try:
        return _loop(student, teacher, batches, params, kind, settings, pairs, t_taps, s_taps)
    finally:
        s_taps.remove()
        t_taps.remove()
        for p in params:
            p.requires_grad_(False)
            p.grad = None


def _loop(student, teacher, batches, params, kind, settings: KDSettings, pairs, t_taps: Taps, s_taps: Taps):
    def teacher_targets(batch):
        with torch.no_grad():
            out = teacher(**batch)
        return out.detach(), {n: t.detach() for n, t in t_taps.outputs.items()}

    t0 = time.perf_counter()
    probe = teacher_targets(batches[0])
    per_batch = probe[0].numel() * probe[0].element_size() + sum(t.numel() * t.element_size()
                                                               for t in probe[1].values())
    cached = per_batch * len(batches) <= settings.cache_bytes
    targets = [probe] + [teacher_targets(b) for b in batches[1:]] if cached else None
    trained = {id(p) for p in params}
    for p in student.parameters():  # the rest (a student's frozen Whisper encoder) gets no gradient at all: on CPU
        if id(p) not in trained:    # a Whisper-tiny step took 7.0 s with the encoder's gradients, 2.8 s without
            p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=0.0)
    steps = settings.steps
    warmup = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(  # linear warm-up, cosine decay
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * s / steps)))
    gen = torch.Generator().manual_seed(settings.seed)
    state = _State(order=[], losses=[], matched=set())
    ck = settings.checkpoint
    if ck is not None:
        state = _resume(ck, params, opt, sched, gen, state)
    order, losses, matched = state.order, state.losses, state.matched
    start = len(losses)
    t_train = time.perf_counter() - state.seconds  # training seconds count those of the runs resumed from
    stopped = False
    t_loop = last_line = last_save = time.perf_counter()

    def save() -> None:
        if ck is not None:
            _save(ck, params, opt, sched, gen, order, losses, matched, time.perf_counter() - t_train)

    with torch.enable_grad():
        for step in range(start, steps):
            if settings.budget_s is not None and losses and time.perf_counter() - t_train >= settings.budget_s:
                stopped = True
                break
            if not order:
                order = torch.randperm(len(batches), generator=gen).tolist()
            i = order.pop()
            out = student(**batches[i])
            t_out, t_hidden = targets[i] if cached else teacher_targets(batches[i])
            loss = output_loss(out, t_out, kind, settings.temperature)
            hidden = []
            for t_name, s_name in pairs:
                t, s = t_hidden.get(t_name), s_taps.outputs.get(s_name)
                if t is not None and s is not None and s.shape == t.shape:
                    hidden.append(nn.functional.mse_loss(s.float(), t.float()) / t.float().var().clamp(min=1e-8))
                    matched.add(s_name)
            if hidden and settings.hidden_weight > 0:
                loss = loss + settings.hidden_weight * torch.stack(hidden).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            value = float(loss.detach())
            if not math.isfinite(value):
                raise SqueezebenchError(f"{settings.label}: the loss became {value} at step {step}; lower lr")
            losses.append(value)
            now = time.perf_counter()
            if step % 50 == 0 or now - last_line >= PROGRESS_EVERY_S or step == steps - 1:
                last_line = now
                _progress(settings, step + 1, value, now - t_train, step + 1 - start, now - t_loop)
            if ck is not None and now - last_save >= (CHECKPOINT_EVERY_S if ck.every_s is None else ck.every_s):
                save()
                last_save = time.perf_counter()
    if len(losses) > start:  # (a finished state resumed as it is is not written again)
        save()
    return KDResult(first=losses[0], last=losses[-1], steps_done=len(losses), curve=downsample_curve(losses),
                    matched=matched, cached=cached, stopped_by_budget=stopped, seconds=time.perf_counter() - t_train,
                    resumed_from=start)


@dataclass
class _State:
    order: list[int]
    losses: list[float]
    matched: set[str]
    seconds: float = 0.0


def _resume(ck: Checkpoint, params, opt, sched, gen, fresh: _State) -> _State:
    """The saved state when ``ck`` holds one with the same key and parameter shapes, else ``fresh``."""
    if not ck.path.is_file():
        return fresh
    try:
        saved = torch.load(ck.path, map_location="cpu", weights_only=False)
    except Exception as e:  # a truncated file (killed while writing is excluded by the atomic rename, not a full disk)
        log.warning("training checkpoint %s is unreadable (%s): training starts from the initialisation", ck.path, e)
        return fresh
    shapes = [tuple(p.shape) for p in params]
    if saved.get("format") != CHECKPOINT_FORMAT or saved.get("key") != ck.key or \
            [tuple(t.shape) for t in saved["params"]] != shapes:
        log.info("training checkpoint %s is of another training: not resumed (it will be replaced)", ck.path)
        return fresh
    with torch.no_grad():
        for p, t in zip(params, saved["params"]):
            p.copy_(t.to(p.device, p.dtype))
    opt.load_state_dict(saved["optimizer"])
    sched.load_state_dict(saved["scheduler"])
    gen.set_state(saved["generator"])
    torch.set_rng_state(saved["torch_rng"])
    losses = list(saved["losses"])
    log.info("resuming training from step %d (checkpoint %s, %.0f s of training so far)", len(losses), ck.path,
             saved["seconds"])
    return _State(order=list(saved["order"]), losses=losses, matched=set(saved["matched"]),
                  seconds=float(saved["seconds"]))


def _save(ck: Checkpoint, params, opt, sched, gen, order, losses, matched, seconds: float) -> None:
    """Write the state next to its final name, then rename: a kill while saving leaves the previous checkpoint."""
    ck.path.parent.mkdir(parents=True, exist_ok=True)
    tmp = ck.path.with_name(ck.path.name + ".tmp")
    torch.save({"format": CHECKPOINT_FORMAT, "key": ck.key, "params": [p.detach().cpu() for p in params],
                "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "generator": gen.get_state(),
                "torch_rng": torch.get_rng_state(), "order": list(order), "losses": list(losses),
                "matched": sorted(matched), "seconds": seconds}, tmp)
    os.replace(tmp, ck.path)


def _progress(settings: KDSettings, done: int, loss: float, elapsed: float, done_here: int, elapsed_here: float) -> None:
    """One progress line: step, loss, training seconds and the ETA (the steps left at this run's pace, capped by
    the budget left)."""
    eta = elapsed_here / max(done_here, 1) * (settings.steps - done)
    if settings.budget_s is not None:
        eta = min(eta, max(0.0, settings.budget_s - elapsed))
    log.info("%s step %d/%d loss %.5f (%.0f s, ETA %.0f s)", settings.label, done, settings.steps, loss, elapsed, eta)
