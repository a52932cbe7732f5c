"""Weights size: the bytes of the files a variant was saved to, and bits per weight."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from squeezebench.measures.base import BuildSession, Column, Measure, Row, pct, register_measure
from squeezebench.results.schema import Size


def files_bytes(paths: list[Path]) -> int:
    return sum(p.stat().st_size for p in paths)


def size_record(weight_files: list[Path], all_files: list[Path], parameters: int, root: Path) -> dict[str, Any]:
    weights = files_bytes(weight_files)
    return {
        "weights_bytes": weights,
        "weights_mb": weights / 1e6,
        "artifact_bytes": files_bytes(all_files),
        "weight_files": [str(p.relative_to(root)) for p in weight_files],
        "parameters": parameters,
        "bits_per_weight": (weights * 8 / parameters) if parameters else None,
        "unit": "MB (10^6 bytes)",
    }


def _weights_cell(row: Row) -> str:
    rec = row.any
    size = rec.size if rec is not None else None
    if size is None:
        return "—"
    text = f"{size.weights_mb:.1f} MB"
    extra = [f"{size.bits_per_weight:.1f} bit/w"] if size.bits_per_weight else []
    ref = row.original.get("size")
    if ref is not None and ref.size is not None and not row.is_original:
        extra.insert(0, pct(size.weights_bytes, ref.size.weights_bytes))
    return text + (f" ({', '.join(extra)})" if extra else "")


def _weights_value(row: Row) -> Optional[float]:
    rec = row.any
    return rec.size.weights_mb if rec is not None and rec.size is not None else None


@register_measure
class SizeMeasure(Measure):
    """Bytes of the files the variant was saved to, as it would ship (computed by the build worker)."""

    name = "size"
    section = Size
    phase = "build"
    flag_order = 20
    columns = (Column("weights_size_mb", {"en": "Weights size", "ru": "Размер весов"}, "MB (10^6 bytes)",
                      _weights_cell, _weights_value, position=20, course=True),)

    def build(self, session: BuildSession) -> Size:
        root = Path(session.directory)
        all_files = [p for p in root.rglob("*") if p.is_file()]
        record = size_record([Path(p) for p in session.weight_files], all_files, session.parameters, root)
        record.update(session.facts)
        return Size.model_validate(record)

    def flags(self, row: Row) -> list[str]:
        rec = row.any
        size = rec.size if rec is not None else None
        if row.is_original or size is None:
            return []
        out = []
        ref = row.original.get("size")
        if ref is not None and ref.size is not None and size.weights_bytes >= ref.size.weights_bytes:
            out.append("not compressed: saved weights are not smaller than the original's")
        if size.in_memory_compressed is False:
            out.append("not compressed in memory: weights are held at full precision at inference")
        return out

    def read(self, record):
        return record.size
