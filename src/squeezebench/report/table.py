"""The comparison table: one row per (team, model, method), CPU and GPU side by side, Δ % vs the original.

Columns and flags come from the registered measures (squeezebench.measures); this module groups records into rows,
pairs each row with its original, and renders markdown, CSV or JSON.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

from squeezebench.errors import SqueezebenchError
from squeezebench.measures import MEASURES, Row
from squeezebench.measures.base import all_columns, ok
from squeezebench.results import Record, iter_records

LANGS = ("en", "ru")
FIXED_HEADERS = {"en": ["Model", "Method"], "ru": ["Модель", "Метод"]}
BEGIN, END = "<!-- squeezebench:table -->", "<!-- /squeezebench:table -->"


def headers(lang: str = "en", extra: bool = False) -> list[str]:
    """The table's header: Model, Method, then the measures' course columns (and the others with ``extra``)."""
    return FIXED_HEADERS[lang] + [c.headers.get(lang, c.headers["en"]) for c in _columns(extra)]


def _columns(extra: bool):
    return [c for c in all_columns() if c.course or extra]


def collect(directories: list[Path]) -> list[Row]:
    """Latest record per (team, model, task, method, device), grouped into rows."""
    latest: dict[tuple, Record] = {}
    for rec in iter_records([Path(d) for d in directories]):
        key = (rec.team, rec.model.name, rec.task.name, rec.method, rec.device_kind)
        if key not in latest or str(rec.finished or "") >= str(latest[key].finished or ""):
            latest[key] = rec
    rows: dict[tuple, Row] = {}
    for (team, model, task, method, device), rec in latest.items():
        row = rows.setdefault((team, model, task, method), Row(team, model, task, method))
        setattr(row, "gpu" if device == "cuda" else "cpu", rec)
    for row in rows.values():
        orig = rows.get((row.team, row.model, row.task, "original"))
        if orig is not None:
            for dev in ("cpu", "gpu"):
                mine, ref = row.on(dev), orig.on(dev)
                if ok(mine) and ok(ref) and mine.environment.key() == ref.environment.key():
                    row.original[dev] = ref
            if orig.any is not None and orig.any.size is not None:
                row.original.setdefault("size", orig.any)
        row.flags = flags_of(row)
    order = {"original": 0}
    return sorted(rows.values(), key=lambda r: (r.team, r.model, r.task, order.get(r.method, 1), r.method))


def flags_of(row: Row) -> list[str]:
    flags: list[str] = []
    for measure in sorted((m for _, m in MEASURES.items()), key=lambda m: m.flag_order):
        flags.extend(measure.flags(row))
    return flags


def protocol_notes(rows: list[Row], lang: str = "en") -> list[str]:
    notes = []
    seen = set()
    for row in rows:
        for dev in ("cpu", "gpu"):
            rec = row.on(dev)
            if not ok(rec):
                continue
            env, p, lat = rec.environment, rec.protocol, rec.latency
            shape = ", ".join(f"{k} {'×'.join(map(str, v))}" for k, v in rec.input_shapes.items())
            where = env.gpu if dev == "gpu" else env.cpu
            line = (f"{row.team} · {row.model} · {dev.upper()}: {where}; {rec.runtime.threads} threads; "
                    f"inputs {shape}; {p.warmup_iters} warm-up runs, then ≥ {p.min_iters} runs and ≥ "
                    f"{p.min_time_s:g} s ({lat.timer}); cells are median ± std (ms); "
                    f"torch {env.torch}, transformers {env.transformers}")
            if line not in seen:
                seen.add(line)
                notes.append(line)
    notes.append("Weights size: bytes of the saved weight files (10^6 bytes = 1 MB) and bits per parameter; "
                 "RAM: peak RSS (VmHWM) during artifact load and timed inference minus RSS after imports; "
                 "VRAM: peak reserved by PyTorch; quality: value [95 % bootstrap interval]; Δ vs the model's "
                 "original measured in the same environment.")
    return notes


def json_rows(rows: list[Row]) -> list[dict]:
    """The rows as plain values (the keys of ``table --format json``; every measure column's value)."""
    out = []
    for r in rows:
        item = {"team": r.team, "model": r.model, "task": r.task, "method": r.method}
        for col in all_columns():
            item[col.key] = col.value(r)
        rec = r.any
        item["quality_metric"] = rec.quality.primary if ok(rec) else None
        item["quality_value"] = item.pop("quality")
        item["flags"] = r.flags
        out.append(item)
    return out


def render(rows: list[Row], fmt: str = "markdown", lang: str = "en", extra_columns: bool = False) -> str:
    if lang not in LANGS:
        raise SqueezebenchError(f"unknown language {lang!r}; use en or ru")
    if fmt == "json":
        return json.dumps(json_rows(rows), indent=1, ensure_ascii=False)
    multi_team = len({r.team for r in rows}) > 1
    cols = _columns(extra_columns)
    cells = [[(f"{r.model} [{r.team}]" if multi_team else r.model), r.method] + [c.cell(r) for c in cols]
             for r in rows]
    head = headers(lang, extra_columns)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(head)
        writer.writerows(cells)
        return buf.getvalue()
    if fmt != "markdown":
        raise SqueezebenchError(f"unknown table format {fmt!r}; use markdown, csv or json")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in cells]
    lines += [""] + [f"- {n}" for n in protocol_notes(rows, lang)]
    return "\n".join(lines) + "\n"


def table(directories: list[Path], fmt: str = "markdown", lang: str = "en", extra_columns: bool = False) -> str:
    rows = collect(directories)
    if not rows:
        raise SqueezebenchError(f"no results found in {', '.join(map(str, directories))}; run `squeezebench run` first")
    return render(rows, fmt, lang, extra_columns)


def update_readme(path: Path, text: str, block: str = "") -> None:
    """Replace the block between ``<!-- squeezebench:table[ NAME] -->`` and its end marker in ``path``."""
    if not path.is_file():
        raise SqueezebenchError(f"{path} does not exist; pass the README to update")
    begin = BEGIN if not block else BEGIN.replace(" -->", f" {block} -->")
    end = END if not block else END.replace(" -->", f" {block} -->")
    content = path.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if not pattern.search(content):
        raise SqueezebenchError(f"{path} has no {begin} ... {end} block; add the two markers where the table goes")
    path.write_text(pattern.sub(lambda _: f"{begin}\n{text.rstrip()}\n{end}", content, count=1), encoding="utf-8")
