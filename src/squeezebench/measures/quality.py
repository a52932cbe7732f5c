"""Quality: the task's own scoring of the variant (its primary metric with a 95 % interval, agreement with the
original), measured after latency and memory so that its batches count in neither.

Every metric says how it is shown (``Metric``: short label, scale, unit, decimals, the kind of Δ); the metrics are
declared with the tasks (tasks/metrics.py, or a plug-in) and registered here, so that the quality cell shows every
registered metric a record holds, in its task's order, without a list of them anywhere else."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

from squeezebench.i18n import tr, translate
from squeezebench.measures.base import (Column, Measure, MeasureSession, Row, cell_notes, ok, pct, register_measure,
                                        status_text)
from squeezebench.registry import Registry
from squeezebench.results.schema import MetricValue, Quality

# Δ vs the original: points of a fraction x100 ("pt"), percentage points ("pp"), relative change ("%")
DELTAS = {"pt": "{value} pt", "pp": "{value} pp", "%": ""}


@dataclass(frozen=True)
class Metric:
    """A metric: what is stored (``unit``, direction, protocol ``version``) and how the table shows it: ``label``
    (one casing; other languages in squeezebench.i18n), the stored value x ``scale`` with ``decimals`` and a
    ``suffix`` (WER 0.0981 is shown "WER 9.81 %"), ``delta`` (one of DELTAS) and ``shown`` (False: recorded
    but left out of the cell, e.g. macro-F1 beside accuracy)."""

    name: str
    unit: str
    higher_is_better: bool
    version: int
    description: str
    label: str = ""
    decimals: int = 4
    scale: float = 1.0
    suffix: str = ""
    delta: str = "%"
    shown: bool = True

    def __post_init__(self):
        if self.delta not in DELTAS:
            raise ValueError(f"metric {self.name!r}: delta {self.delta!r} is not one of {', '.join(DELTAS)}")

    def title(self) -> str:
        return tr(self.label or self.name)

    def number(self, value: float) -> str:
        return f"{value * self.scale:.{self.decimals}f}"

    def text(self, value: float) -> str:
        return self.number(value) + self.suffix

    def delta_text(self, new: float, old: float) -> str:
        if self.delta == "%":
            return pct(new, old)
        return tr(DELTAS[self.delta], value=f"{(new - old) * 100:+.1f}")


METRICS: Registry[Metric] = Registry("metric")
METRIC_ORDER: dict[str, tuple[str, ...]] = {}  # task name -> its metrics in display order (tasks.base.register_task)


def register_metric(metric: Metric) -> Metric:
    return METRICS.register(metric.name, metric)


def _form(name: str, value: MetricValue) -> Metric:
    """The registered metric, or a plain form for one no module registered (an old or a plug-in's record)."""
    if name in METRICS:
        return METRICS.get(name)
    fraction = value.unit in ("fraction", "cosine")
    return Metric(name, value.unit, bool(value.higher_is_better), 1, "", decimals=4 if fraction else 3,
                  delta="pt" if value.unit == "fraction" else "%")


def primary(row: Row) -> tuple[Optional[str], Optional[MetricValue]]:
    rec = row.any
    if not ok(rec):
        return None, None
    return rec.quality.primary, rec.quality.primary_value


def _shown_extras(row: Row, first: str) -> list[tuple[str, MetricValue]]:
    """The record's other metrics that show: the task's metrics in their order, then any others by name."""
    recorded = row.any.quality.metrics
    order = [n for n in METRIC_ORDER.get(row.task, ()) if n in recorded]
    order += sorted(n for n in recorded if n not in order)
    return [(n, recorded[n]) for n in order if n != first and _form(n, recorded[n]).shown]


def _quality_cell(row: Row) -> str:
    name, m = primary(row)
    if m is None:
        rec = row.any
        return status_text(rec) if rec is not None and not rec.ok else "—"
    form = _form(name, m)
    text = f"{form.title()} {form.text(m.value)}"
    if m.ci95:
        text += f" [{form.number(m.ci95[0])}–{form.number(m.ci95[1])}]"
    ref_rec = row.original.get("cpu") or row.original.get("gpu")
    if ref_rec is not None and not row.is_original:
        ref = ref_rec.quality.metrics.get(name)
        if ref is not None:
            text += f" ({form.delta_text(m.value, ref.value)})"
    for extra, value in _shown_extras(row, name):
        form = _form(extra, value)
        text += f"; {form.title()} {form.text(value.value)}"
    for note in cell_notes("quality", row):  # other measures' numbers shown here (e.g. generation speed)
        text += f"; {note}"
    if row.flags:
        text += " " + " ".join(f"⚠ {translate(f)}" for f in row.flags)
    return text


@register_measure
class QualityMeasure(Measure):
    """The task's scoring of the variant: primary metric [95 % interval], Δ vs the original, agreement."""

    name = "quality"
    section = Quality
    order = 40
    flag_order = 10
    columns = (
        Column("quality", {"en": "Quality", "ru": "Качество (PPL, BLEU, Accuracy)"}, "per metric", _quality_cell,
               lambda row: primary(row)[1].value if primary(row)[1] is not None else None, position=70, course=True),
    )

    def run(self, session: MeasureSession) -> Quality:
        import torch

        task = session.task
        t0 = time.perf_counter()
        with torch.no_grad():  # not inference_mode: sparse CSR weights fail under it (torch 2.13)
            result = task.evaluate(session.executable, session.bundle, session.data, session.protocol,
                                   session.reference)
        session.evaluation = result
        return Quality.model_validate({"primary": task.primary_metric, "metrics": result.metrics,
                                       "flags": result.flags, "protocol": result.protocol,
                                       "task_version": task.version, "eval_s": time.perf_counter() - t0})

    def flags(self, row: Row) -> list[str]:
        rec = row.any
        return list(rec.quality.flags) if ok(rec) else []
