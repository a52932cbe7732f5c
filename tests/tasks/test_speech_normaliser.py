"""Same inputs, same WER: Whisper's spelling map is a dependency of the speech extra, required to score Whisper, and
its identity is part of the comparability key, so records normalised with different maps never pair."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from squeezebench.errors import SqueezebenchError
from squeezebench.models import whisper_ct2
from squeezebench.report.table import collect
from squeezebench.results.schema import Record
from squeezebench.results.store import RunFile
from squeezebench.tasks import TASKS

ROOT = Path(__file__).resolve().parents[2]


def test_the_spelling_map_is_a_pinned_dependency_of_the_speech_extra():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    pin = re.search(r"whisper-normalizer==[\d.]+", (ROOT / "Makefile").read_text()).group(0)
    assert pin in extras["speech"] and pin in extras["test"]  # the same version the Makefile installs


def test_spelling_map_and_its_identity():
    pytest.importorskip("whisper_normalizer")
    from importlib.metadata import version

    mapping, identity = whisper_ct2.spelling_map()
    assert mapping["counselled"] == "counseled" and len(mapping) > 1000
    assert re.fullmatch(rf"whisper-normalizer {re.escape(version('whisper-normalizer'))} english\.json "
                        r"sha256:[0-9a-f]{12}", identity)
    assert whisper_ct2.spelling_map_identity() == identity
    assert TASKS.get("speech-recognition").describe()["spelling_map"] == identity


def test_without_the_package_whisper_is_not_scored_and_the_identity_says_none(monkeypatch):
    def missing(rel):
        raise SqueezebenchError("package 'whisper_normalizer' is not installed; install it with pip (see README)")

    monkeypatch.setattr("squeezebench.models.sources.package_path", missing)
    with pytest.raises(SqueezebenchError, match=r"spelling map .*pip install 'squeezebench\[speech\]'"):
        whisper_ct2.spelling_map()
    assert whisper_ct2.spelling_map_identity() == "none"
    assert TASKS.get("speech-recognition").describe()["spelling_map"] == "none"


def record(method, spelling_map, wer):
    task = {"name": "speech-recognition", "version": 1, "primary_metric": "wer"}
    if spelling_map is not None:
        task["spelling_map"] = spelling_map
    return {"team": "t", "model": {"name": "whisper"}, "task": task, "method": method, "device": "cpu",
            "status": "ok", "finished": "2026-01-01T00:00:00", "dataset": {"spec": "audio-dir:x", "fingerprint": "f"},
            "protocol": {"warmup_iters": 5, "min_iters": 30, "min_time_s": 3.0}, "input_shapes": {},
            "latency": {"median": 100.0, "timer": "perf_counter"}, "memory": {"ram_mb": 1.0},
            "environment": {"hostname": "h", "cpu": "c", "torch_threads": 2, "torch": "2", "transformers": "5"},
            "runtime": {"name": "pytorch-eager", "threads": 2},
            "quality": {"primary": "wer", "metrics": {"wer": {"value": wer, "unit": "fraction",
                                                              "higher_is_better": False}}}}


def test_another_spelling_map_is_another_protocol_and_never_pairs(tmp_path):
    a, b = "whisper-normalizer 0.1.15 english.json sha256:aaaaaaaaaaaa", "none"
    keys = {Record.model_validate(record("original", m, 0.069)).protocol_key() for m in (a, b, None)}
    assert len(keys) == 3
    # an older record that declares nothing keeps the key it always had
    old = Record.model_validate(record("original", None, 0.069))
    import hashlib
    import json

    payload = ["speech-recognition", 1, {"spec": "audio-dir:x", "fingerprint": "f"},
               {"warmup_iters": 5, "min_iters": 30, "min_time_s": 3.0}, None]
    assert old.protocol_key() == hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]

    run = RunFile(tmp_path / "t" / "run-20260101T000000Z.json", {"team": "t"})
    for rec in (record("original", a, 0.069), record("fp16", a, 0.069), record("int8", b, 0.086)):
        run.add(Record.model_validate(rec))
    rows = {r.method: r for r in collect([tmp_path])}
    assert rows["fp16"].original and rows["fp16"].group == rows["original"].group
    assert not rows["int8"].original and rows["int8"].group != rows["original"].group  # no Δ across maps
    assert rows["int8"].groups_of_model == 2
    assert "spelling_map none" in rows["int8"].cpu.protocol_summary()
