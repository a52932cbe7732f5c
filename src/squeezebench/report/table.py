"""The comparison table: one row per (team, model, method), CPU and GPU side by side, Δ % vs the original.

Columns and flags come from the registered measures (squeezebench.measures); this module groups records into rows,
pairs each row with its original, and renders markdown, CSV or JSON.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Callable

import squeezebench.tasks  # noqa: F401  (registers the built-in tasks and metrics: the quality cell's forms and order)
from squeezebench.errors import SqueezebenchError
from squeezebench.i18n import LANGS, language, tr, translate
from squeezebench.measures import MEASURES, Row
from squeezebench.measures.base import all_columns, ok
from squeezebench.report.escape import csv_cell, md_cell, md_line, md_name
from squeezebench.results import Record, iter_records

log = logging.getLogger(__name__)

FIXED_HEADERS = {"en": ["Model", "Method"], "ru": ["Модель", "Метод"]}
BEGIN, END = "<!-- squeezebench:table -->", "<!-- /squeezebench:table -->"


def headers(lang: str = "en", extra: bool = False) -> list[str]:
    """The table's header: Model, Method, then the measures' course columns (and the others with ``extra``)."""
    return FIXED_HEADERS[lang] + [c.headers.get(lang, c.headers["en"]) for c in _columns(extra)]


def _columns(extra: bool):
    return [c for c in all_columns() if c.course or extra]


def collect(directories: list[Path]) -> list[Row]:
    """Latest record per (team, model, model files, task, method, device, protocol), grouped into rows.

    Records measured under another protocol (other data, shapes, threads, settings) or of other model files never
    share a row and never pair for a Δ: each protocol is its own group of rows (``Row.group``), and a Δ also needs the
    same hardware as the original's record on that device."""
    latest: dict[tuple, Record] = {}
    folders: dict[str, set[str]] = {}
    for rec in iter_records([Path(d) for d in directories]):
        key = (rec.team, rec.model.name, rec.model.fingerprint, rec.task.name, rec.method, rec.device_kind,
               _group_of(rec))
        if key not in latest or str(rec.finished or "") >= str(latest[key].finished or ""):
            latest[key] = rec
        folders.setdefault(rec.team, set()).add(str(Path(rec.source_file or "").parent))
    for team, where in folders.items():
        if len(where) > 1:
            log.warning("team %r has results in %d folders (%s); their rows are merged, the newest record of each "
                        "variant shown", team, len(where), ", ".join(sorted(where)))
    rows: dict[tuple, Row] = {}
    for (team, model, fp, task, method, device, group), rec in latest.items():
        row = rows.setdefault((team, model, fp, task, method, group), Row(team, model, task, method, group=group))
        setattr(row, "gpu" if device == "cuda" else "cpu", rec)
    _name_homonyms(rows)
    for (team, model, fp, task, method, group), row in rows.items():
        orig = rows.get((team, model, fp, task, "original", group))
        if orig is not None:
            for dev in ("cpu", "gpu"):
                mine, ref = row.on(dev), orig.on(dev)
                if ok(mine) and ok(ref) and mine.hardware_key() == ref.hardware_key():
                    row.original[dev] = ref
            if orig.any is not None and orig.any.size is not None:
                row.original.setdefault("size", orig.any)
        row.flags = flags_of(row)
        if orig is not None:
            row.flags += _other_hardware(row, orig)
    # number the protocol groups of each (team, model, task), oldest first; one group is group 0 and not labelled
    groups: dict[tuple, dict[str, int]] = {}
    for row in sorted(rows.values(), key=_first_finished):
        seen = groups.setdefault((row.team, row.model, row.task), {})
        row.group_index = seen.setdefault(row.group, len(seen))
        row.groups_of_model = 0
    for row in rows.values():
        row.groups_of_model = len(groups[(row.team, row.model, row.task)])
    order = {"original": 0}
    return sorted(rows.values(), key=lambda r: (r.team, r.model, r.task, r.group_index, order.get(r.method, 1),
                                                r.method))


def _group_of(rec: Record) -> str:
    """The comparability key; every imported (hand-written) row is a group of its own: its protocol is unknown."""
    if rec.imported is not None:
        return f"imported:{rec.imported.source}:{rec.imported.line}"
    return rec.protocol_key()


def _first_finished(row: Row) -> str:
    return min(str(r.finished or "") for r in (row.cpu, row.gpu) if r is not None)


def _name_homonyms(rows: dict[tuple, Row]) -> None:
    """Two models with one name but other files: show each name with its fingerprint."""
    fps: dict[tuple, set] = {}
    for (team, model, fp, *_rest) in rows:
        fps.setdefault((team, model), set()).add(fp)
    for (team, model, fp, *_rest), row in rows.items():
        if len(fps[(team, model)]) > 1:
            row.model = f"{model} ({fp or 'unknown files'})"


def _other_hardware(row: Row, orig: Row) -> list[str]:
    """A row of the original's group whose record ran on other hardware (CPU/GPU model, threads) gets no Δ: say so."""
    out = []
    for dev in ("cpu", "gpu"):
        mine, ref = row.on(dev), orig.on(dev)
        if not row.is_original and ok(mine) and ok(ref) and mine.hardware_key() != ref.hardware_key():
            out.append(f"other hardware than the original on {dev.upper()}: no Δ")
    return out


def imported(row: Row):
    """The row's imported section when it was typed by hand elsewhere (import-table), else None."""
    rec = row.any
    return rec.imported if rec is not None and rec.status == "imported" else None


def flags_of(row: Row) -> list[str]:
    if imported(row) is not None:
        return [imported(row).note]
    flags: list[str] = []
    for measure in sorted((m for _, m in MEASURES.items()), key=lambda m: m.flag_order):
        flags.extend(measure.flags(row))
    return flags


def protocol_notes(rows: list[Row], lang: str = "en", name: Callable[[str], str] = str) -> list[str]:
    """One line per measured (team, model, device) protocol; ``name`` escapes team and model for the format."""
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
            unit = lat.unit_of_work
            scope = unit.scope() if unit is not None else None
            values = dict(team=name(row.team), model=name(row.model), device=dev.upper(), where=where,
                          threads=rec.runtime.threads, warmup=p.warmup_iters, min_iters=p.min_iters,
                          min_time=f"{p.min_time_s:g}", timer=lat.timer, torch=env.torch, transformers=env.transformers)
            with language(lang):
                if scope:  # a task-level unit over a fixed set of examples (utterances, prompts)
                    line = tr("{team} · {model} · {device}: {where}; {threads} threads; timed unit: one {unit}, "
                              "cycling through {scope}; {warmup} warm-up runs, then ≥ {min_iters} runs and ≥ "
                              "{min_time} s ({timer}); cells are median ± std (ms); torch {torch}, transformers "
                              "{transformers}", unit=translate(unit.label.removeprefix("per ")),
                              scope=translate(scope), **values)
                else:
                    line = tr("{team} · {model} · {device}: {where}; {threads} threads; inputs {shape}; {warmup} "
                              "warm-up runs, then ≥ {min_iters} runs and ≥ {min_time} s ({timer}); cells are median "
                              "± std (ms); torch {torch}, transformers {transformers}", shape=shape, **values)
            if line not in seen:
                seen.add(line)
                notes.append(line)
    with language(lang):
        notes.append(tr("Weights size: bytes of the saved weight files (10^6 bytes = 1 MB) and bits per parameter; "
                        "RAM: peak RSS (VmHWM) during artifact load and timed inference minus RSS after imports; "
                        "VRAM: peak reserved by PyTorch; quality: value [95 % bootstrap interval]; Δ vs the model's "
                        "original measured in the same environment."))
    return notes


def json_rows(rows: list[Row]) -> list[dict]:
    """The rows as plain values (the keys of ``table --format json``; every measure column's value). An imported row
    gives the numbers read from its cells (None where a cell held no unambiguous number)."""
    out = []
    for r in rows:
        item = {"team": r.team, "model": r.model, "task": r.task, "method": r.method}
        imp = imported(r)
        for col in all_columns():
            if imp is None:
                item[col.key] = col.value(r)
            else:
                item[col.key] = imp.cells[col.key].value if col.key in imp.cells else None
        rec = r.any
        metric = rec.quality.primary_value if ok(rec) else None
        item["quality_metric"] = rec.quality.primary if ok(rec) else None
        item["quality_value"] = item.pop("quality")
        item["quality_higher_is_better"] = metric.higher_is_better if metric is not None else None
        if imp is not None and "quality" in imp.cells:
            item["quality_metric"] = imp.cells["quality"].metric
            item["quality_higher_is_better"] = imp.cells["quality"].higher_is_better
        item["flags"] = r.flags
        out.append(item)
    return out


def row_cells(row: Row, cols, multi_team: bool, name: Callable[[str], str] = str) -> list[str]:
    """A row's cells as text: the measures' cells, or an imported row's cells as they were written. ``name``
    escapes the model, team and method names for the output format (report/escape.py)."""
    imp = imported(row)
    if imp is None:
        return [_model_cell(row, multi_team, name), name(row.method)] + [c.cell(row) for c in cols]
    cells = [imp.cells[c.key].text if c.key in imp.cells else "" for c in cols]
    for i, c in enumerate(cols):
        if c.key == "quality":  # the flags' column, as for measured rows
            cells[i] = (cells[i] + " " if cells[i] else "") + f"⚠ {imp.note}"
    return [_model_cell(row, multi_team, name), name(row.method)] + cells


def render(rows: list[Row], fmt: str = "markdown", lang: str = "en", extra_columns: bool = False) -> str:
    if lang not in LANGS:
        raise SqueezebenchError(f"unknown language {lang!r}; use en or ru")
    if fmt == "json":
        return json.dumps(json_rows(rows), indent=1, ensure_ascii=False)
    multi_team = len({r.team for r in rows}) > 1
    multi_group = any(r.groups_of_model > 1 for r in rows)
    cols = _columns(extra_columns)
    with language(lang):
        csv_cells = [[csv_cell(c) for c in row_cells(r, cols, multi_team)] for r in rows] if fmt == "csv" else []
        md_rows = [markdown_row(row_cells(r, cols, multi_team, md_name)) for r in rows] if fmt == "markdown" else []
    head = headers(lang, extra_columns)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(head)
        writer.writerows(csv_cells)
        return buf.getvalue()
    if fmt != "markdown":
        raise SqueezebenchError(f"unknown table format {fmt!r}; use markdown, csv or json")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += md_rows
    if multi_group:
        lines += [""] + [f"- {md_line(n)}" for n in group_notes(rows, lang, md_name)]
    lines += [""] + [f"- {md_line(n)}" for n in protocol_notes(rows, lang, md_name)]
    return "\n".join(lines) + "\n"


def markdown_row(cells: list[str]) -> str:
    """One Markdown table line; every cell on one line with its pipes escaped, so a row is always one row."""
    return "| " + " | ".join(md_cell(c) for c in cells) + " |"


def _model_cell(row: Row, multi_team: bool, name: Callable[[str], str]) -> str:
    text = f"{name(row.model)} [{name(row.team)}]" if multi_team else name(row.model)
    return text + (f" (G{row.group_index + 1})" if row.groups_of_model > 1 else "")


def group_notes(rows: list[Row], lang: str = "en", name: Callable[[str], str] = str) -> list[str]:
    """One line per comparability group: rows of different groups were measured under different protocols, data or
    model files, and no Δ pairs across them."""
    notes: dict[tuple, str] = {}
    for row in rows:
        rec, key = row.any, (row.team, row.model, row.task, row.group_index)
        if row.groups_of_model > 1 and key not in notes and rec is not None:
            what = (f"{rec.imported.note} (from {rec.imported.source}, line {rec.imported.line}); protocol unknown"
                    if rec.imported is not None else rec.protocol_summary())
            notes[key] = f"{name(row.model)} [{name(row.team)}] G{row.group_index + 1}: {what}"
    with language(lang):
        head = tr("Rows of one model in different groups (G1, G2, ...) were measured under different protocols, "
                  "data or model files: Δ only within a group.")
    return [head] + [notes[k] for k in sorted(notes)]


def table(directories: list[Path], fmt: str = "markdown", lang: str = "en", extra_columns: bool = False) -> str:
    rows = collect(directories)
    if not rows:
        raise SqueezebenchError(f"no results found in {', '.join(map(str, directories))}; run `squeezebench run` first")
    return render(rows, fmt, lang, extra_columns)


def update_readme(path: Path, text: str, block: str = "") -> None:
    """Replace the block between ``<!-- squeezebench:table[ NAME] -->`` and its end marker in ``path`` (atomically)."""
    from squeezebench.report.merge import read_text, replace_block, write_atomic

    new = replace_block(read_text(path), text, block, str(path))
    if new is None:
        begin = BEGIN if not block else BEGIN.replace(" -->", f" {block} -->")
        end = END if not block else END.replace(" -->", f" {block} -->")
        raise SqueezebenchError(f"{path} has no {begin} ... {end} block; add the two markers where the table goes")
    write_atomic(path, new)
