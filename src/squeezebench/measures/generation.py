"""Generation speed: time to first token and decode tokens/s of greedy generation, and the decode roofline.

The task says how it generates and on which prompt (``Task.generation_speed``; None for a task that does not
generate); this measure runs it after quality and keeps the result in the record's ``generation`` section. Its
numbers are shown in the quality cell, as before they had a section of their own, and in their own columns
(``table --extra-columns``, ``--format json``). Older records kept them in the quality section: still read.
"""

from __future__ import annotations

from typing import Any, Optional

from squeezebench.measures.base import Column, Measure, MeasureSession, Row, ok, register_measure
from squeezebench.results.schema import Generation, Record

FIELDS = ("time_to_first_token", "decode_tokens_per_s", "decode_bandwidth_percent")
SHOWN = (("decode_tokens_per_s", "decode tok/s"), ("time_to_first_token", "TTFT ms"),
         ("decode_bandwidth_percent", "% of memory bandwidth"))  # in the quality cell, in this order
PROTOCOL_KEYS = ("gen_prompt_tokens", "gen_new_tokens", "gen_decoding", "generation")  # older records: in quality


def generation_of(record: Optional[Record]) -> Optional[Generation]:
    """The record's generation section; for a record written before this measure, built from its quality section."""
    if record is None:
        return None
    if record.generation is not None:
        return record.generation
    quality = record.quality
    old: dict[str, Any] = {k: v for k, v in (quality.metrics.items() if quality else ()) if k in FIELDS}
    if not old:
        return None
    return Generation.model_validate({**old, "protocol": {k: v for k, v in quality.protocol.items()
                                                          if k in PROTOCOL_KEYS}})


def _value(field: str):
    def value(row: Row) -> Optional[float]:
        section = generation_of(row.any) if ok(row.any) else None
        metric = getattr(section, field) if section is not None else None
        return metric.value if metric is not None else None
    return value


def _cell(field: str):
    def cell(row: Row) -> str:
        v = _value(field)(row)
        return "—" if v is None else f"{v:.1f}"
    return cell


@register_measure
class GenerationMeasure(Measure):
    """Greedy generation speed of the variant (TTFT, decode tok/s, % of memory bandwidth), where the task generates."""

    name = "generation"
    section = Generation
    order = 45  # after quality, as when the task timed it inside its evaluation
    flag_order = 11  # right after quality's flags, where they were shown before
    columns = (
        Column("decode_tokens_per_s", {"en": "Decode (tok/s)", "ru": "Декодирование (ток/с)"}, "tokens/s",
               _cell("decode_tokens_per_s"), _value("decode_tokens_per_s"), position=80),
        Column("time_to_first_token_ms", {"en": "TTFT (ms)", "ru": "Время до первого токена (ms)"}, "ms",
               _cell("time_to_first_token"), _value("time_to_first_token"), position=81),
        Column("decode_bandwidth_percent", {"en": "% of memory bandwidth", "ru": "% пропускной способности памяти"},
               "%", _cell("decode_bandwidth_percent"), _value("decode_bandwidth_percent"), position=82),
    )

    def run(self, session: MeasureSession) -> Optional[Generation]:
        import torch

        with torch.no_grad():
            speed = session.task.generation_speed(session.executable, session.bundle, session.data, session.protocol)
        if speed is None:
            return None
        return Generation.model_validate({**speed.metrics, "protocol": speed.protocol, "flags": speed.flags})

    def read(self, record: Record) -> Optional[Generation]:
        return generation_of(record)

    def notes(self, column: str, row: Row) -> list[str]:
        section = generation_of(row.any) if column == "quality" and ok(row.any) else None
        if section is None:
            return []
        return [f"{label} {getattr(section, field).value:.1f}" for field, label in SHOWN
                if getattr(section, field) is not None]

    def flags(self, row: Row) -> list[str]:
        rec = row.any
        return list(rec.generation.flags) if ok(rec) and rec.generation is not None else []
