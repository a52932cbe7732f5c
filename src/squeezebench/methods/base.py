"""Method registry: a compression method is a frozen config dataclass plus functions registered for it.

A method string names one method or a chain joined with ``+``; parameters follow a colon, e.g.
``int4-weight-only:group_size=128`` or ``prune-structured:ratio=0.3+int8-dynamic``.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Optional

from squeezebench.errors import SqueezebenchError
from squeezebench.registry import Registry
from squeezebench.runtimes.base import RESTORES, RUNTIMES, ManifestEntry, StructureRestore


@dataclass(frozen=True)
class Range:
    """Allowed values of a numeric method parameter: ``lo <= v <= hi`` (an end is excluded with ``lo_open`` /
    ``hi_open``; None = unbounded), or one of the sentinels in ``also`` ((value, meaning) pairs, e.g. -1 = one
    group per row). Declared once per config so every bad value is refused before a subprocess starts."""

    lo: Optional[float] = None
    hi: Optional[float] = None
    lo_open: bool = False
    hi_open: bool = False
    also: tuple[tuple[Any, str], ...] = ()

    def contains(self, value: Any) -> bool:
        if any(value == v for v, _ in self.also):
            return True
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        if self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi):
            return False
        return True

    def describe(self) -> str:
        if self.lo is not None and self.lo == self.hi:
            text = f"{self.lo:g}"
        elif self.lo is not None and self.hi is not None:
            text = f"in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"
        elif self.lo is not None:
            text = f"{'>' if self.lo_open else '>='} {self.lo:g}"
        elif self.hi is not None:
            text = f"{'<' if self.hi_open else '<='} {self.hi:g}"
        else:
            text = "a finite number"
        return text + "".join(f" (or {v}: {meaning})" for v, meaning in self.also)


POSITIVE = Range(lo=1)  # counts: samples, steps, sizes
NON_NEGATIVE = Range(lo=0)
FRACTION = Range(lo=0, hi=1, hi_open=True)  # sparsity / pruning ratios


@dataclass(frozen=True)
class MethodConfig:
    """Base of every method's parameters. Subclasses set ``name`` and add typed fields with defaults, and
    declare the allowed values of numeric fields in ``bounds``: the one validation path (:meth:`validate`, run at
    construction, so a bad value is refused when the chain is parsed; ``Literal`` fields are checked by the parser)."""

    name: ClassVar[str] = ""
    bounds: ClassVar[dict[str, Range]] = {}
    # raised when the same text (e.g. ``distill``) builds something else, a default or the transform changed: a
    # record of the earlier version is then neither resumed nor its artifact reused (runner keys), and the record's
    # chain says which version built it
    version: ClassVar[int] = 1

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first parameter outside its declared range (or not finite)."""
        import math

        bounds: dict[str, Range] = {}
        for klass in reversed(type(self).__mro__):  # a subclass may add to or override its parent's bounds
            bounds.update(vars(klass).get("bounds", {}))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{f.name} must be a finite number, got {value}")
            rng = bounds.get(f.name)
            if rng is not None and not rng.contains(value):
                raise ValueError(f"{f.name} must be {rng.describe()}, got {value}")

    def params(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def link(self) -> dict[str, Any]:
        """The config as one link of a recorded chain (job, record, artifact manifest)."""
        return {"name": self.name, "params": self.params(), "version": self.version}

    def spec(self) -> str:
        """Canonical string: name plus every parameter, so records say exactly what ran."""
        parts = [f"{k}={v}" for k, v in self.params().items()]
        return self.name + (":" + ",".join(parts) if parts else "")


@dataclass
class MethodContext:
    """What a transform may need beyond the model: the task, calibration data and the target device."""

    task: Any
    bundle: Any  # squeezebench.models.bundle.ModelBundle
    device: str = "cpu"
    calibration: Optional[Callable[[int], list[dict]]] = None  # n -> list of model input dicts
    protocol: Any = None  # squeezebench.tasks.Protocol of the run (e.g. protocol.calibration_samples)
    notes: list[str] = field(default_factory=list)
    # facts a transform states about its result, copied into the record's size section, e.g.
    # {"in_memory_compressed": True, "in_memory_format": "int4 packed, group 128", "storage": "..."}
    facts: dict[str, Any] = field(default_factory=dict)
    original: Any = None  # the model before the chain, kept by apply_chain for methods with needs_original
    # the model inputs of the evaluated examples, prepared as calibration inputs are: what a method that trains
    # (student) proves it never trained on, by comparing fingerprints
    evaluated: Optional[Callable[[], list[dict]]] = None
    # a folder inside the run's output folder where a method keeps state across runs of the same build (a student's
    # training checkpoint, resumed after a kill or with a larger time budget); None: nothing is kept
    work_dir: Optional[Path] = None


def calibration_count(ctx: "MethodContext", n: Optional[int] = None) -> int:
    """How many calibration samples to use: the method's own parameter, else the run's --calibration-samples."""
    if n:
        return int(n)
    return int(getattr(ctx.protocol, "calibration_samples", None) or 32)


def stack_inputs(inputs: list[dict[str, Any]], batch_size: int) -> list[dict[str, Any]]:
    """Concatenate same-shaped calibration inputs (dicts of tensors, batch dim first) into batches of at most
    ``batch_size``; inputs of another shape form their own batches."""
    import torch

    groups: dict[tuple, list[dict]] = {}
    for item in inputs:
        key = tuple((k, tuple(v.shape[1:])) for k, v in sorted(item.items()))
        groups.setdefault(key, []).append(item)
    out = []
    for items in groups.values():
        for i in range(0, len(items), batch_size):
            chunk = items[i:i + batch_size]
            out.append({k: torch.cat([c[k] for c in chunk]) for k in chunk[0]})
    return out


def first_tensor(out: Any) -> Any:
    """The first tensor of a module's output (a tensor, a tuple/list or a transformers ModelOutput), else None."""
    import torch

    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "__getitem__") and not isinstance(out, (str, bytes, dict)):
        try:
            head = out[0]
        except (IndexError, KeyError, TypeError):
            return None
        return head if isinstance(head, torch.Tensor) else None
    return None


def wrap_module(ctx: "MethodContext", module: Any) -> Any:
    """``ctx.task.wrap`` applied to ``module`` instead of ``ctx.bundle.module`` (the bundle is left as it was), in
    eval mode: what a transform runs to see the task's real forward on the model it is changing or a copy of it."""
    saved = ctx.bundle.module
    ctx.bundle.module = module
    try:
        return ctx.task.wrap(ctx.bundle).eval()
    finally:
        ctx.bundle.module = saved


@dataclass
class ExportResult:
    """What an export wrote: the runtime that loads it, its weight files, and that runtime's typed manifest entry
    (the ``ManifestEntry`` subclass the runtime declares; the worker refuses another type)."""

    runtime: str
    weight_files: list[Any]  # paths inside the artifact directory
    entry: Optional[ManifestEntry] = None


@dataclass(frozen=True)
class Method:
    """One registered method.

    transform(module, config, ctx) -> module: compress a torch module (may work in place).
    restore(module, config, facts) -> module: rebuild the compressed *structure* on a freshly built
        skeleton so that the saved state dict loads into it (no calibration, no data). ``facts`` is the
        dict the transform filled in ``ctx.facts`` (saved in the manifest), e.g. pruned shapes.
    check(config, ctx) -> None or a reason why this method does not apply (recorded as skipped).
    needs_original: the transform reads ``ctx.original`` (the model before the chain, e.g. a distillation
        teacher); such a method cannot be a chain's first link.
    keeps_float: the transform leaves plain float32 nn.Linear/Conv weights that any later link can work on
        (structured pruning, distillation, student); a quantizer does not, nor do clustering and unstructured
        pruning (packed or CSR modules replace the layers), so the search follows them by a runtime choice only.
    trains_on_original: the transform itself is trained on the original's outputs (a student), so a recovery
        (a needs_original method such as distill) after it would repeat that training: the search does not
        compose one.
    trains: the transform trains for minutes (a distillation, a student): a search measures a chain with it at
        the full protocol only, since a screen would cost as much (the training) and train on other held-out data.
    export(module, config, ctx, directory) -> ExportResult: for methods that hand the model to another
        runtime (ONNX Runtime, OpenVINO, ...); they must come last in a chain. ``module`` is the task's
        wrapped module (``ctx.task.wrap(ctx.bundle)``: forward(**inputs) -> one tensor) and the export
        writes its files into ``directory``; the worker then writes the manifest and preprocessing files.
    runtime: the runtime an export's artifact is loaded by (its pair, see runtimes/base.ManifestEntry).
    kind: "transform", "export" (converts the model for another runtime) or "runtime" (keeps the PyTorch weights
        as they are and names another runtime to run them, e.g. torch-compile); exports and runtime choices both
        end a chain.
    """

    name: str
    config_cls: type[MethodConfig]
    summary: str
    transform: Optional[Callable[..., Any]] = None
    restore: Optional[Callable[..., Any]] = None
    check: Optional[Callable[..., Optional[str]]] = None
    export: Optional[Callable[..., ExportResult]] = None
    devices: tuple[str, ...] = ("cpu", "cuda")
    model_types: str = "any"
    needs_calibration: bool = False
    needs_original: bool = False
    keeps_float: bool = False
    trains_on_original: bool = False
    trains: bool = False
    runtime: str = "pytorch"
    kind: str = "transform"

    @property
    def is_export(self) -> bool:
        """It writes the artifact itself (an export or a runtime choice), so it must be a chain's last link."""
        return self.export is not None

    def defined_in(self) -> str:
        """``module:function`` of the code this method runs (its transform or export)."""
        fn = self.transform or self.export
        return f"{fn.__module__}:{fn.__qualname__.split('.<locals>')[0]}" if fn is not None else self.config_cls.__module__


METHODS: Registry[Method] = Registry("method")


def register_method(
    config_cls: type[MethodConfig],
    summary: str,
    *,
    restore: Optional[Callable[..., Any]] = None,
    check: Optional[Callable[..., Optional[str]]] = None,
    devices: tuple[str, ...] = ("cpu", "cuda"),
    model_types: str = "any",
    needs_calibration: bool = False,
    needs_original: bool = False,
    keeps_float: bool = False,
    trains_on_original: bool = False,
    trains: bool = False,
):
    """Decorator registering a transform function for ``config_cls``."""

    def deco(fn):
        METHODS.register(
            config_cls.name,
            Method(config_cls.name, config_cls, summary, transform=fn, restore=restore, check=check,
                   devices=devices, model_types=model_types, needs_calibration=needs_calibration,
                   needs_original=needs_original, keeps_float=keeps_float,
                   trains_on_original=trains_on_original, trains=trains or trains_on_original),
        )
        if restore is not None:  # how the PyTorch runtime replays this link on a fresh skeleton
            RESTORES.register(config_cls.name, StructureRestore(config_cls, restore))
        return fn

    return deco


def _runtime_check(runtime: str, check: Optional[Callable[..., Optional[str]]]) -> Callable[..., Optional[str]]:
    """An export's check: can its runtime run on the context's device here, then the export's own check."""

    def checked(config, ctx) -> Optional[str]:
        reason = RUNTIMES.get(runtime).unavailable(ctx.device)
        if reason is None and check is not None:
            reason = check(config, ctx)
        return reason

    checked.__wrapped__ = check  # type: ignore[attr-defined]
    return checked


def register_export(
    config_cls: type[MethodConfig],
    summary: str,
    *,
    runtime: str,
    check: Optional[Callable[..., Optional[str]]] = None,
    devices: tuple[str, ...] = ("cpu",),
    model_types: str = "any",
    needs_calibration: bool = False,
):
    """Decorator registering an export function (last link of a chain) for ``config_cls``; ``runtime`` (registered
    first: import it) loads what it writes, and its device check runs before the export's own ``check``."""
    RUNTIMES.get(runtime)  # the pair must exist: a typo fails at import, with did-you-mean

    def deco(fn):
        METHODS.register(
            config_cls.name,
            Method(config_cls.name, config_cls, summary, export=fn, check=_runtime_check(runtime, check),
                   devices=devices, model_types=model_types, needs_calibration=needs_calibration,
                   runtime=runtime, kind="export"),
        )
        return fn

    return deco


def _restore_identity(module, config=None, facts=None):
    return module  # a runtime choice changes nothing that is saved


def register_runtime_choice(
    config_cls: type[MethodConfig],
    summary: str,
    *,
    runtime: str,
    check: Optional[Callable[..., Optional[str]]] = None,
    devices: tuple[str, ...] = ("cpu", "cuda"),
):
    """Decorator for a last link that is not an export: ``fn(module, config, ctx, directory) -> ExportResult`` saves
    the PyTorch weights as they are and names ``runtime`` (e.g. torch-compile) to run them. The PyTorch runtime's
    replay of the chain treats the link as identity."""
    RUNTIMES.get(runtime)

    def deco(fn):
        METHODS.register(
            config_cls.name,
            Method(config_cls.name, config_cls, summary, export=fn, restore=_restore_identity,
                   check=_runtime_check(runtime, check), devices=devices, runtime=runtime, kind="runtime"),
        )
        RESTORES.register(config_cls.name, StructureRestore(config_cls, _restore_identity))
        return fn

    return deco


def _convert(value: str, typ: Any, name: str, param: str) -> Any:
    origin = typing.get_origin(typ)
    if origin is typing.Union or origin is getattr(__import__("types"), "UnionType", None):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if value.lower() in ("none", "null"):
            return None
        typ = args[0]
    if origin is typing.Literal:
        allowed = typing.get_args(typ)
        if value not in allowed:
            raise SqueezebenchError(f"method {name}: {param} must be one of {', '.join(map(str, allowed))}, got {value!r}")
        return value
    try:
        if typ is bool:
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if typ in (int, float, str):
            return typ(value)
    except ValueError:
        raise SqueezebenchError(f"method {name}: parameter {param}={value!r} is not a valid {typ.__name__}") from None
    return value


# The course's spelling "prune-2:4" holds the parameter separator; it is read as prune-2of4.
ALIASES = {"prune-2:4": "prune-2of4"}


def parse_method(text: str) -> MethodConfig:
    """Parse one ``name[:k=v,...]`` into its config; unknown names/params give a one-line error."""
    text = text.strip()
    if not text:
        raise SqueezebenchError("empty method name; see `squeezebench methods` for the list")
    for alias, target in ALIASES.items():  # names that contain a colon themselves
        if text == alias or text.startswith(alias + ":"):
            text = target + text[len(alias):]
    name, _, rest = text.partition(":")
    method = METHODS.get(name.strip())
    cls = method.config_cls
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq:
            raise SqueezebenchError(f"method {name}: parameter {item!r} must look like key=value")
        if key not in fields:
            known = ", ".join(fields) or "none"
            raise SqueezebenchError(f"method {name}: unknown parameter {key!r} (parameters: {known})")
        kwargs[key] = _convert(value.strip(), hints[key], name, key)
    try:
        config = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise SqueezebenchError(f"method {name}: {exc}") from None
    return config


def parse_chain(text: str) -> list[MethodConfig]:
    """Parse ``a:k=v+b`` into configs; ``original`` alone means no change; exports must come last."""
    configs = [parse_method(part) for part in text.split("+")]
    if len(configs) > 1:
        configs = [c for c in configs if c.name != "original"]
    for c in configs[:-1]:
        method = METHODS.get(c.name)
        if method.is_export:
            what = "exports the model" if method.kind == "export" else f"runs the model with {method.runtime}"
            raise SqueezebenchError(f"method {c.name} {what} and must be the last link of {text!r}")
    if METHODS.get(configs[0].name).needs_original:
        raise SqueezebenchError(f"method {configs[0].name} recovers what an earlier link lost: put it after one, "
                                f"e.g. prune-structured:ratio=0.3+{configs[0].name}")
    return configs


def chain_from_links(links: list[dict[str, Any]]) -> list[MethodConfig]:
    """The configs of a chain recorded as (name, params) links (a job or a manifest): no text parsing."""
    return [METHODS.get(link["name"]).config_cls(**link["params"]) for link in links]


def chain_spec(configs: list[MethodConfig]) -> str:
    """Short chain label for tables: names plus non-default parameters."""
    labels = []
    for c in configs:
        defaults = c.__class__()
        changed = [f"{k}={v}" for k, v in c.params().items() if getattr(defaults, k) != v]
        labels.append(c.name + (":" + ",".join(changed) if changed else ""))
    return "+".join(labels)


def apply_chain(bundle: Any, chain: list[MethodConfig], ctx: MethodContext, directory: Any) -> Optional[ExportResult]:
    """Run a chain on ``bundle`` in order: transforms replace ``bundle.module``; a final export writes its files
    into ``directory`` and is returned (None when the variant stays a PyTorch model)."""
    export = None
    if any(METHODS.get(c.name).needs_original for c in chain):
        import copy

        ctx.original = copy.deepcopy(bundle.module).eval()
    for config in chain:
        method = METHODS.get(config.name)
        if method.is_export:
            export = method.export(ctx.task.wrap(bundle).eval(), config, ctx, directory)
        else:
            bundle.module = method.transform(bundle.module, config, ctx) or bundle.module
    return export


def why_not(method: Method, ctx: MethodContext) -> Optional[str]:
    """Why ``method`` (with its default parameters) does not apply to ``ctx.bundle`` for ``ctx.task`` on
    ``ctx.device``, or None when it does: its devices, then its own ``check``, as the worker asks before building."""
    if ctx.device.split(":")[0] not in method.devices:
        return f"runs on {', '.join(method.devices)} only"
    if method.check is None:
        return None
    try:
        return method.check(method.config_cls(), ctx)
    except Exception as exc:  # noqa: BLE001 - a check that cannot decide says so instead of stopping the list
        return f"its check failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
