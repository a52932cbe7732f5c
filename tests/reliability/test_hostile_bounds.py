"""Values no run can carry out are refused before any build; impossible records are skipped on load with a line;
a lost reference is said (issue 22, the partly handled cases)."""

from __future__ import annotations

import json
import logging
import os

import pytest

from squeezebench.errors import SqueezebenchError
from squeezebench.models.checks import check_model_config
from squeezebench.models.sources import source_of
from squeezebench.results import iter_records
from squeezebench.results.store import RunFile
from squeezebench.runner import RunConfig, Runner
from tests.conftest import fast_protocol
from tests.report.test_table import record, write


def test_threads_beyond_a_few_per_core_are_refused_before_any_build(tmp_path, image_dir):
    cores = os.cpu_count() or 1
    fast_protocol(threads=cores * 4).check_threads()
    with pytest.raises(SqueezebenchError, match=rf"--threads 100000 is more than 4 x the {cores} cores of this "
                                                rf"machine; pass --threads {cores} or less"):
        Runner(RunConfig(models=["python:tests.helpers_models:tiny_cnn"], task="image-classification",
                         methods=["original"], dataset=f"image-dir:{image_dir}", out=tmp_path / "out", team="t",
                         protocol=fast_protocol(threads=100000), devices=["cpu"]))
    assert not (tmp_path / "out").exists()
    fast_protocol(threads=100000).check_threads(cores=100000)  # a Ray node's own cores decide there


def test_gen_tokens_bounded_by_the_model_and_by_any_model(tmp_path):
    with pytest.raises(SqueezebenchError, match="--gen-tokens 100000000 is more than any model's positions"):
        fast_protocol(gen_new_tokens=100_000_000).validate()
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_positions": 1024}))
    check_model_config(source_of(str(model)), 16, 1024)
    with pytest.raises(SqueezebenchError, match="--gen-tokens 5000 exceeds the 1024 positions model 'm'"):
        check_model_config(source_of(str(model)), 16, 5000)


def test_prompt_with_an_unknown_field_is_refused():
    fast_protocol(gen_prompt="JSON {\"a\": 1} then {text}").validate()  # other braces stay literal
    with pytest.raises(SqueezebenchError, match=r"has the unknown field \{other\}; only \{text\} is filled in"):
        fast_protocol(gen_prompt="{text} and {other}").validate()


def test_tokenizer_auto_map_needs_trust_remote_code(tmp_path):
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (model / "tokenizer_config.json").write_text(json.dumps({"auto_map": {"AutoTokenizer": ["tok.MyTok", None]}}))
    with pytest.raises(SqueezebenchError, match="AutoTokenizer in the auto_map of tokenizer_config.json"):
        check_model_config(source_of(str(model)), 16)
    check_model_config(source_of(str(model), trust_remote_code=True), 16)


@pytest.mark.parametrize("edit, why", [
    (lambda r: r["latency"].update(median=-3.0), "latency.median is -3.0, outside [0, inf]"),
    (lambda r: r["quality"]["metrics"]["accuracy"].update(value=1.7),
     "quality.metrics.accuracy is 1.7, outside [0, 1]"),
    (lambda r: r["build"]["size"].update(weights_bytes=-1), "build.size.weights_bytes is -1"),
    (lambda r: r["latency"].update(median=float("nan")), "latency.median is nan"),
])
def test_impossible_records_are_skipped_with_a_line(tmp_path, caplog, edit, why):
    good = record("alpha", "original", "cpu", 40.0, 4_000_000, 0.90)
    bad = record("alpha", "fp16", "cpu", 80.0, 2_000_000, 0.89)
    edit(bad)
    write(tmp_path / "r", "alpha", [good, bad])
    with caplog.at_level(logging.WARNING):
        recs = list(iter_records([tmp_path / "r"]))
    assert [r.method for r in recs] == ["original"]
    line = next(m for m in caplog.messages if "record 1" in m)
    assert line.startswith("skipped: ") and "(m / fp16 / cpu)" in line and why in line and "\n" not in line


def test_a_higher_is_worse_fraction_may_pass_one(tmp_path):
    rec = record("alpha", "original", "cpu", 40.0, 4_000_000, 0.90)
    rec["quality"]["metrics"]["wer"] = {"value": 1.2, "unit": "fraction", "higher_is_better": False}
    write(tmp_path / "r", "alpha", [rec])
    assert len(list(iter_records([tmp_path / "r"]))) == 1


@pytest.mark.parametrize("version", [0, -1, True])
def test_unknown_schema_versions_are_refused(tmp_path, caplog, version):
    path = tmp_path / "t" / "run-1.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"schema_version": version, "records": [record("t", "original", "cpu", 1, 1, 0.5)]}))
    with caplog.at_level(logging.WARNING):
        assert list(iter_records([tmp_path])) == []
    assert f"has schema_version {version!r}, which no squeezebench wrote" in caplog.text


def test_a_lost_reference_is_said_when_nothing_will_rewrite_it(tmp_path, image_dir, caplog):
    config = RunConfig(models=["python:tests.helpers_models:tiny_cnn"], task="image-classification",
                       methods=["original", "fp16"], dataset=f"image-dir:{image_dir}", out=tmp_path / "out",
                       team="t", protocol=fast_protocol(), devices=["cpu"])
    runner = Runner(config)
    original = next(v for v in runner.variants if v.is_original)
    unit = next(u for u in runner.plan() if u.variant.is_original)
    prior = runner._base_record(original, "cpu", unit.slots[0].key)
    prior.status = "ok"
    prior.set_section("quality", {"primary": "accuracy", "reference_file": str(unit.reference)})
    RunFile(tmp_path / "out" / "t" / "run-1.json", {"team": "t"}).add(prior)
    # the original is in this run: it is measured again (its reference is gone) and nothing needs saying
    with caplog.at_level(logging.WARNING):
        runner.plan()
    assert "reference" not in caplog.text
    # a run of the variant alone: the reference cannot come back, and the user is told
    config.methods = ["fp16"]
    with caplog.at_level(logging.WARNING):
        Runner(config).plan()
    assert f"the original's reference {unit.reference} is gone" in caplog.text
    assert "add --method original" in caplog.text
