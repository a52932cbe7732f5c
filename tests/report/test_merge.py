"""Merging one team's rows into the course's shared README table: other lines byte for byte, this team's replaced."""

from __future__ import annotations

import json

import pytest

from squeezebench.cli import main
from squeezebench.errors import SqueezebenchError
from squeezebench.report.merge import find_table, merge, parse_marker, split_cells
from squeezebench.report.table import collect
from tests.report.test_table import _with, record, write

COURSE_HEADER = ("| Модель | Метод | Размер весов | Время инференса (CPU, ms) | Время инференса (GPU, ms) | "
                 "Использование RAM (MB) | Использование VRAM (MB) | Качество (PPL, BLEU, Accuracy) |")
ABOVE = "# Курс: сжатие моделей\n\nКаждая команда добавляет свои строки в таблицу ниже.\n\n"
OTHERS = [
    "| bert-base (team rocket) | original | 438Mb | 120.5ms | 31.9ms (Tesla T4) | 1200 | 900 | Accuracy 0.91 |",
    "| bert-base (team rocket) | int8 | 110.1Mb | 60ms | - | 700 | - | Accuracy: 0.89 |",
    "| gpt2 (команда 7) | original | 327.32Mb | 1.2 s | 31.9ms (Tesla T4) | 1500MB | 1100MB | PPL 29.4 |",
]
BELOW = "\n## Как измеряли\n\nТекст под таблицей | с вертикальной чертой.\n"


def course_readme(header: str = COURSE_HEADER, sep: str = "|---|---|---|---|---|---|---|---|") -> str:
    return ABOVE + header + "\n" + sep + "\n" + "\n".join(OTHERS) + "\n" + BELOW


def _results(tmp_path, name="r", cpu_fp16=80.0):
    write(tmp_path / name, "alpha", [
        record("alpha", "original", "cpu", 40.0, 4_000_000, 0.90),
        record("alpha", "fp16", "cpu", cpu_fp16, 2_000_000, 0.89),
    ])
    return tmp_path / name


def _without_ours(text: str) -> str:
    """The file with this team's rows and notes block taken out: what must equal the original byte for byte."""
    out, skip = [], False
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.startswith("<!-- sb:notes "):
            skip = True
            if out and out[-1] == "\n":
                out.pop()  # the blank line inserted before the block
        if not skip and parse_marker(line) is None:
            out.append(line)
        if line.startswith("<!-- /sb:notes "):
            skip = False
    return "".join(out)


def test_update_twice_keeps_others_byte_for_byte_and_replaces_ours(tmp_path, capsys):
    readme = tmp_path / "README.md"
    original = course_readme()
    readme.write_text(original, encoding="utf-8")
    first = _results(tmp_path, "first", cpu_fp16=80.0)
    assert main(["table", str(first), "--lang", "ru", "--update", str(readme)]) == 0
    once = readme.read_text(encoding="utf-8")
    assert _without_ours(once) == original
    ours = [l for l in once.splitlines() if parse_marker(l)]
    assert len(ours) == 2 and "fp16" in ours[1] and "80.00 ± 0.10" in ours[1]
    assert once.index(OTHERS[-1]) < once.index(ours[0])  # appended after the others' rows
    assert "<!-- sb:notes team=alpha -->" in once and "cpu-x; потоков: 2" in once  # the protocol line, in Russian
    assert "× от оригинала" in ours[1] and "of original" not in once  # the cells too

    # a second update with newer results: rows replaced in place, not duplicated; the rest unchanged
    second = _results(tmp_path, "second", cpu_fp16=70.0)
    assert main(["table", str(second), "--lang", "ru", "--update", str(readme)]) == 0
    twice = readme.read_text(encoding="utf-8")
    assert _without_ours(twice) == original
    ours2 = [l for l in twice.splitlines() if parse_marker(l)]
    assert len(ours2) == 2 and "70.00 ± 0.10" in ours2[1] and "80.00" not in twice
    assert twice.count("<!-- sb:notes team=alpha -->") == 1
    # the same results again: nothing changes
    assert main(["table", str(second), "--update", str(readme)]) == 0
    assert readme.read_text(encoding="utf-8") == twice


def test_dry_run_prints_the_diff_and_writes_nothing(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(course_readme(), encoding="utf-8")
    before = readme.read_bytes()
    assert main(["table", str(_results(tmp_path)), "--update", str(readme), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"--- a/{readme}\n+++ b/{readme}\n") and "\n+| <!-- sb:team=alpha;" in out
    assert readme.read_bytes() == before


@pytest.mark.parametrize("header,sep", [
    (COURSE_HEADER.replace(" | ", "|").replace("| ", "|").replace(" |", "|"), "|:---|:---:|---:|---|---|---|---|---|"),
    ("|Model|Method|Weights size|CPU inference (ms)|GPU inference (ms)|RAM (MB)|VRAM (MB)|Quality|",
     "| --- | --- | --- | --- | --- | --- | --- | --- |"),
])
def test_header_found_without_spaces_with_colons_and_in_english(tmp_path, header, sep):
    text = course_readme(header, sep)
    found = find_table(text.splitlines())
    assert found is not None and found.end - found.header == 2 + len(OTHERS)
    merged = merge(text, collect([_results(tmp_path)]))
    assert _without_ours(merged) == text


def test_crlf_and_markers_keep_their_paths(tmp_path):
    crlf = course_readme().replace("\n", "\r\n")
    merged = merge(crlf, collect([_results(tmp_path)]))
    assert _without_ours(merged.replace("\r\n", "\n")) == course_readme()
    assert "\r\n" in merged and "\n" not in merged.replace("\r\n", "")
    readme = tmp_path / "README.md"
    readme.write_text("x\n<!-- squeezebench:table -->\nold\n<!-- /squeezebench:table -->\n" + course_readme())
    assert main(["table", str(_results(tmp_path)), "--update", str(readme)]) == 0
    text = readme.read_text()
    assert "old" not in text and text.endswith(course_readme())  # markers win; the course table is untouched


def test_no_table_is_a_clear_error(tmp_path):
    with pytest.raises(SqueezebenchError, match="no table with squeezebench's header"):
        merge("# nothing here\n", collect([_results(tmp_path)]))


def test_different_thread_counts_merge_into_groups_without_cross_deltas(tmp_path):
    one = tmp_path / "t1"
    two = tmp_path / "t2"
    write(one, "alpha", [_with(record("alpha", "original", "cpu", 40.0, 4_000_000, 0.90), {"threads": 1}, threads=1),
                         _with(record("alpha", "fp16", "cpu", 80.0, 2_000_000, 0.89), {"threads": 1}, threads=1)])
    write(two, "alpha", [_with(record("alpha", "original", "cpu", 25.0, 4_000_000, 0.90), {"threads": 2}, threads=2),
                         _with(record("alpha", "int8", "cpu", 20.0, 1_000_000, 0.88), {"threads": 2}, threads=2)])
    merged = merge(course_readme(), collect([one, two]))
    assert _without_ours(merged) == course_readme()
    ours = {split_cells(l)[1]: l for l in merged.splitlines() if parse_marker(l)}
    assert len([l for l in merged.splitlines() if parse_marker(l)]) == 4
    # Δ only within a thread count: fp16 (1 thread) vs the 1-thread original 40 ms, int8 vs the 2-thread 25 ms
    assert "0.50× от оригинала" in ours["fp16"] and "1.25× от оригинала" in ours["int8"]  # the course table is in Russian
    assert "(G1)" in ours["fp16"] and "(G2)" in ours["int8"]
    assert "threads=1" in merged and "threads=2" in merged  # the group lines say what differs
    assert "alpha · m · CPU: cpu-x; потоков: 1" in merged and "alpha · m · CPU: cpu-x; потоков: 2" in merged


def test_same_protocol_other_hardware_gets_no_delta_and_says_so(tmp_path):
    orig = record("alpha", "original", "cpu", 40.0, 4_000_000, 0.90)
    other = record("alpha", "fp16", "cpu", 20.0, 2_000_000, 0.89)
    other["environment"]["cpu"] = "another-cpu"
    write(tmp_path, "alpha", [orig, other])
    rows = json.loads(__import__("squeezebench.report.table", fromlist=["table"]).table([tmp_path], fmt="json"))
    fp16 = next(r for r in rows if r["method"] == "fp16")
    assert "other hardware than the original on CPU: no Δ" in fp16["flags"]
