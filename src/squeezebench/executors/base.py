"""How a run's variants are carried out: the runner plans, an executor builds and measures.

The runner turns the run into :class:`Unit` s (one per variant: its build job and one :class:`Slot` per device)
and hands them to an executor together with a :class:`Sink` (the runner itself), which turns phase results into
records and writes each record the moment it is complete. Executors decide only *where and when* the worker
phases run; every phase is still ``python -m squeezebench.worker`` in a fresh process (squeezebench.isolation),
so what is measured and how does not depend on the executor.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Optional, Protocol

from squeezebench.progress import Step
from squeezebench.registry import Registry
from squeezebench.results.schema import Placement, Record
from squeezebench.variant import Job, Variant


@dataclass
class Slot:
    """One (variant, device) of the run: the measure job, its log, and an earlier ok record standing in for it."""

    label: str  # "[i/N] model · method · device", for progress lines
    device: str
    key: str  # the resume key (runner._key)
    job: Job  # the measure phase's job
    log_path: Path
    done: Optional[Record] = None
    index: int = 0  # this slot's number in the run (1-based) and how many there are, for the progress bar
    total: int = 0

    def step(self, text: str, phase: str) -> Step:
        """A progress line for this slot in ``phase`` ("build", "measure" or "done")."""
        return Step(f"{self.label}: {text}", self.index, self.total, phase)


@dataclass
class Unit:
    """One variant: built once, then measured on each device of its slots."""

    variant: Variant
    artifact_dir: Path
    reference: Path  # the original's outputs for agreement metrics (written by the original's cpu measurement)
    build_job: Job
    slots: list[Slot] = field(default_factory=list)

    @property
    def todo(self) -> list[Slot]:
        return [s for s in self.slots if s.done is None]

    def writes_reference(self, slot: Slot) -> bool:
        """The worker saves the reference only when measuring the original on ``cpu``."""
        return self.variant.is_original and slot.device == "cpu"


class Sink(Protocol):
    """What the runner offers an executor."""

    progress: Callable[[str], None]
    timeout_s: float  # seconds one worker phase may run

    def keep(self, slot: Slot) -> None:
        """An earlier ok record stands in for this slot (resume)."""

    def start(self, unit: Unit, slot: Slot) -> Record:
        """A new record for the slot (model, task, data, protocol; status pending)."""

    def apply_build(self, record: Record, build: dict[str, Any], check_cuda: bool = True) -> bool:
        """Attach the build result; True when the slot is to be measured (the build is ok)."""

    def apply_measure(self, record: Record, result: dict[str, Any], accounting: dict[str, Any],
                      placement: Placement) -> None:
        """Attach the measure result, the kernel's accounting and where/when it ran."""

    def finish(self, slot: Slot, record: Record) -> None:
        """Write the record to the run file at once."""

    def spawn(self, phase: str, job: Job, log_path: Path) -> tuple[dict, dict]:
        """Run one worker phase in a fresh process on this machine."""


class Executor(ABC):
    """Carries out the planned units; must call ``sink.keep`` or ``sink.finish`` once for every slot."""

    name: ClassVar[str]

    @abstractmethod
    def execute(self, units: list[Unit], sink: Sink) -> None: ...


EXECUTORS: Registry[type[Executor]] = Registry("executor")


def register_executor(cls: type[Executor]) -> type[Executor]:
    EXECUTORS.register(cls.name, cls)
    return cls


def make_executor(name: str, **options: Any) -> Executor:
    """The executor called ``name``, configured with its options (e.g. the Ray address)."""
    return EXECUTORS.get(name)(**options)
