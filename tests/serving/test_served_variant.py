"""A variant measured by the real runner is served from its saved artifact through the runtime that measured it:
the record is found by method, the artifact loads, and the task answers request bodies of its evaluation examples."""

from __future__ import annotations

import json

import numpy as np
import pytest

from squeezebench.errors import SqueezebenchError
from squeezebench.runner import RunConfig, Runner
from squeezebench.serving.variant import evaluation_bodies, find_record, load_served
from tests.conftest import fast_protocol


def test_a_measured_variant_is_served_from_its_artifact(tmp_path, tiny_bert_dir, topic_csv):
    out = tmp_path / "results"
    records = Runner(RunConfig(models=[str(tiny_bert_dir)], task="sentence-embedding", methods=["original", "fp16"],
                               dataset=f"csv:{topic_csv}", out=out, team="t",
                               protocol=fast_protocol(threads=1))).run()
    assert all(r.ok for r in records), [r.error for r in records]
    with pytest.raises(SqueezebenchError, match="measured there: fp16, original"):
        find_record(out, "int8")
    bodies = evaluation_bodies(find_record(out, "original"))
    assert len(bodies) == 36 and bodies[0] == {"text": "The team won the match after a late goal by the striker. (0)"}
    answers = {}
    for method in ("original", "fp16"):
        served = load_served(out, find_record(out, method))
        assert served.record.method == method and served.threads == 1
        assert served.check(bodies[0]) is None and "text" in served.check({"txt": "x"})
        answers[method] = np.array([a["embedding"] for a in served.answer(bodies[:3])])
        alone = np.array(served.answer(bodies[:1])[0]["embedding"])
        np.testing.assert_allclose(alone, answers[method][0], atol=2e-3)  # batching does not change an answer
    assert answers["original"].shape == (3, 64)
    np.testing.assert_allclose(np.linalg.norm(answers["original"], axis=1), 1.0, atol=1e-4)
    cosine = (answers["original"] * answers["fp16"]).sum(1)
    assert (cosine > 0.99).all() and not np.array_equal(answers["original"], answers["fp16"])

    # a load test's section is written into the real run file: every other field of every record is kept as it was
    from squeezebench.measures.serving import Serving
    from squeezebench.report.table import table
    from squeezebench.serving.loadtest import attach

    record = find_record(out, "fp16")
    before = json.loads(open(record.source_file).read())
    section = Serving(scenario="server", p99_bound_ms=100.0, target_qps=20.0, p99_ms=42.0, meets_bound=True,
                      achieved_qps=19.5, server_threads=1, verdict="VALID")
    attach(out, record, section)
    after = json.loads(open(record.source_file).read())
    assert [{k: v for k, v in r.items() if k != "serving"} for r in after["records"]] == before["records"]
    assert {k: v for k, v in after.items() if k != "records"} == {k: v for k, v in before.items() if k != "records"}
    assert sum("serving" in r for r in after["records"]) == 1
    text = table([out], extra_columns=True)
    assert "| Serving QPS at p99 bound |" in text.splitlines()[0]
    fp16_row = next(line for line in text.splitlines() if "| fp16 |" in line)
    assert "| 19.5 | 42.0 ≤ 100 | server CPU, no batching, 1 threads: VALID |" in fp16_row

    # a second test (with batching) is shown; the first one stays in the record's history, nothing is lost
    from squeezebench.measures.serving import serving_history

    batched = Serving(scenario="server", p99_bound_ms=100.0, target_qps=30.0, p99_ms=60.0, meets_bound=True,
                      achieved_qps=29.0, server_threads=1, verdict="VALID", max_batch=8, batch_window_ms=5.0)
    attach(out, find_record(out, "fp16"), batched)
    tests = serving_history(find_record(out, "fp16"))
    assert [(t.max_batch, t.achieved_qps) for t in tests] == [(1, 19.5), (8, 29.0)]
    fp16_row = next(line for line in table([out], extra_columns=True).splitlines() if "| fp16 |" in line)
    assert "| 29.0 | 60.0 ≤ 100 | server CPU, batch ≤ 8 / 5 ms, 1 threads: VALID |" in fp16_row
