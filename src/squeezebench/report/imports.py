"""``squeezebench import-table``: hand-written rows of a course table, imported on purpose as records marked
"imported, not measured by squeezebench".

Nothing reads a hand-written row silently: only this command does, and only into records with ``status =
"imported"`` and an ``imported`` section (results/schema.py). Each cell keeps its text as written; a number is read
from it only when the text is one number with an optional known unit (and an optional "± spread" and "(remark)"):
"327.32Mb" is 327.32 MB, "31.9ms (Tesla T4)" is 31.9 ms with the remark "Tesla T4", "1.2 s" is 1200 ms. A quality
cell gives a number only when it names one known metric ("Accuracy 0.91", "PPL: 12.3"). Anything else keeps its
text and no number (``value = None``).
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from squeezebench.errors import SqueezebenchError
from squeezebench.outdir import check_team, inside
from squeezebench.report.merge import find_table, parse_marker, read_text, split_cells
from squeezebench.report.table import _columns
from squeezebench.results.schema import ImportedCell, Record
from squeezebench.results.store import RunFile

# unit as written (lower case) -> factor to the column's unit
SCALES = {
    "MB": {"mb": 1.0, "мб": 1.0, "m": 1.0, "mib": 1.048576, "gb": 1000.0, "гб": 1000.0, "g": 1000.0,
           "gib": 1073.741824, "kb": 1e-3, "кб": 1e-3, "kib": 1.024e-3, "b": 1e-6, "bytes": 1e-6},
    "ms": {"ms": 1.0, "мс": 1.0, "s": 1000.0, "sec": 1000.0, "с": 1000.0, "сек": 1000.0, "us": 1e-3, "µs": 1e-3,
           "μs": 1e-3, "мкс": 1e-3},
}
UNIT_OF = {"weights_size_mb": "MB", "cpu_ms": "ms", "gpu_ms": "ms", "ram_mb": "MB", "vram_mb": "MB"}
# metric names as people write them -> (name, higher is better)
METRIC_WORDS = {"ppl": ("perplexity", False), "perplexity": ("perplexity", False), "bleu": ("bleu", True),
                "accuracy": ("accuracy", True), "acc": ("accuracy", True), "f1": ("f1", True),
                "rouge": ("rouge", True), "wer": ("wer", False), "точность": ("accuracy", True)}
NUMBER = r"[-+]?\d+(?:[.,]\d+)?"
AMOUNT = re.compile(rf"^~?\s*({NUMBER})\s*(?:±\s*{NUMBER}\s*)?([^\W\d_]+)?\s*(?:\((.*)\))?$")


def _float(text: str) -> float:
    return float(text.replace(",", "."))


def parse_amount(text: str, unit: str) -> ImportedCell:
    """A size or time cell: its number in ``unit`` ("MB" or "ms") when it is one number with a known unit."""
    cell = ImportedCell(text=text)
    m = AMOUNT.match(text.strip())
    if m is None:
        return cell
    number, written, remark = m.groups()
    cell.remark = remark.strip() if remark else None
    if written is None:
        cell.value, cell.unit = _float(number), unit  # the header states the unit
        return cell
    scale = SCALES[unit].get(written.casefold())
    cell.written_unit = written
    if scale is not None:
        cell.value, cell.unit = _float(number) * scale, unit
    return cell


def parse_quality(text: str) -> ImportedCell:
    """A quality cell: the metric's value when the text names exactly one known metric and holds a number."""
    cell = ImportedCell(text=text)
    words = {METRIC_WORDS[w] for w in re.findall(r"[^\W\d_]+|f1", text.casefold()) if w in METRIC_WORDS}
    number = re.search(rf"({NUMBER})\s*(%?)", text)
    if len(words) != 1 or number is None:
        return cell
    (name, higher), = words
    value = _float(number.group(1))
    cell.metric, cell.higher_is_better = name, higher
    if number.group(2) == "%":
        cell.value, cell.unit, cell.written_unit = value / 100, "fraction", "%"
    else:
        cell.value, cell.unit = value, "fraction" if name == "accuracy" and value <= 1 else name
    return cell


def parse_row(cells: list[str], keys: list[str]) -> dict[str, ImportedCell]:
    out = {}
    for key, text in zip(keys, cells):
        out[key] = parse_quality(text) if key == "quality" else (
            parse_amount(text, UNIT_OF[key]) if key in UNIT_OF else ImportedCell(text=text))
    return out


def import_table(path: Path, team: str, task: str = "unknown", only: Optional[str] = None) -> list[Record]:
    """The hand-written rows of the course table in ``path`` (rows squeezebench wrote are left out), as records."""
    if not team or "/" in team:
        raise SqueezebenchError("--team must be a non-empty name without '/'")
    lines = read_text(path).splitlines()
    found = find_table(lines)
    if found is None:
        raise SqueezebenchError(f"{path} has no table with squeezebench's header (en or ru); nothing to import")
    keys = [c.key for c in _columns(False)]
    now = datetime.now(timezone.utc).isoformat()
    records = []
    for i in range(found.header + 2, found.end):
        if parse_marker(lines[i]) is not None or (only and only not in lines[i]):
            continue
        cells = split_cells(lines[i])
        if len(cells) < 2 or not cells[0]:
            continue
        cells += [""] * (2 + len(keys) - len(cells))
        records.append(Record.model_validate({
            "team": team, "model": {"name": cells[0]}, "task": {"name": task}, "method": cells[1] or "?",
            "device": "cpu", "status": "imported", "finished": now,
            "imported": {"source": str(path), "line": i + 1, "cells": parse_row(cells[2:], keys)}}))
    if not records:
        raise SqueezebenchError(f"{path}: the table has no hand-written rows to import")
    return records


def write_imported(records: list[Record], out: Path, team: str, command: str = "") -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    check_team(team)
    path = inside(out, Path(out) / team / f"run-imported-{stamp}.json", "the run file")
    run = RunFile(path, {"team": team, "started": stamp, "command": command})
    for rec in records:
        run.add(rec)
    return path
