"""Training budget: a variant built by training (a distilled student) whose training ended with its loss still high
says so in its row, with how far it got, so that "more steps" is a decision a team can make from the table (the loss
curve stays in the record). Nothing is measured: the verdict is read from what the build recorded."""

from __future__ import annotations

from typing import Optional

from squeezebench.measures.base import Measure, Row, ok, register_measure
from squeezebench.results.schema import Section

TRAINED_BY = ("student",)  # the build facts (methods/student.py) that carry a training outcome


class TrainingOutcome(Section):
    """How a build's training ended (the fields methods/student.py writes under its facts)."""

    steps_requested: int
    steps_done: int
    stopped_by_budget: bool = False
    loss_still_high: bool = False
    loss_first: float
    loss_last: float


def training_outcome(row: Row) -> Optional[TrainingOutcome]:
    rec = row.any
    size = rec.build.size if ok(rec) and rec.build is not None else None
    extra = (size.model_extra or {}) if size is not None else {}
    facts = next((extra[name] for name in TRAINED_BY if isinstance(extra.get(name), dict)), None)
    if facts is None:
        return None
    try:
        return TrainingOutcome.model_validate(facts)
    except ValueError:  # an older or a plug-in's record: no verdict rather than a wrong one
        return None


@register_measure
class TrainingMeasure(Measure):
    """The "training ended with the loss still high" flag; no section, no hooks: it only reads the build's facts."""

    name = "training"
    order = 1001
    flag_order = 6

    def flags(self, row: Row) -> list[str]:
        t = training_outcome(row)
        if t is None or not t.loss_still_high:
            return []
        ended = "on its time budget " if t.stopped_by_budget else ""
        share = t.loss_last / t.loss_first if t.loss_first else float("nan")
        return [f"training ended {ended}after {t.steps_done} of {t.steps_requested} steps with the loss still "
                f"{share:.0%} of its start (raise steps= or budget_s=, or keep more layers)"]
