"""import-table: hand-written rows become records marked imported, numbers read with their units, text kept."""

from __future__ import annotations

import json

from squeezebench.cli import main
from squeezebench.report.imports import parse_amount, parse_quality
from squeezebench.report.table import table
from squeezebench.results import iter_records
from tests.report.test_merge import OTHERS, _results, course_readme
from tests.report.test_table import record, write


def test_cells_are_read_with_their_units_or_kept_as_text():
    c = parse_amount("327.32Mb", "MB")
    assert (c.value, c.unit, c.written_unit, c.text) == (327.32, "MB", "Mb", "327.32Mb")
    c = parse_amount("31.9ms (Tesla T4)", "ms")
    assert (c.value, c.remark) == (31.9, "Tesla T4")
    assert parse_amount("1.2 s", "ms").value == 1200.0
    assert parse_amount("1,5 GB", "MB").value == 1500.0
    assert parse_amount("44.05 ± 2.07", "ms").value == 44.05  # no unit: the header's
    for text in ("-", "—", "fast", "12 parsecs", "about 30"):
        c = parse_amount(text, "ms")
        assert c.value is None and c.text == text
    q = parse_quality("PPL 29.4")
    assert (q.metric, q.value, q.higher_is_better) == ("perplexity", 29.4, False)
    q = parse_quality("Accuracy: 91%")
    assert (q.metric, q.value, q.unit) == ("accuracy", 0.91, "fraction")
    assert parse_quality("0.91").value is None  # no metric named: the number means nothing on its own
    assert parse_quality("acc 0.9 / ppl 12").value is None  # two metrics: ambiguous


def test_import_table_marks_rows_and_the_table_never_pairs_a_delta_with_them(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(course_readme(), encoding="utf-8")
    ours = _results(tmp_path)
    # a row of ours in the README already: it is not imported back
    assert main(["table", str(ours), "--update", str(readme)]) == 0
    out = tmp_path / "imported"
    assert main(["import-table", str(readme), "--team", "course", "--out", str(out)]) == 0
    recs = list(iter_records([out]))
    assert len(recs) == len(OTHERS)
    assert all(r.status == "imported" and not r.ok and r.imported.note == "imported, not measured by squeezebench"
               for r in recs)
    gpt2 = next(r for r in recs if r.model.name.startswith("gpt2"))
    assert gpt2.imported.cells["weights_size_mb"].value == 327.32
    assert gpt2.imported.cells["gpu_ms"].remark == "Tesla T4" and gpt2.imported.cells["cpu_ms"].value == 1200.0
    assert gpt2.imported.line == course_readme().splitlines().index(OTHERS[2]) + 1

    # an own "original" of the same model name and team as an imported row: no Δ pairs across them
    own = record("course", "int8", "cpu", 10.0, 1_000_000, 0.5)
    own["model"]["name"] = "bert-base (team rocket)"
    write(tmp_path / "own", "course", [own])
    rows = json.loads(table([out, tmp_path / "own"], fmt="json"))
    mine = next(r for r in rows if r["method"] == "int8" and r["cpu_ms"] == 10.0)
    assert not any("original" in f for f in mine["flags"])
    own_line = next(l for l in table([out, tmp_path / "own"]).splitlines() if "| int8 | 1.0 MB" in l)
    assert "× of original" not in own_line and "%" not in own_line.split("|")[3]  # no Δ vs the imported original
    imported = [r for r in rows if "imported, not measured by squeezebench" in r["flags"]]
    assert len(imported) == 3
    bert = next(r for r in imported if r["method"] == "original")
    assert bert["cpu_ms"] == 120.5 and bert["gpu_ms"] == 31.9 and bert["quality_value"] == 0.91
    assert bert["quality_metric"] == "accuracy" and bert["quality_higher_is_better"] is True
    md = table([out])
    line = next(l for l in md.splitlines() if "gpt2" in l)
    assert "| 327.32Mb | 1.2 s | 31.9ms (Tesla T4) |" in line and "⚠ imported, not measured by squeezebench" in line
    assert "× of original" not in md
