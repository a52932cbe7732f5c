"""student: a smaller model built from the teacher's own layers and trained by knowledge distillation.

``student:layers=3`` (encoder-only and decoder-only transformers) keeps every other layer, DistilBERT-style
(layer ``i * n // k`` of ``n`` for student layer ``i`` of ``k``: 6 -> 3 keeps 0, 2, 4); ``student:decoder_layers=2``
(encoder-decoder, e.g. Whisper) keeps the encoder as it is (frozen) and a spread of decoder layers from the first to
the last, as distil-whisper does (``int(i * (n - 1) / (k - 1))``: 4 -> 2 keeps 0 and 3). Embeddings and heads are
the teacher's. The teacher is the model as it comes in (a copy); training data are the task's calibration inputs
(examples outside the evaluated ones) minus any input that is also an evaluated one, so the evaluated split is never
trained on: both fingerprints and the overlap removed are recorded. Loss (methods/lib/kd.py): temperature-scaled KL
of the task's logits (1 − cosine for embeddings) plus the MSE of each student layer's output against the output of
the last teacher layer it stands for (layer ``kept[i+1] − 1``, the last layer for the last one). Whisper's inputs
are teacher-forced on the teacher's own greedy transcripts of the training utterances (pseudo-labels, as
distil-whisper; ``pseudo_labels=false``: the references). Training runs on the
build's CUDA device when it has one (as gptq/awq), else the CPU; it is seeded and stops at ``steps`` or ``budget_s``,
whichever comes first; the record keeps a short loss curve, and a row whose loss ended still high says so. The
training state is checkpointed in the run's output folder (``artifacts/<model>/_training/``, keyed by the teacher's
weights, the training inputs and every parameter but ``budget_s``): a killed run resumes from its last checkpoint, a
run stopped by its budget continues when given a larger ``budget_s`` (the budget counts the training seconds of
every run), and a chain that starts with a student already trained (``student:...+gguf-q4_0`` after
``student:...``) reuses it instead of training again.

The config is updated (``num_hidden_layers`` / ``decoder_layers``, ``layer_types``), so the saved artifact reloads
as the smaller model; ``restore`` drops the same layers when the skeleton is the teacher's (a python: source). It
must be the chain's first link: later links compress the student (``student:layers=3+onnx-int8-dynamic``). A bare
``student`` keeps half of the teacher's layers (half of its decoder's), the default a search tries.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Optional

import torch
from torch import nn

from squeezebench.errors import SqueezebenchError
from squeezebench.methods.base import POSITIVE, MethodContext, Range, register_method, stack_inputs, wrap_module
from squeezebench.methods.lib.calibration_capture import work_device
from squeezebench.methods.lib.compact import PRUNABLE
from squeezebench.methods.lib.kd import Checkpoint, KDConfig, KDResult, train_kd

log = logging.getLogger(__name__)

HIGH_LOSS_FRACTION = 0.5  # the loss at the end above this share of its start: "still high", said in the row


@dataclass(frozen=True)
class StudentConfig(KDConfig):
    """``layers`` (encoder-only / decoder-only) or ``decoder_layers`` (encoder-decoder) the student keeps (unset:
    half of the teacher's); ``steps``
    AdamW steps of ``batch_size`` inputs from ``samples`` training inputs, stopped early after ``budget_s`` seconds."""

    name: ClassVar[str] = "student"
    # version 2: steps 300 -> 1000. MiniLM 6 -> 3 layers then openvino-int8, 2,000 BBC articles (999 scored, paired
    # 95 % interval of the drop): 300 steps +0.6 [-0.3, +1.5] pt, 600 +0.3 [-0.4, +1.0], 1000 +0.2 [-0.5, +0.9]
    # (loss 0.63, 0.31, 0.22; results/minilm-search-2000b, the 300-step chain, and results/minilm-2000-probes);
    # about 15 min of training on one core
    version: ClassVar[int] = 2
    steps: int = 1000
    bounds: ClassVar[dict[str, Range]] = {"layers": POSITIVE, "decoder_layers": POSITIVE,
                                          "budget_s": Range(lo=0, lo_open=True)}
    lr: float = 5e-4  # DistilBERT's; on MiniLM 6 -> 3 layers (300 steps) 1e-4 ended at -1.6 pt, 5e-4 at +0.4 pt
    layers: Optional[int] = None
    decoder_layers: Optional[int] = None
    budget_s: float = 1800.0
    pseudo_labels: bool = True  # generating tasks (Whisper): train on the teacher's outputs, not the references


# --- which layers ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Stack:
    """One list of transformer layers the student shrinks: its module path and the config field counting it."""

    path: str
    config_key: str


def every_other(n: int, k: int) -> list[int]:
    """DistilBERT-style: layer ``i * n // k`` for student layer i (6 -> 3: 0, 2, 4; 12 -> 6: 0, 2, ..., 10)."""
    return [i * n // k for i in range(k)]


def spread(n: int, k: int) -> list[int]:
    """distil-whisper-style: from the first to the last layer, evenly (4 -> 2: 0, 3; 32 -> 2: 0, 31)."""
    return [0] if k == 1 else [int(i * (n - 1) / (k - 1)) for i in range(k)]


def targets_of(kept: list[int], n: int) -> list[int]:
    """The teacher layer whose output student layer i reproduces: the last of the layers it replaces."""
    return [kept[i + 1] - 1 for i in range(len(kept) - 1)] + [n - 1]


def _config(module: nn.Module) -> Any:
    return getattr(module, "config", None)


def _layer_lists(module: nn.Module, count: int) -> list[str]:
    return [name for name, m in module.named_modules()
            if isinstance(m, nn.ModuleList) and len(m) == count and count > 0
            and all(any(True for _ in block.parameters()) for block in m)]


def find_stack(module: nn.Module, config: StudentConfig) -> tuple[Optional[Stack], Optional[str]]:
    """The layer list this config shrinks, or (None, why not) in one line."""
    cfg = _config(module)
    if cfg is None:
        return None, "needs a transformers model (its config counts the layers)"
    if getattr(cfg, "is_encoder_decoder", False):
        if config.layers is not None:
            return None, ("an encoder-decoder model keeps its encoder: give decoder_layers=N "
                          "(e.g. student:decoder_layers=2), not layers")
        key, suffix = "decoder_layers", "decoder.layers"
    else:
        if config.decoder_layers is not None:
            return None, "decoder_layers is for encoder-decoder models: give layers=N (e.g. student:layers=3)"
        key = next((k for k in ("num_hidden_layers", "n_layer", "n_layers") if isinstance(getattr(cfg, k, None), int)),
                   None)
        if key is None:
            return None, "its config does not count its layers (num_hidden_layers)"
        suffix = ""
    names = [n for n in _layer_lists(module, getattr(cfg, key)) if n.endswith(suffix)]
    if len(names) != 1:
        return None, f"found {len(names)} layer lists of config.{key} = {getattr(cfg, key)} blocks (need exactly one)"
    return Stack(names[0], key), None


def _kept_for(config: StudentConfig, stack: Stack, n: int) -> tuple[list[int], Optional[str]]:
    half = max(1, n // 2)  # DistilBERT's ratio: what an unset count keeps, and what a search tries
    k = config.decoder_layers if stack.config_key == "decoder_layers" else config.layers
    k = half if k is None else k
    what = "decoder_layers" if stack.config_key == "decoder_layers" else "layers"
    if n < 2:
        return [], f"the teacher has {n} layer in {stack.path}: none to drop, a student cannot be smaller"
    if k >= n:
        return [], f"{what}={k} keeps all {n} layers of the teacher; give fewer (e.g. {what}={half})"
    return (spread(n, k) if stack.config_key == "decoder_layers" else every_other(n, k)), None


def _check(config: StudentConfig, ctx: MethodContext) -> Optional[str]:
    if ctx.bundle is None:  # measuring a saved artifact: the structure comes from facts
        return None
    stack, why = find_stack(ctx.bundle.module, config)
    if stack is None:
        return why
    return _kept_for(config, stack, len(ctx.bundle.module.get_submodule(stack.path)))[1]


# --- building the student -------------------------------------------------------------------------------------------

def shrink(module: nn.Module, stack: Stack, kept: list[int], teacher_count: int) -> nn.Module:
    """Keep layers ``kept`` of ``stack`` (in place), renumber their ``layer_idx`` (KV-cache slots) and make the config
    say so: a skeleton that already has ``len(kept)`` layers (built from the student's saved config) only gets the
    renumbering."""
    layers = module.get_submodule(stack.path)
    if len(layers) == teacher_count:
        owner, _, attr = stack.path.rpartition(".")
        parent = module.get_submodule(owner) if owner else module
        layers = nn.ModuleList([layers[i] for i in kept])
        setattr(parent, attr, layers)
    elif len(layers) != len(kept):
        raise SqueezebenchError(f"student: {stack.path} has {len(layers)} layers, expected {teacher_count} "
                                f"(teacher) or {len(kept)} (student)")
    for i, layer in enumerate(layers):
        for m in layer.modules():
            if isinstance(getattr(m, "layer_idx", None), int):
                m.layer_idx = i
    cfg = _config(module)
    types = getattr(cfg, "layer_types", None)
    if isinstance(types, list) and len(types) == teacher_count:
        cfg.layer_types = [types[i] for i in kept]
    setattr(cfg, stack.config_key, len(kept))
    gen = getattr(module, "generation_config", None)
    heads = getattr(gen, "alignment_heads", None)  # Whisper's (decoder layer, head) pairs for word timestamps
    if isinstance(heads, list) and stack.config_key == "decoder_layers":
        gen.alignment_heads = [[kept.index(l), h] for l, h in heads if l in kept]
    return module


def _restore(module: nn.Module, config: StudentConfig, facts: dict) -> nn.Module:
    s = facts["student"]
    return shrink(module, Stack(s["stack"], s["config_key"]), s["kept_layers"], s["teacher_layers"])


# --- training data ------------------------------------------------------------------------------------------------

def input_digest(item: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(item):
        t = item[k].detach().cpu().contiguous()
        h.update(f"{k}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def fingerprint(digests: list[str]) -> str:
    """Order-independent fingerprint of a set of inputs."""
    return hashlib.sha256("".join(sorted(digests)).encode()).hexdigest()[:16]


def training_inputs(ctx: MethodContext, samples: int) -> tuple[list[dict], dict[str, Any]]:
    """The calibration inputs that are not evaluated inputs, and the facts that prove it (both fingerprints, how
    many overlapping inputs were dropped). Refuses when nothing is left or the evaluated inputs are unknown."""
    if ctx.calibration is None or ctx.task is None or ctx.bundle is None:
        raise SqueezebenchError("student needs training inputs from the task's data")
    if ctx.evaluated is None:
        raise SqueezebenchError("student needs the evaluated inputs to keep them out of training (run it through "
                                "squeezebench run)")
    evaluated = {input_digest(x) for x in ctx.evaluated()}
    candidates = ctx.calibration(samples)
    kept, digests, dropped = [], [], 0
    for item in candidates:
        d = input_digest(item)
        if d in evaluated:
            dropped += 1
        else:
            kept.append(item)
            digests.append(d)
    if not kept:
        raise SqueezebenchError(
            f"student found no training inputs outside the evaluated examples ({dropped} of {len(candidates)} "
            "calibration inputs are evaluated ones): use a dataset larger than --limit, so that examples are left "
            "to train on, or pass --calibration-dataset with other examples")
    facts = {"training_inputs": len(kept), "training_fingerprint": fingerprint(digests),
             "evaluated_inputs": len(evaluated), "evaluated_fingerprint": fingerprint(list(evaluated)),
             "overlapping_inputs_dropped": dropped}
    assert facts["training_fingerprint"] != facts["evaluated_fingerprint"] and not evaluated & set(digests)
    return kept, facts


# --- the method ---------------------------------------------------------------------------------------------------

def weights_digest(module: nn.Module) -> str:
    """A digest of every parameter and buffer (names, shapes, values): which teacher a checkpoint was trained from."""
    h = hashlib.sha256()
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def checkpoint_for(config: StudentConfig, ctx: MethodContext, teacher: str, training: str) -> Optional[Checkpoint]:
    """The student's checkpoint in the run's work folder, keyed by what makes it the same training: the teacher's
    weights, the training inputs and every parameter except the time budget (None when there is no work folder)."""
    if ctx.work_dir is None:
        return None
    params = {k: v for k, v in sorted(vars(config).items()) if k != "budget_s"}
    key = hashlib.sha256(json.dumps({"method": config.name, "version": config.version,
                                     "params": params, "teacher": teacher, "training": training},
                                    sort_keys=True, default=str).encode()).hexdigest()
    return Checkpoint(Path(ctx.work_dir) / f"student-{key[:16]}.pt", key)


def _check_first_link(module: nn.Module, ctx: MethodContext) -> None:
    trainable = all(isinstance(m._parameters.get("weight"), nn.Parameter) and m.weight.dtype == torch.float32
                    for m in module.modules() if isinstance(m, PRUNABLE))
    if ctx.facts or not trainable:
        raise SqueezebenchError("student builds a new model from float32 weights: put it first in the chain "
                                "(e.g. student:layers=3+onnx-int8-dynamic)")


def _frozen_prefixes(module: nn.Module, stack: Stack) -> tuple[str, ...]:
    """An encoder-decoder student keeps its encoder as it is: it is not trained (as distil-whisper)."""
    if stack.config_key != "decoder_layers" or not hasattr(module, "get_encoder"):
        return ()
    encoder = module.get_encoder()
    return tuple(n + "." for n, m in module.named_modules() if m is encoder)


def loss_still_high(result: KDResult) -> bool:
    """The curve's last point is above HIGH_LOSS_FRACTION of its first: training stopped far from the teacher."""
    start, end = result.curve[0][1], result.curve[-1][1]
    return start > 0 and end > HIGH_LOSS_FRACTION * start


def budget_note(config: StudentConfig, result: KDResult) -> Optional[str]:
    """What the record's notes must say when training ended with the loss still high (the curve stays in the
    record, so "more steps" is a decision a team can make from it)."""
    curve = [loss for _, loss in result.curve]
    start, end = curve[0], curve[-1]
    ended = (f"the time budget (budget_s={config.budget_s:g}) after {result.steps_done} of {config.steps} steps"
             if result.stopped_by_budget else f"all {config.steps} steps")
    if loss_still_high(result):
        falling = len(curve) < 2 or end < 0.95 * curve[-2]
        advice = ("still falling: raise steps= or budget_s=" if falling else
                  "levelled off: more steps may not help; keep more layers or change lr=")
        return (f"student: training ended on {ended} with the loss still high ({end:.4g}, "
                f"{100 * end / start:.0f} % of its start {start:.4g}); quality may be collapsed; {advice}")
    if result.stopped_by_budget:
        return f"student: training ended on {ended}; loss {start:.4g} -> {end:.4g}"
    return None


def _student(module: nn.Module, config: StudentConfig, ctx: MethodContext) -> nn.Module:
    stack, why = find_stack(module, config)
    if stack is None:
        raise SqueezebenchError(f"student: {why}")
    n = len(module.get_submodule(stack.path))
    kept, why = _kept_for(config, stack, n)
    if why:
        raise SqueezebenchError(f"student: {why}")
    _check_first_link(module, ctx)
    inputs, data_facts = training_inputs(ctx, config.samples)
    checkpoint = checkpoint_for(config, ctx, weights_digest(module), data_facts["training_fingerprint"])
    teacher_module = copy.deepcopy(module).eval()
    relabel = getattr(ctx.task, "pseudo_labelled", None)  # (a plug-in task may predate the hook)
    if config.pseudo_labels and relabel is not None:
        inputs, labelled = relabel(teacher_module, ctx.bundle, inputs)
        if labelled:
            ctx.notes.append(f"student: {labelled}")
            data_facts["pseudo_labels"] = labelled
    shrink(module, stack, kept, n)
    home = next((p.device for p in module.parameters()), torch.device("cpu"))
    device = torch.device(work_device(ctx))  # the build's CUDA device when it has one, else the CPU
    module.to(device)
    teacher_module.to(device)
    batches = [{k: v.to(device) for k, v in b.items()} for b in stack_inputs(inputs, config.batch_size)]
    kind = getattr(ctx.task, "output_kind", "logits")
    student, teacher = wrap_module(ctx, module), wrap_module(ctx, teacher_module)
    frozen = _frozen_prefixes(module, stack)
    params = [p for name, p in module.named_parameters() if p.is_floating_point() and not name.startswith(frozen)]
    pairs = [(f"{stack.path}.{t}", f"{stack.path}.{i}") for i, t in enumerate(targets_of(kept, n))]
    settings = config.settings("student", budget_s=config.budget_s, checkpoint=checkpoint)
    torch.manual_seed(config.seed)
    result = train_kd(student, teacher, batches, params, kind, settings, pairs if config.hidden_weight > 0 else [],
                      module, teacher_module)
    del teacher_module, teacher, batches
    module.to(home)
    kept_params = sum(p.numel() for p in module.parameters())
    ctx.facts.update({
        "in_memory_compressed": True,
        "in_memory_format": f"smaller dense model ({len(kept)} of {n} layers of {stack.path})",
        "storage": f"dense, {kept_params} parameters",
        "student": {"stack": stack.path, "config_key": stack.config_key, "teacher_layers": n, "kept_layers": kept,
                    "matched_layers": len(result.matched), "frozen": [p.rstrip(".") for p in frozen],
                    "steps_requested": config.steps, "steps_done": result.steps_done,
                    "stopped_by_budget": result.stopped_by_budget, "loss_still_high": loss_still_high(result),
                    "loss_first": result.first,
                    "loss_last": result.last, "loss_curve": result.curve, "train_s": result.seconds,
                    "teacher_outputs_cached": result.cached, "seed": config.seed, "train_device": str(device),
                    "resumed_from_step": result.resumed_from,
                    "checkpoint": checkpoint.path.name if checkpoint is not None else None, **data_facts}})
    if result.resumed_from:
        ctx.notes.append(f"student: resumed from step {result.resumed_from} of its checkpoint "
                         f"({checkpoint.path.name}); the curve and seconds count every run of this training")
    ctx.notes.append(
        f"student: {len(kept)} of {n} layers of {stack.path} kept ({', '.join(map(str, kept))}), trained "
        f"{result.steps_done} AdamW steps (batch {config.batch_size}, lr {config.lr:g}, T {config.temperature:g}) on "
        f"{data_facts['training_inputs']} inputs outside the evaluated examples (fingerprint "
        f"{data_facts['training_fingerprint']}, evaluated {data_facts['evaluated_fingerprint']}); loss "
        f"{result.first:.4g} -> {result.last:.4g}; {result.seconds:.0f} s")
    note = budget_note(config, result)
    if note:
        ctx.notes.append(note)
    log.info("student kept %s of %d layers; loss %.4g -> %.4g", kept, n, result.first, result.last)
    return module


register_method(StudentConfig, "knowledge distillation into a smaller student built from the teacher's layers "
                "(layers=N, or decoder_layers=N for encoder-decoder models)", restore=_restore, check=_check,
                needs_calibration=True, keeps_float=True, trains_on_original=True)(_student)
