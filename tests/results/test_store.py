import json

import pytest

from squeezebench.errors import SqueezebenchError
from squeezebench.results.store import SCHEMA_VERSION, RunFile, iter_records, read_run


def test_run_file_is_rewritten_after_each_record(tmp_path):
    rf = RunFile(tmp_path / "t" / "run-1.json", {"team": "t"})
    for method in ("original", "fp16"):
        rf.add({"model": {"name": "m"}, "task": {"name": "causal-lm"}, "method": method, "status": "skipped"})
    doc = read_run(tmp_path / "t" / "run-1.json")
    assert doc.schema_version == SCHEMA_VERSION and [r.method for r in doc.records] == ["original", "fp16"]
    assert [r.method for r in iter_records([tmp_path])] == ["original", "fp16"]


def test_newer_schema_is_refused_with_what_to_do(tmp_path):
    p = tmp_path / "run-x.json"
    p.write_text(json.dumps({"schema_version": SCHEMA_VERSION + 1, "records": []}))
    with pytest.raises(SqueezebenchError, match="newer than this squeezebench reads.*upgrade"):
        read_run(p)


def test_invalid_json_and_missing_folder(tmp_path):
    p = tmp_path / "run-bad.json"
    p.write_text("{oops")
    with pytest.raises(SqueezebenchError, match="not valid JSON"):
        read_run(p)
    with pytest.raises(SqueezebenchError, match="does not exist"):
        list(iter_records([tmp_path / "nope"]))


def test_a_record_with_a_wrong_field_type_is_named_and_skipped(tmp_path, caplog):
    good = {"model": {"name": "m"}, "task": {"name": "t"}, "method": "original", "status": "ok"}
    (tmp_path / "run-good.json").write_text(json.dumps({"schema_version": SCHEMA_VERSION, "records": [good]}))
    bad = dict(good, latency={"median": "fast"})
    (tmp_path / "run-bad.json").write_text(json.dumps({"schema_version": SCHEMA_VERSION, "records": [bad]}))
    with pytest.raises(SqueezebenchError, match=r"run-bad.json: field records.0.latency.median"):
        read_run(tmp_path / "run-bad.json")
    assert [r.method for r in iter_records([tmp_path])] == ["original"]
    assert "run-bad.json" in caplog.text
