"""`table --update` and `report -o` on files a user did not mean (issue 22, cases 7 and 10; issue 17's caption)."""

from __future__ import annotations

import json
import os

import pytest

from squeezebench.cli import main
from squeezebench.errors import SqueezebenchError
from squeezebench.report.html import write_report
from squeezebench.report.merge import merge, parse_marker
from squeezebench.report.table import collect
from tests.report.test_merge import ABOVE, BELOW, COURSE_HEADER, OTHERS, course_readme
from tests.report.test_table import record, write

SEP = "|---|---|---|---|---|---|---|---|"


def _rows(tmp_path):
    write(tmp_path / "r", "alpha", [record("alpha", "original", "cpu", 40.0, 4_000_000, 0.90),
                                    record("alpha", "fp16", "cpu", 80.0, 2_000_000, 0.89)])
    return collect([tmp_path / "r"])


def test_a_table_in_a_fenced_code_example_is_not_updated(tmp_path):
    example = "```markdown\n" + COURSE_HEADER + "\n" + SEP + "\n| example | row | | | | | | |\n```\n\n"
    tilde = "~~~\n" + COURSE_HEADER + "\n" + SEP + "\n~~~\n\n"
    comment = "<!-- the old table:\n" + COURSE_HEADER + "\n" + SEP + "\n-->\n\n"
    example += comment
    text = ABOVE + example + tilde + COURSE_HEADER + "\n" + SEP + "\n" + "\n".join(OTHERS) + "\n" + BELOW
    new = merge(text, _rows(tmp_path))
    assert new.startswith(ABOVE + example + tilde)  # the examples are untouched
    lines = new.splitlines()
    ours = [i for i, l in enumerate(lines) if parse_marker(l)]
    assert len(ours) == 2 and lines[ours[0] - 1] == OTHERS[-1]  # appended to the real table


def test_two_matching_tables_are_refused_naming_both(tmp_path):
    table = COURSE_HEADER + "\n" + SEP + "\n" + OTHERS[0] + "\n"
    text = ABOVE + table + "\nsome text\n\n" + table
    with pytest.raises(SqueezebenchError) as err:
        merge(text, _rows(tmp_path), "README.md")
    first = ABOVE.count("\n") + 1
    second = first + 6
    assert str(err.value).startswith(f"README.md has 2 tables with squeezebench's header (line {first} and line "
                                     f"{second});")
    # once this team's rows are in one of them, that one is the team's table: no ambiguity
    once = merge(ABOVE + table + "\nsome text\n", _rows(tmp_path))
    twice = merge(once + "\n" + table, _rows(tmp_path))
    assert twice.count("<!-- sb:team=alpha") == 2 and twice.endswith(table)


def test_a_read_only_readme_is_refused(tmp_path, capsys):
    write(tmp_path / "r", "alpha", [record("alpha", "original", "cpu", 40.0, 4_000_000, 0.90)])
    readme = tmp_path / "README.md"
    readme.write_text(course_readme(), encoding="utf-8")
    readme.chmod(0o444)
    assert main(["table", str(tmp_path / "r"), "--update", str(readme)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"squeezebench: error: {readme} is read-only; make it writable (chmod u+w) or write elsewhere")
    assert readme.read_text(encoding="utf-8") == course_readme()
    assert oct(readme.stat().st_mode & 0o777) == oct(0o444)


@pytest.mark.parametrize("caption", ["*Таблица 1. Результаты команды rocket (bert-base).*",
                                     "Table: team rocket's results", "_Источник: отчёт команды 7_"])
@pytest.mark.parametrize("gap", ["", "\n"])
def test_another_teams_caption_stays_under_its_table(tmp_path, caption, gap):
    """Issue 17: a course README whose shared table ends with a team's caption line."""
    text = ABOVE + COURSE_HEADER + "\n" + SEP + "\n" + "\n".join(OTHERS) + "\n" + gap + caption + "\n" + BELOW
    new = merge(text, _rows(tmp_path))
    assert OTHERS[-1] + "\n" in new
    table_end = new.index(caption)
    assert "<!-- sb:notes" not in new[:table_end]  # the notes block comes after the caption, not between
    assert new.index("<!-- sb:notes team=alpha -->") > table_end
    assert new[table_end - len(gap) - 1:table_end] == "\n" + gap  # the caption still right under its table
    assert merge(new, _rows(tmp_path)) == new  # stable on the next update


def test_report_never_overwrites_a_results_file(tmp_path, capsys):
    write(tmp_path / "r", "alpha", [record("alpha", "original", "cpu", 40.0, 4_000_000, 0.90)])
    run_file = tmp_path / "r" / "alpha" / "run-1.json"
    before = run_file.read_bytes()
    assert main(["report", str(tmp_path / "r"), "-o", str(run_file)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "names a JSON file; the report is HTML" in err[0]
    assert run_file.read_bytes() == before and json.loads(before)["records"]
    with pytest.raises(SqueezebenchError, match="names a JSON file"):
        write_report([tmp_path / "r"], tmp_path / "new.json")
    assert not (tmp_path / "new.json").exists()
    results_like = tmp_path / "results.dat"
    results_like.write_bytes(before)
    with pytest.raises(SqueezebenchError, match="exists and is not a squeezebench report; it is left as it is"):
        write_report([tmp_path / "r"], results_like)
    assert results_like.read_bytes() == before
    other = tmp_path / "notes.txt"
    other.write_text("mine")
    with pytest.raises(SqueezebenchError, match="not a squeezebench report"):
        write_report([tmp_path / "r"], other)
    assert other.read_text() == "mine"
    # a previous report is replaced, and a new name is written
    out = write_report([tmp_path / "r"], tmp_path / "report.html")
    first = out.read_text()
    os.utime(out)
    assert write_report([tmp_path / "r"], out).read_text() == first
    with pytest.raises(SqueezebenchError, match="is a folder"):
        write_report([tmp_path / "r"], tmp_path / "r")


def test_marker_blocks_in_fenced_code_or_inline_are_not_rewritten():
    from squeezebench.report.merge import replace_block

    doc = ("Add `<!-- squeezebench:table -->` markers, e.g.\n\n```\n<!-- squeezebench:table -->\nexample\n"
           "<!-- /squeezebench:table -->\n```\n\n")
    real = "<!-- squeezebench:table -->\r\nold\r\n<!-- /squeezebench:table -->\r\nafter\r\n"
    new = replace_block(doc + real, "| a |\n| b |\n")
    assert new == doc + "<!-- squeezebench:table -->\r\n| a |\r\n| b |\r\n<!-- /squeezebench:table -->\r\nafter\r\n"
    assert replace_block(doc, "x") is None  # only the example: no block to rewrite
    with pytest.raises(SqueezebenchError, match=r"has 2 <!-- squeezebench:table --> blocks \(lines 1 and 4\)"):
        replace_block(real.replace("after", "<!-- squeezebench:table -->\r\n<!-- /squeezebench:table -->"), "x",
                      path="R.md")
