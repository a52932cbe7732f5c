"""Hostile names: a newline, pipe, HTML or Markdown link in a model name or team never changes a table's shape in
Markdown, CSV, HTML or a merged README (issue 22, cases 4-6), checked on fixed cases and on seeded random names."""

from __future__ import annotations

import csv
import io
import random
import re

import pytest

from squeezebench.cli import main
from squeezebench.errors import SqueezebenchError
from squeezebench.outdir import check_team
from squeezebench.report.escape import csv_cell, md_cell, md_name
from squeezebench.report.html import render_report
from squeezebench.report.merge import parse_marker, split_cells
from squeezebench.report.table import collect, headers, table
from tests.report.test_merge import course_readme
from tests.report.test_table import record, write

LINK = re.compile(r"(?<!\\)\]\(")  # "](" not escaped: a Markdown link
HOSTILE = ["evil\nmodel", "a|b|c", "<img src=x onerror=alert(1)>", "[click](http://evil.example)", "x\r\n| y | z |",
           "back\\slash`code`", "&lt;script&gt;", "=HYPERLINK(\"http://e\")", "\u2028line\x00sep\x1b[31m"]


def _results(tmp_path, model: str, team: str = "alpha"):
    recs = [record(team, "original", "cpu", 40.0, 4_000_000, 0.90), record(team, "fp16", "cpu", 80.0, 2_000_000, 0.89)]
    for r in recs:
        r["model"]["name"] = model
    write(tmp_path / "r", team, recs)
    return tmp_path / "r"


def _md_rows(md: str) -> list[str]:
    return [line for line in md.splitlines() if line.startswith("|")]


def _check_markdown(md: str, model: str) -> None:
    n = len(headers("en"))
    rows = _md_rows(md)
    assert len(rows) == 4, md  # header, separator, two rows: a name never adds or splits a row
    for line in rows[2:]:
        cells = split_cells(line)
        assert len(cells) == n, line
        assert "<img" not in line and not LINK.search(line) and "<script" not in line
        assert "80.00 ± 0.10" in line or "40.00 ± 0.10" in line  # the measured cells are on the name's line


@pytest.mark.parametrize("model", HOSTILE)
def test_name_keeps_markdown_csv_and_html_tables_whole(tmp_path, model):
    folder = _results(tmp_path, model)
    _check_markdown(table([folder]), model)
    rows = list(csv.reader(io.StringIO(table([folder], fmt="csv"))))
    assert len(rows) == 3 and all(len(r) == len(headers("en")) for r in rows)
    assert all("\n" not in c and "\r" not in c for r in rows for c in r)
    assert not any(r[0].startswith(("=", "+", "@")) for r in rows[1:])
    page = render_report(collect([folder]))
    assert "<img src=x" not in page and page.count("<script") == 1  # only the page's own script


def test_update_with_a_hostile_name_writes_whole_rows_and_stays_stable(tmp_path):
    model = "evil\nmodel | [x](http://e) <b>"
    folder = _results(tmp_path, model)
    readme = tmp_path / "README.md"
    readme.write_text(course_readme(), encoding="utf-8")
    for _ in range(3):  # each update replaces its rows in place: no extra broken line on later updates
        assert main(["table", str(folder), "--lang", "ru", "--update", str(readme)]) == 0
    text = readme.read_text(encoding="utf-8")
    ours = [l for l in text.splitlines() if parse_marker(l)]
    assert len(ours) == 2
    assert all(parse_marker(l)["model"] == model for l in ours)  # the marker keeps the real name
    assert all(len(split_cells(l)) == len(headers("ru")) for l in ours)
    assert not [l for l in text.splitlines() if l.startswith(("model", "| [x]"))]
    assert "<b>" not in text and not LINK.search(text)


@pytest.mark.parametrize("team", ["<img src=x onerror=alert(1)>", "[x](http://e)", "a b", "a|b", "team\n", "a;b"])
def test_team_validation_matches_its_message(team):
    with pytest.raises(SqueezebenchError, match="letters, digits, '-', '_', '.'"):
        check_team(team)


def test_an_old_record_with_a_hostile_team_is_escaped(tmp_path):
    team = "[x](http://e)\n<i>"
    write(tmp_path / "a", team, [record(team, "original", "cpu", 40.0, 4_000_000, 0.90)])
    write(tmp_path / "b", "beta", [record("beta", "original", "cpu", 40.0, 4_000_000, 0.90)])
    md = table([tmp_path / "a", tmp_path / "b"])
    assert len(_md_rows(md)) == 4 and not LINK.search(md) and "<i>" not in md


ALPHABET = "ab|\\[]()<>&`*_!#=+@-\n\r\t\x00\x1b\u2028\u0085 йж"


def test_fuzzed_names_never_break_a_row():
    """Seeded and bounded: 300 random names through the escaping functions."""
    rng = random.Random(22)
    for _ in range(300):
        name = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 24)))
        cell = md_cell(md_name(name))
        line = f"| {cell} | x |"
        assert "\n" not in line and "\r" not in line and "\u2028" not in line
        assert split_cells(line)[-1] == "x" and len(split_cells(line)) == 2, (name, line)
        assert "<" not in cell and "[" not in cell.replace("\\[", "")
        raw = f"| {md_cell(name)} | x |"  # any cell text (an imported row's), not only names
        assert split_cells(raw)[-1] == "x" and len(split_cells(raw)) == 2 and "\n" not in raw, (name, raw)
        assert "\n" not in csv_cell(name) and not csv_cell(name).startswith(("=", "+", "@", "-")) or \
            csv_cell(name).startswith("'")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fuzzed_names_through_the_renderers(tmp_path, seed):
    rng = random.Random(seed)
    name = "m" + "".join(rng.choice(ALPHABET) for _ in range(16))
    _check_markdown(table([_results(tmp_path, name)]), name)
