"""`squeezebench table` over a results folder full of damaged run files: a seeded mutator derives them from a
valid record (truncation, type changes, deep nesting, huge sizes, future and string schema versions, random bytes).
Every bad file costs one warning line naming it; the valid run beside them is still shown; no traceback."""

from __future__ import annotations

import json
import logging
import random
import subprocess
import sys
from pathlib import Path

import pytest

from squeezebench.cli import main
from squeezebench.results import SCHEMA_VERSION

GOOD = {"schema_version": SCHEMA_VERSION, "team": "t", "records": [{
    "team": "t", "model": {"name": "good-model"}, "task": {"name": "sentence-embedding"}, "method": "original",
    "device": "cpu", "status": "ok", "finished": "2026-01-01T00:00:00",
    "protocol": {"warmup_iters": 5, "min_iters": 30, "min_time_s": 3.0},
    "build": {"status": "ok", "size": {"weights_bytes": 4000000, "weights_mb": 4.0, "bits_per_weight": 32.0}},
    "latency": {"median": 12.5, "std": 0.5, "timer": "perf_counter"}, "input_shapes": {"input_ids": [1, 128]},
    "memory": {"ram_mb": 100.0}, "runtime": {"name": "pytorch-eager", "threads": 1},
    "environment": {"hostname": "h", "cpu": "c", "torch_threads": 1, "torch": "2.13", "transformers": "5"},
    "quality": {"primary": "accuracy", "metrics": {"accuracy": {"value": 0.9, "unit": "fraction",
                                                                "ci95": [0.88, 0.92]}}}}]}


def _paths(doc, prefix=()):
    """Every (path, value) in a JSON document."""
    yield prefix, doc
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for k, v in items:
        yield from _paths(v, prefix + (k,))


def _set(doc, path, value):
    for k in path[:-1]:
        doc = doc[k]
    doc[path[-1]] = value


def mutants(seed: int = 20261129, count: int = 40) -> list[tuple[str, bytes]]:
    """(what was done, file bytes) for ``count`` damaged variants of GOOD plus fixed hostile cases."""
    rng = random.Random(seed)
    text = json.dumps(GOOD)
    out = [("truncated", text[: len(text) // 2].encode()),
           ("200k nested brackets", b"[" * 200_000),
           ("random bytes", rng.randbytes(2_000_000)),
           ("not an object", b"[1, 2, 3]"),
           ("future schema", json.dumps(dict(GOOD, schema_version=SCHEMA_VERSION + 5)).encode()),
           ("string schema", json.dumps(dict(GOOD, schema_version="1")).encode()),
           ("no schema", json.dumps({"records": GOOD["records"]}).encode()),
           ("huge string", json.dumps(dict(GOOD, records=[dict(GOOD["records"][0], method="x" * 3_000_000)])).encode()),
           ("latin-1 bytes", text.replace("good-model", "gööd").encode("latin-1"))]
    leaves = [p for p, v in _paths(GOOD) if p and not isinstance(v, (dict, list))]
    replacements = [None, "text", -1, 1e308, [], {}, True, [[[[[]]]]]]
    for i in range(count):
        doc = json.loads(text)
        path = rng.choice(leaves)
        value = rng.choice(replacements)
        _set(doc, path, value)
        out.append((f"{'.'.join(map(str, path))} = {value!r}", json.dumps(doc).encode()))
    return out


@pytest.fixture
def fuzzed(tmp_path) -> Path:
    folder = tmp_path / "results" / "t"
    folder.mkdir(parents=True)
    (folder / "run-0-good.json").write_text(json.dumps(GOOD))
    for i, (_, data) in enumerate(mutants()):
        (folder / f"run-{i + 1:03d}.json").write_bytes(data)
    return tmp_path / "results"


def test_table_over_a_fuzzed_folder_keeps_the_good_run_and_names_each_bad_file(fuzzed, capsys, caplog):
    caplog.set_level(logging.WARNING)
    assert main(["table", str(fuzzed), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    good = [r for r in rows if r["model"] == "good-model" and r["method"] == "original"]
    assert good and good[0]["cpu_ms"] == 12.5 and good[0]["quality_value"] == 0.9
    skipped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped:")]
    # every skipped file is named, in one line
    assert all("\n" not in m and "run-" in m for m in skipped)
    named = {m.split("run-")[1].split(".json")[0] for m in skipped}
    for n in ("001", "002", "003", "004", "005", "006", "007"):  # truncated ... no schema: always refused
        assert n in named, n


def test_the_cli_prints_no_traceback(fuzzed):
    proc = subprocess.run([sys.executable, "-m", "squeezebench", "table", str(fuzzed)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert "good-model" in proc.stdout
    assert all(line.startswith("squeezebench: WARNING: skipped:") for line in proc.stderr.splitlines() if line)


def test_a_run_into_a_fuzzed_folder_is_not_blocked(fuzzed, tiny_csv_and_model, tmp_path):
    """Resume reads the team folder: bad files there must not stop a new run."""
    from squeezebench.runner import RunConfig, Runner
    from tests.conftest import fast_protocol

    csv_path = tiny_csv_and_model
    config = RunConfig(models=["python:tests.helpers_models:tiny_cnn"], task="image-classification",
                       methods=["original"], dataset=f"image-dir:{csv_path}", out=fuzzed, team="t",
                       protocol=fast_protocol())
    records = Runner(config).run()
    assert [r.status for r in records] == ["ok"]


@pytest.fixture
def tiny_csv_and_model(image_dir):
    return image_dir
