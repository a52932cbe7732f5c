"""One small search through the real runner on a tiny model: every trial is an ordinary record in --out (the table
shows them), the state is written, and a second call resumes without measuring anything again."""

from __future__ import annotations

import json

from squeezebench import cli
from squeezebench.results import iter_records


def test_search_through_the_runner(tmp_path, tiny_bert_dir, topic_csv, capsys):
    out = tmp_path / "out"
    argv = ["search", "--model", str(tiny_bert_dir), "--task", "sentence-embedding", "--dataset", f"csv:{topic_csv}",
            "--max-drop", "100pt", "--include", "int8-dynamic", "fp16", "--trials", "2", "--budget", "20m",
            "--screen-limit", "30", "--screen-min-iters", "2", "--eta", "1", "--out", str(out), "--team", "s",
            "--batch-size", "1", "--seq-len", "16", "--eval-batch-size", "8", "--warmup", "1", "--min-iters", "3",
            "--min-time", "0", "--max-time", "5"]
    code = cli.main(argv)
    printed = capsys.readouterr().out
    state = json.loads((out / "search.json").read_text())
    trials = state["trials"]
    assert len(trials) == 2 and {t["status"] for t in trials} <= {"screened", "full", "failed"}
    assert state["baseline"]["screen"]["status"] == "ok" and state["baseline"]["full"]["status"] == "ok"
    records = list(iter_records([out / "s"]))
    keys = {r.key for r in records if r.ok}
    for t in trials:  # every measured trial is an ordinary ok record of the run files
        for rung in ("screen", "full"):
            if t.get(rung) and t[rung]["status"] == "ok":
                assert set(t[rung]["record_keys"]) <= keys
    assert {r.protocol.limit for r in records} == {30, None}  # the screening rung's subset and the full data
    assert all(r.quality.primary_value.per_example is not None for r in records if r.ok)
    if code == 0:  # with a 100pt tolerance a faster variant is recommended; else the line says why not
        assert "recommended:" in printed and "front" in printed
    else:
        assert "no recommendation:" in printed
    html = (out / "search-report.html").read_text()
    assert '<section class="search">' in html and ("recommended:" in html or "no recommendation:" in html)
    n_records = len(records)
    assert cli.main(argv) == code  # resumed: the state and the records stand in, nothing is measured again
    assert len(list(iter_records([out / "s"]))) == n_records
    other = list(argv)
    other[other.index("--max-drop") + 1] = "2pt"
    assert cli.main(other) == 2  # the state in --out belongs to a search with other settings: one line
