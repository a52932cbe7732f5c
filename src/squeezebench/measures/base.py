"""Measures: what is measured about a variant, each one plug-in with its record section and table columns.

The measure worker builds a ``MeasureSession`` and drives every registered measure (in ``order``) through the
phases of one measurement, each measure overriding only the hooks it needs:

- ``around_measurement``: a context manager around the whole measurement (e.g. energy over everything);
- ``begin``: before the artifact is loaded (e.g. the RSS baseline);
- ``around_load``: a context manager around loading the artifact (e.g. load time);
- ``run``: after the load, the task's data and example inputs; returns the measure's section (or None);
- ``around_timing``: a context manager around the timed window, which the latency measure opens with
  ``session.timed_window()`` (e.g. the contention probe);
- ``end``: after every ``run`` (e.g. the whole-process peak, after quality).

Context managers nest as optimum-benchmark's trackers do: the first measure in ``order`` is the outermost. A hook
that is not ``run`` stores its section with ``session.sections[self.name] = ...``. A measure with
``phase = "build"`` is computed by the build worker from the saved artifact instead (e.g. weights size).

A measure also says how it is shown: ``columns`` (header en/ru, unit, cell text, JSON value), ``flags`` (warnings
about a row, e.g. "slower than original") and ``notes`` (short text another measure's cell carries, e.g. decode
tok/s in the quality cell). The table renders the course's columns in their ``position`` order and any other
measure's columns after them, so that a new measure (say, energy) is one file and its test.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterator, Optional, Sequence

from squeezebench.i18n import tr
from squeezebench.registry import Registry
from squeezebench.results.schema import Record, Section

SLOWER_THRESHOLD = 1.05  # a variant is flagged slower when its median exceeds the original's by > 5 %


@dataclass
class MeasureSession:
    """What a measure may read while one variant is measured on one device; ``sections`` holds what the measures
    ran before it returned, ``scratch`` what they pass each other (e.g. the RSS baseline)."""

    task: Any
    protocol: Any
    device: str
    executable: Any = None
    bundle: Any = None
    data: Any = None
    inputs: Optional[dict[str, Any]] = None
    reference: Optional[dict[str, Any]] = None
    sections: dict[str, Any] = field(default_factory=dict)
    scratch: dict[str, Any] = field(default_factory=dict)
    evaluation: Any = None  # the task's EvalResult, once quality ran
    measures: Sequence["Measure"] = ()  # the measures of this measurement, in order (whose around_timing wrap)

    def timed_window(self) -> AbstractContextManager[None]:
        """What the latency measure wraps its timed loop in: every measure's ``around_timing``, stacked."""
        return stacked(self.measures, "around_timing", self)


@dataclass
class BuildSession:
    """What a build-phase measure reads: the saved artifact and facts the methods stated."""

    directory: Any
    weight_files: list[Any]
    parameters: int
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Column:
    """One table column. ``cell(row)`` is the text in markdown/csv; ``value(row)`` the number in JSON (None when
    absent). ``course`` columns form the course's table (their order is ``position``); others follow them."""

    key: str
    headers: dict[str, str]
    unit: str
    cell: Callable[[Any], str]
    value: Callable[[Any], Any]
    position: int = 100
    course: bool = False


class Measure:
    """Base class; subclasses set ``name`` (their record section), ``section`` (its pydantic model) and override
    the hooks they need."""

    name: ClassVar[str] = ""
    section: ClassVar[type[Section]] = Section
    order: ClassVar[int] = 100
    phase: ClassVar[str] = "measure"
    columns: ClassVar[tuple[Column, ...]] = ()
    flag_order: ClassVar[int] = 100

    def around_measurement(self, session: MeasureSession) -> AbstractContextManager[None]:
        """Wraps the whole measurement, from before ``begin`` to after ``end``."""
        return nullcontext()

    def begin(self, session: MeasureSession) -> None:
        """Before the artifact is loaded."""

    def around_load(self, session: MeasureSession) -> AbstractContextManager[None]:
        """Wraps loading the artifact (``runtimes.load_artifact``), nothing else."""
        return nullcontext()

    def around_timing(self, session: MeasureSession) -> AbstractContextManager[None]:
        """Wraps the timed window (warm-up and timed calls of the latency measure), nothing else."""
        return nullcontext()

    def run(self, session: MeasureSession) -> Optional[Section]:
        """After the artifact is loaded; returns this measure's section."""
        return None

    def end(self, session: MeasureSession) -> None:
        """After every measure ran (may complete sections in ``session.sections``)."""

    def build(self, session: BuildSession) -> Optional[Section]:
        """For ``phase = "build"``: the section, from the saved artifact."""
        return None

    def flags(self, row: Any) -> list[str]:
        """Warnings about a table row (its records and the original's)."""
        return []

    def notes(self, column: str, row: Any) -> list[str]:
        """Short texts this measure adds to another measure's cell ``column`` (e.g. "decode tok/s 21.0" in the
        quality cell)."""
        return []

    def read(self, record: Record) -> Optional[Section]:
        """This measure's section of ``record``, typed."""
        value = getattr(record, self.name, None) if self.name in type(record).model_fields else None
        return value if value is not None else record.section(self.name, self.section)


MEASURES: Registry[Measure] = Registry("measure")


def register_measure(cls: type[Measure]) -> type[Measure]:
    MEASURES.register(cls.name, cls())
    return cls


def measures(phase: str = "measure") -> list[Measure]:
    return sorted((m for _, m in MEASURES.items() if m.phase == phase), key=lambda m: m.order)


@contextmanager
def stacked(plugins: Sequence[Measure], hook: str, session: MeasureSession) -> Iterator[None]:
    """Enter ``hook`` (an around_* method) of every measure in order, exit them in reverse."""
    with ExitStack() as stack:
        for m in plugins:
            stack.enter_context(getattr(m, hook)(session))
        yield


def cell_notes(column: str, row: Any) -> list[str]:
    """Every measure's ``notes`` for the cell ``column`` of ``row``, in measure order."""
    return [n for _, m in sorted(MEASURES.items(), key=lambda kv: kv[1].order) for n in m.notes(column, row)]


def all_columns() -> list[Column]:
    cols = [c for _, m in MEASURES.items() for c in m.columns]
    return sorted(cols, key=lambda c: (not c.course, c.position, c.key))


# --- formatting shared by the measures' cells -------------------------------------------------------------
def pct(new: float, old: float) -> str:
    """Signed percent change, e.g. ``−19 %``."""
    if not old:
        return ""
    d = (new - old) / old * 100
    return f"{'+' if d >= 0 else '−'}{abs(d):.0f} %"


def status_text(rec: Optional[Record]) -> str:
    """Why a cell is empty: not run, skipped (reason), failed (error)."""
    if rec is None:
        return tr("— (not run)")
    if rec.status == "skipped":
        return tr("— (skipped: {reason})", reason=rec.reason)
    return tr("— (failed: {error})", error=str(rec.error)[:160])


def ok(rec: Optional[Record]) -> bool:
    return rec is not None and rec.ok


@dataclass
class Row:
    """A table row: the latest records of one (team, model, task, method) on CPU and on GPU, and the original's
    records they are compared with (``original``: "cpu"/"gpu" when comparable, "size" for the saved size)."""

    team: str
    model: str
    task: str
    method: str
    cpu: Optional[Record] = None
    gpu: Optional[Record] = None
    original: dict[str, Record] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    group: str = ""  # comparability key (Record.protocol_key) shared by the row's records
    group_index: int = 0  # its number among the groups of the same (team, model, task)
    groups_of_model: int = 1  # how many groups that (team, model, task) has in the table

    @property
    def any(self) -> Optional[Record]:
        """The record that speaks for the row: an ok one (CPU first), else whichever exists."""
        for r in (self.cpu, self.gpu):
            if ok(r):
                return r
        return self.cpu or self.gpu

    @property
    def is_original(self) -> bool:
        return self.method == "original"

    def on(self, dev: str) -> Optional[Record]:
        return self.cpu if dev == "cpu" else self.gpu
