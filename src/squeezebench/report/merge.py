"""Merge one team's rows into a markdown table that others own (the course's shared README).

The table is found by its header (English, Russian, or the course's own header: cells compared without spaces and
alignment colons). Rows written by squeezebench carry an invisible marker in their first cell,
``<!-- sb:team=T;model=M;method=X;devices=cpu+gpu;group=K -->`` (values URL-quoted; ``group`` is the protocol key,
so rows of two protocols stay two rows). An update replaces the rows whose marker matches one of the rows being
written, in place; appends the others after this team's last row (or at the end of the table) in the table's order;
and leaves every other line as it was, byte for byte: other teams' hand-written rows are never parsed, reformatted or
removed. Each team's protocol lines go in a ``<!-- sb:notes team=T -->`` block after the table and its caption
(replaced on the next update). Tables and markers inside fenced code are examples, not targets; two matching tables
are refused unless exactly one holds this team's rows; a read-only file is refused. Names are escaped by
report/escape.py. A README with ``<!-- squeezebench:table -->`` markers keeps the older behaviour: the block between
the markers is rewritten whole. Files are written atomically (a temporary file, then ``os.replace``).
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional
from urllib.parse import quote, unquote

from squeezebench.atomic import atomic_write_text
from squeezebench.errors import SqueezebenchError
from squeezebench.i18n import language
from squeezebench.measures import Row
from squeezebench.report.escape import md_line, md_name
from squeezebench.report.table import (BEGIN, END, LANGS, _columns, group_notes, headers, imported, markdown_row,
                                       protocol_notes, row_cells)

MARK = re.compile(r"<!-- sb:([^>]*?) -->\s*")
IDENTITY = ("team", "model", "method", "devices", "group")


@dataclass(frozen=True)
class Found:
    """A table in a file's lines: its language, header line index and the index one past its last row."""

    lang: str
    header: int
    end: int


def split_cells(line: str) -> list[str]:
    """The cells of a markdown table line (outer pipes dropped, ``\\|`` kept inside a cell), stripped."""
    text = line.strip()
    if text.startswith("|"):
        text = text[1:]
    if text.endswith("|") and not text.endswith("\\|"):
        text = text[:-1]
    return [c.strip() for c in re.split(r"(?<!\\)\|", text)]


def _norm(cell: str) -> str:
    return re.sub(r"\s+", "", cell).casefold()


def _is_separator(line: str, n: int) -> bool:
    cells = split_cells(line)
    return len(cells) == n and all(re.fullmatch(r":?-+:?", c.replace(" ", "")) for c in cells)


FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


def _outside_fences(lines: list[str]) -> list[bool]:
    """For each line, whether it is outside a fenced code block and a multi-line HTML comment (a table in a code
    example or a commented-out table is not the table)."""
    out, fence, comment = [], None, False
    for line in lines:
        if comment or (fence is None and line.lstrip().startswith("<!--") and "-->" not in line):
            comment = "-->" not in line if comment else True
            out.append(False)
            continue
        m = FENCE.match(line)
        if fence is None and m:
            fence = m.group(1)
            out.append(False)
            continue
        if fence is not None:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) and not line[m.end():].strip():
                fence = None
            out.append(False)
            continue
        out.append(True)
    return out


def find_tables(lines: list[str]) -> list[Found]:
    """Every table outside fenced code whose header is squeezebench's course header in one of LANGS."""
    wanted = {lang: [_norm(h) for h in headers(lang)] for lang in LANGS}
    outside = _outside_fences(lines)
    found = []
    for i, line in enumerate(lines[:-1]):
        if not outside[i] or not line.lstrip().startswith("|"):
            continue
        cells = [_norm(c) for c in split_cells(line)]
        for lang, head in wanted.items():
            if cells == head and _is_separator(lines[i + 1], len(head)):
                end = i + 2
                while end < len(lines) and lines[end].lstrip().startswith("|"):
                    end += 1
                found.append(Found(lang, i, end))
                break
    return found


def find_table(lines: list[str], teams: tuple[str, ...] = (), path: str = "the file") -> Optional[Found]:
    """The one course table; with several, the one that already holds rows of ``teams``, else a refusal naming
    them all (updating the first without a word wrote into the wrong table)."""
    found = find_tables(lines)
    if len(found) > 1:
        mine = [f for f in found if any((parse_marker(l) or {}).get("team") in teams for l in lines[f.header:f.end])]
        if len(mine) == 1:
            return mine[0]
        where = " and ".join(f"line {f.header + 1}" for f in found)
        raise SqueezebenchError(f"{path} has {len(found)} tables with squeezebench's header ({where}); keep one, or "
                                f"mark the one to update with {BEGIN} ... {END}")
    return found[0] if found else None


def identity(row: Row) -> dict[str, str]:
    devices = "+".join(d for d in ("cpu", "gpu") if row.on(d) is not None)
    return {"team": row.team, "model": row.model, "method": row.method, "devices": devices, "group": row.group}


def marker(ident: dict[str, str]) -> str:
    return "<!-- sb:" + ";".join(f"{k}={quote(ident[k], safe='')}" for k in IDENTITY) + " -->"


def parse_marker(line: str) -> Optional[dict[str, str]]:
    """The identity in a row's marker, or None for a row squeezebench did not write."""
    if not line.lstrip().startswith("|"):
        return None
    cells = split_cells(line)
    m = MARK.match(cells[0]) if cells else None
    if m is None:
        return None
    pairs = (p.split("=", 1) for p in m.group(1).split(";") if "=" in p)
    return {k: unquote(v) for k, v in pairs}


def _key(ident: dict[str, str]) -> tuple:
    return tuple(ident.get(k, "") for k in IDENTITY)


def row_line(row: Row, lang: str) -> str:
    with language(lang):
        line = markdown_row(row_cells(row, _columns(False), multi_team=True, name=md_name))
    return "| " + marker(identity(row)) + " " + line[2:]  # the marker's URL-quoted values need no escaping


def notes_block(team: str, rows: list[Row], lang: str) -> list[str]:
    ident = f"team={quote(team, safe='')}"
    body = group_notes(rows, lang, md_name) if any(r.groups_of_model > 1 for r in rows) else []
    body += protocol_notes(rows, lang, md_name)
    return [f"<!-- sb:notes {ident} -->"] + [f"- {md_line(n)}" for n in body] + [f"<!-- /sb:notes {ident} -->"]


def merge(content: str, rows: list[Row], path: str = "the file") -> str:
    """``content`` with ``rows`` merged into its course table (see the module docstring). Imported rows (typed by
    hand elsewhere) are never written back."""
    rows = [r for r in rows if imported(r) is None]
    if not rows:
        raise SqueezebenchError("no measured rows to merge (imported rows are not written back); run squeezebench first")
    lines = content.splitlines(keepends=True)
    teams = tuple(sorted({r.team for r in rows}))
    found = find_table([l.rstrip("\r\n") for l in lines], teams, path)
    if found is None:
        raise SqueezebenchError(
            "no table with squeezebench's header (en or ru, e.g. `| Модель | Метод | Размер весов | ... |`) and no "
            f"{BEGIN} markers; add the header line (see `squeezebench table --lang ru`) or the markers")
    nl = "\r\n" if lines[found.header].endswith("\r\n") else "\n"
    new = {_key(identity(r)): row_line(r, found.lang) + nl for r in rows}
    out = lines[:found.header + 2]
    last_of_team = None
    for line in lines[found.header + 2:found.end]:
        ident = parse_marker(line)
        key = _key(ident) if ident else None
        if key in new:
            out.append(new.pop(key))
        else:
            out.append(line if line.endswith(("\n", "\r")) else line + nl)
        if ident and ident.get("team") in teams:
            last_of_team = len(out)
    at = last_of_team if last_of_team is not None else len(out)
    out[at:at] = list(new.values())  # dicts keep the rows' order: new rows appended in the table's order
    text = "".join(out) + "".join(lines[found.end:])
    return _put_notes(text, teams, rows, found.lang, nl)


CAPTION = re.compile(r"^\s*(Table|Таблица|Табл\.|Caption|Подпись)\b|^\s*([*_]).+\2\s*$", re.I)


def _after_caption(lines: list[str], end: int) -> int:
    """The index after the table's caption: lines written right under the table (its paragraph), and a caption line
    (``Table: ...``, ``Таблица 1. ...``, or a line in italics) after one blank line. A team's notes never go
    between another team's table and its caption."""
    while end < len(lines) and lines[end].strip() and not lines[end].startswith("<!-- sb:notes "):
        end += 1
    j = end
    while j < len(lines) and not lines[j].strip():
        j += 1
    if j < len(lines) and j - end <= 1 and CAPTION.match(lines[j]):
        end = j + 1
    return end


def _put_notes(text: str, teams: tuple[str, ...], rows: list[Row], lang: str, nl: str) -> str:
    """Replace each team's notes block, or insert it after the table and its caption (after a blank line)."""
    for team in teams:
        block = nl.join(notes_block(team, [r for r in rows if r.team == team], lang))
        ident = re.escape(f"team={quote(team, safe='')}")
        pattern = re.compile(rf"<!-- sb:notes {ident} -->.*?<!-- /sb:notes {ident} -->", re.S)
        if pattern.search(text):
            text = pattern.sub(lambda _: block, text, count=1)
            continue
        lines = text.splitlines(keepends=True)
        end = _after_caption(lines, find_table([l.rstrip("\r\n") for l in lines], teams).end)
        while True:  # after the notes blocks of teams merged before, in the order they came
            j = end
            while j < len(lines) and lines[j].strip() == "":
                j += 1
            if j >= len(lines) or not lines[j].startswith("<!-- sb:notes "):
                break
            end = next((i for i in range(j, len(lines)) if lines[i].startswith("<!-- /sb:notes ")), j) + 1
        if end and not lines[end - 1].endswith(("\n", "\r")):
            lines[end - 1] += nl
        lines[end:end] = [nl, block + nl]
        text = "".join(lines)
    return text


def replace_block(content: str, text: str, block: str = "", path: str = "the file") -> Optional[str]:
    """The older path: ``content`` with the ``<!-- squeezebench:table[ NAME] -->`` block rewritten, or None when the
    file has no such block. Markers count on lines of their own outside fenced code (a README that shows the
    markers in an example keeps it); two blocks of one name are refused."""
    begin = BEGIN if not block else BEGIN.replace(" -->", f" {block} -->")
    end = END if not block else END.replace(" -->", f" {block} -->")
    lines = content.splitlines(keepends=True)
    outside = _outside_fences([l.rstrip("\r\n") for l in lines])
    starts = [i for i, l in enumerate(lines) if outside[i] and l.strip() == begin]
    if len(starts) > 1:
        raise SqueezebenchError(f"{path} has {len(starts)} {begin} blocks (lines "
                                f"{' and '.join(str(i + 1) for i in starts)}); keep one")
    stop = next((j for j in range(starts[0] + 1, len(lines)) if outside[j] and lines[j].strip() == end),
                None) if starts else None
    if stop is None:
        return None
    nl = "\r\n" if lines[starts[0]].endswith("\r\n") else "\n"
    tail = lines[stop][len(lines[stop].rstrip("\r\n")):]
    body = nl.join(text.rstrip().split("\n"))
    return "".join(lines[:starts[0]]) + f"{begin}{nl}{body}{nl}{end}{tail}" + "".join(lines[stop + 1:])


def diff(path: Path, old: str, new: str) -> str:
    return "".join(difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                        fromfile=f"a/{path}", tofile=f"b/{path}"))


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` next to ``path`` and rename it over ``path`` (readers never see half a file). A file its owner
    made read-only (mode 444) is refused: the rename would replace it although the user cannot write it."""
    path = Path(path)
    if path.exists() and (not os.access(path, os.W_OK) or not path.stat().st_mode & 0o222):
        raise SqueezebenchError(f"{path} is read-only; make it writable (chmod u+w) or write elsewhere")
    atomic_write_text(path, text)


def read_text(path: Path) -> str:
    if not path.is_file():
        raise SqueezebenchError(f"{path} does not exist; pass the README to update")
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise SqueezebenchError(f"{path} is not UTF-8 text; save it as UTF-8 first") from None
