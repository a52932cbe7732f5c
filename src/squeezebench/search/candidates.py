"""The search space: the registered methods that apply to this model, task and device (their devices, then their
``check``, as ``squeezebench methods --model --task`` says), the ranges their configs declare (``bounds``, ``Literal``
fields), and valid chain orders: up to ``max_transforms`` transforms, then at most one export or runtime choice, last.
A transform that does not keep float weights (a quantizer: ``Method.keeps_float`` false) ends the transforms, and only
a runtime choice (which runs the PyTorch weights as they are) may follow it: an export converts float weights."""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Optional

from squeezebench.errors import SqueezebenchError

NONE = "none"
FLOAT_STEPS = 20  # a bounded float parameter is searched on this many steps (readable labels, a finite space)


def method_reasons(model: str, task_name: str, device: str) -> dict[str, Optional[str]]:
    """Method name -> None (applies) or why not, for the model loaded as the build phase loads it."""
    from squeezebench.methods import METHODS, MethodContext
    from squeezebench.methods.base import why_not
    from squeezebench.models.sources import check_available, load_model, source_of
    from squeezebench.tasks import TASKS

    task = TASKS.get(task_name)
    source = source_of(model)
    check_available(source)
    if source["kind"] == "onnx":  # measured as is by ONNX Runtime (worker.build)
        return {n: None if n == "original" else "an ONNX input model can only be measured as is" for n, _ in METHODS.items()}
    bundle = load_model(source, task)
    out = {}
    for name, method in METHODS.items():
        out[name] = why_not(method, MethodContext(task=task, bundle=bundle, device=device))
        if out[name] is None and method.needs_original:
            out[name] = needs_earlier(name)
    return out


def needs_earlier(name: str) -> str:
    """Why a method that reads the model before the chain (needs_original) cannot be a chain's first link."""
    return f"recovers what an earlier link lost: only after another one, e.g. prune-structured+{name}"


@dataclass(frozen=True)
class Param:
    """One searched parameter of a method: a bounded number (``low``..``high``) or a choice among ``choices``."""

    name: str
    kind: str  # "int", "float" or "choice"
    low: float = 0.0
    high: float = 0.0
    step: Optional[float] = None
    log: bool = False
    choices: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Candidates:
    transforms: tuple[str, ...]  # may open a chain
    followers: tuple[str, ...]  # transforms that need an earlier link (needs_original: e.g. distill)
    exports: tuple[str, ...]  # exports and runtime choices: a chain's last link
    params: dict[str, tuple[Param, ...]] = field(default_factory=dict)
    max_transforms: int = 1
    float_keeping: frozenset = frozenset()  # transforms after which any link may follow (pruning, clustering, distill)
    runtime_choices: tuple[str, ...] = ()  # the exports that only choose a runtime for the PyTorch weights
    trained_on_original: frozenset = frozenset()  # transforms trained on the original (a student): no recovery after
    training: frozenset = frozenset()  # transforms that train for minutes (distill, student): measured at full only

    def trains(self, links: list[str]) -> bool:
        """A link of the chain trains: screening it would cost its training again, on other held-out data."""
        return any(name in self.training for name in links)

    def recovery_after(self, links: list[str]) -> bool:
        """A recovery (a follower such as distill) may follow ``links``: there is one, and it is not trained on the
        original already (distilling a student again towards its teacher repeats its own training)."""
        return bool(links) and links[-1] not in self.trained_on_original

    def keeps_float(self, links: list[str]) -> bool:
        """Every link so far leaves float weights: another transform or an export may follow."""
        return all(name in self.float_keeping for name in links)

    def last_links(self, links: list[str]) -> tuple[str, ...]:
        """What may end the chain after ``links``: any export after float-keeping links, else a runtime choice."""
        return self.exports if self.keeps_float(links) else tuple(e for e in self.exports if e in self.runtime_choices)

    @property
    def empty(self) -> bool:
        return not (self.transforms or self.exports)


def params_of(config_cls) -> tuple[Param, ...]:
    """The parameters a config declares a finite range for: numbers bounded on both ends, ``Literal`` choices."""
    bounds: dict = {}
    for klass in reversed(config_cls.__mro__):
        bounds.update(vars(klass).get("bounds", {}))
    hints = typing.get_type_hints(config_cls)
    out = []
    for f in dataclasses.fields(config_cls):
        typ = hints.get(f.name)
        if typing.get_origin(typ) is typing.Literal:
            out.append(Param(f.name, "choice", choices=typing.get_args(typ)))
            continue
        rng = bounds.get(f.name)
        if rng is None or rng.lo is None or rng.hi is None or not rng.hi > rng.lo or typ not in (int, float):
            continue
        if typ is int:
            lo, hi = int(rng.lo) + rng.lo_open, int(rng.hi) - rng.hi_open
            out.append(Param(f.name, "int", lo, hi, log=lo > 0 and hi / lo >= 16))
        else:
            step = (rng.hi - rng.lo) / FLOAT_STEPS
            lo = rng.lo + (step if rng.lo_open else 0.0)
            hi = rng.hi - (step if rng.hi_open else 0.0)
            out.append(Param(f.name, "float", lo, hi, step=step))
    return tuple(out)


def build_candidates(reasons: dict[str, Optional[str]], include: Optional[list[str]] = None,
                     exclude: Optional[list[str]] = None, max_transforms: int = 1) -> Candidates:
    """The methods that apply (``reasons[name] is None``), narrowed by ``include`` / ``exclude``."""
    from squeezebench.methods import METHODS

    for name in (include or []) + (exclude or []):
        METHODS.get(name)  # a typo: did-you-mean
    transforms, followers, exports, params = [], [], [], {}
    for name, method in METHODS.items():
        if name == "original" or (include and name not in include) or name in (exclude or []):
            continue
        reason = reasons.get(name)
        if reason is not None and reason != needs_earlier(name):  # a follower applies after another link
            continue
        (exports if method.is_export else followers if method.needs_original else transforms).append(name)
        params[name] = params_of(method.config_cls)
    float_keeping = frozenset(n for n in transforms + followers if METHODS.get(n).keeps_float)
    runtime_choices = tuple(n for n in exports if METHODS.get(n).kind == "runtime")
    trained = frozenset(n for n in transforms if METHODS.get(n).trains_on_original)
    training = frozenset(n for n in transforms + followers if METHODS.get(n).trains)
    return Candidates(tuple(transforms), tuple(followers), tuple(exports), params, max_transforms, float_keeping,
                      runtime_choices, trained, training)


def chain_text(links: list[tuple[str, dict[str, Any]]]) -> str:
    """``prune-structured:ratio=0.3+onnx-int8-dynamic``: the chain as `run --methods` takes it."""
    parts = []
    for name, values in links:
        shown = ",".join(f"{k}={_fmt(v)}" for k, v in values.items())
        parts.append(name + (":" + shown if shown else ""))
    return "+".join(parts) or "original"


def _fmt(value: Any) -> str:
    if isinstance(value, float) and not math.isnan(value):
        return f"{round(value, 6):g}"
    return str(value)


def check_not_empty(candidates: Candidates, model: str, task: str, device: str) -> None:
    if candidates.empty:
        raise SqueezebenchError(f"no method applies to {model} ({task}, {device}): nothing to search; "
                                f"`squeezebench methods --model {model} --task {task}` says why each does not")
