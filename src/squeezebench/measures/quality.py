"""Quality: the task's own scoring of the variant (its primary metric with a 95 % interval, agreement with the
original), measured after latency and memory so that its batches count in neither."""

from __future__ import annotations

import time
from typing import Optional

from squeezebench.measures.base import (Column, Measure, MeasureSession, Row, cell_notes, ok, pct, register_measure,
                                        status_text)
from squeezebench.results.schema import MetricValue, Quality

# secondary metrics shown after the primary one, with their short labels
SHOWN_EXTRAS = (("cosine_to_original", "cos"), ("top1_agreement", "agree"), ("top5_accuracy", "top5"),
                ("cer", "CER"), ("transcript_agreement", "same transcript"), ("real_time_factor", "RTF"),
                ("decoder_ms_per_token", "decoder ms/token"),
                ("chrf", "chrF"), ("rouge_l", "ROUGE-L"), ("output_agreement", "same output"))
EXTRA_FORMAT = {"real_time_factor": ".3f"}  # others: 4 decimals for fractions, 1 otherwise


def fmt_metric(value: float, unit: str) -> str:
    return f"{value:.4f}" if unit in ("fraction", "cosine") else f"{value:.3f}"


def primary(row: Row) -> tuple[Optional[str], Optional[MetricValue]]:
    rec = row.any
    if not ok(rec):
        return None, None
    return rec.quality.primary, rec.quality.primary_value


def _quality_cell(row: Row) -> str:
    name, m = primary(row)
    if m is None:
        rec = row.any
        return status_text(rec) if rec is not None and not rec.ok else "—"
    text = f"{name} {fmt_metric(m.value, m.unit)}"
    if m.ci95:
        text += f" [{fmt_metric(m.ci95[0], m.unit)}–{fmt_metric(m.ci95[1], m.unit)}]"
    ref_rec = row.original.get("cpu") or row.original.get("gpu")
    if ref_rec is not None and not row.is_original:
        ref = ref_rec.quality.metrics.get(name)
        if ref is not None:
            text += f" ({(m.value - ref.value) * 100:+.1f} pt)" if m.unit == "fraction" else f" ({pct(m.value, ref.value)})"
    others = row.any.quality.metrics
    for extra, label in SHOWN_EXTRAS:
        if extra in others:
            v = others[extra]
            spec = EXTRA_FORMAT.get(extra) or (".4f" if v.unit in ("fraction", "cosine") else ".1f")
            text += f"; {label} {v.value:{spec}}"
    for note in cell_notes("quality", row):  # other measures' numbers shown here (e.g. generation speed)
        text += f"; {note}"
    if row.flags:
        text += " " + " ".join(f"⚠ {f}" for f in row.flags)
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
