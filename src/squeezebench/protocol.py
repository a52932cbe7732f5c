"""The run's protocol: everything that fixes what was measured, recorded with every result.

It is the union of the parts owned by the code that uses them: timing (measures.latency.TimingProtocol), quality
scoring (tasks.base.EvalProtocol) and calibration (tasks.base.CalibrationProtocol). Each part's fields carry
their CLI help in metadata, so the command line is derived from them and a new setting is one field.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Union, get_args, get_origin, get_type_hints

from squeezebench.errors import SqueezebenchError
from squeezebench.measures.latency import TimingProtocol
from squeezebench.tasks.base import CalibrationProtocol, EvalProtocol

PARTS = (TimingProtocol, EvalProtocol, CalibrationProtocol)
THREADS_PER_CORE = 4  # oversubscription beyond this only measures the scheduler
MAX_GEN_TOKENS = 131072  # the longest context windows in use; the model's own limit is checked with its config


@dataclass(frozen=True)
class Protocol(TimingProtocol, EvalProtocol, CalibrationProtocol):
    """All protocol fields, flat (each part is a base class, so code typed against a part takes a Protocol)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Protocol":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def validate(self) -> None:
        """One-line errors for values no run can use."""
        for f, _ in cli_fields():
            value = getattr(self, f.name)
            if f.metadata.get("positive") and value is not None and value <= 0:
                raise SqueezebenchError(f"{flag_name(f)} must be a positive number, got {value}")
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
                raise SqueezebenchError(f"{flag_name(f)} must not be negative, got {value}")
        self._check_bounds()

    def check_threads(self, cores: Optional[int] = None) -> None:
        """Far more threads than the measuring machine's cores (each one a stack and a share of the cores: 100,000
        crash the worker) are refused before any build. The runner asks this for the local executor, whose
        workers run on this machine; Ray nodes have cores of their own."""
        cores = cores or os.cpu_count() or 1
        if self.threads is not None and self.threads > cores * THREADS_PER_CORE:
            raise SqueezebenchError(f"--threads {self.threads} is more than {THREADS_PER_CORE} x the {cores} cores of "
                                    f"this machine; pass --threads {cores} or less")

    def _check_bounds(self) -> None:
        """Values no run can carry out: more new tokens than any model has positions, a --prompt with a field that
        is never filled in."""
        if self.gen_new_tokens > MAX_GEN_TOKENS:
            raise SqueezebenchError(f"--gen-tokens {self.gen_new_tokens} is more than any model's positions "
                                    f"({MAX_GEN_TOKENS}); pass a few dozen (default 32)")
        if self.gen_prompt is not None:
            from squeezebench.tasks.text_generation import check_prompt

            check_prompt(self.gen_prompt)


def flag_name(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _scalar_type(annotation: Any) -> type:
    if get_origin(annotation) is Union:
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    return annotation


def cli_fields() -> Iterator[tuple[dataclasses.Field, type]]:
    """(field, its scalar type) of every protocol setting exposed on the command line."""
    for part in PARTS:
        hints = get_type_hints(part)
        for f in dataclasses.fields(part):
            if f.metadata.get("cli", True):
                yield f, _scalar_type(hints[f.name])


def add_arguments(parser: Any) -> None:
    """Add one option per protocol field to an argparse parser (dest = the field's name)."""
    for f, typ in cli_fields():
        parser.add_argument(flag_name(f), dest=f.name, type=f.metadata.get("type", typ), default=f.default,
                            help=f"{f.metadata.get('help', '')} (default {f.default})")


def from_arguments(args: Any, **overrides: Optional[Any]) -> Protocol:
    values = {f.name: getattr(args, f.name) for f, _ in cli_fields() if hasattr(args, f.name)}
    values.update({k: v for k, v in overrides.items() if v is not None})
    protocol = Protocol.from_dict(values)
    protocol.validate()
    return protocol
