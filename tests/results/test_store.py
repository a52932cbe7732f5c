import json

import pytest

from squeezebench.errors import SqueezebenchError
from squeezebench.results.store import SCHEMA_VERSION, RunFile, iter_records, read_run


def test_run_file_is_rewritten_after_each_record(tmp_path):
    rf = RunFile(tmp_path / "t" / "run-1.json", {"team": "t"})
    rf.add({"a": 1})
    rf.add({"a": 2})
    doc = read_run(tmp_path / "t" / "run-1.json")
    assert doc["schema_version"] == SCHEMA_VERSION and [r["a"] for r in doc["records"]] == [1, 2]
    assert [r["a"] for r in iter_records([tmp_path])] == [1, 2]


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
