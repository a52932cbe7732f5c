"""The generation measure: asks the task for its generation speed, keeps it in its own section, and shows it in
the quality cell exactly as when it sat in the quality section (older records render the same)."""

from __future__ import annotations

from squeezebench.measures.base import MeasureSession, Row
from squeezebench.measures.generation import GenerationMeasure
from squeezebench.measures.quality import QualityMeasure
from squeezebench.results import Record
from squeezebench.tasks.base import EvalResult

TTFT = {"value": 52.25, "unit": "ms", "higher_is_better": False, "n": 3}
DECODE = {"value": 9.94, "unit": "tokens/s", "higher_is_better": True, "n": 3}
ROOF = {"value": 41.06, "unit": "%", "higher_is_better": True, "n": 3, "bandwidth_gb_s": 10.0}
PPL = {"value": 12.0, "unit": "perplexity", "higher_is_better": False, "n": 100}
SHOWN = "perplexity 12.000; decode tok/s 9.9; TTFT ms 52.2; % of memory bandwidth 41.1"


def _record(**sections) -> Record:
    return Record.model_validate({"model": {"name": "m"}, "task": {"name": "t"}, "method": "original",
                                  "status": "ok", **sections})


class Generates:
    def __init__(self, speed):
        self.speed = speed

    def generation_speed(self, run, bundle, data, protocol):
        return self.speed


def test_the_task_s_speed_becomes_the_generation_section():
    speed = EvalResult({"time_to_first_token": TTFT, "decode_tokens_per_s": DECODE}, ["a flag"], {"gen_new_tokens": 4})
    section = GenerationMeasure().run(MeasureSession(task=Generates(speed), protocol=None, device="cpu"))
    assert section.decode_tokens_per_s.value == 9.94 and section.time_to_first_token.n == 3
    assert section.decode_bandwidth_percent is None and section.protocol == {"gen_new_tokens": 4}
    rec = _record(generation=section.dump(), quality={"primary": "perplexity", "metrics": {"perplexity": PPL}})
    assert GenerationMeasure().flags(Row("t", "m", "t", "original", cpu=rec)) == ["a flag"]
    assert GenerationMeasure().run(MeasureSession(task=Generates(None), protocol=None, device="cpu")) is None


def test_old_and_new_records_show_the_same_quality_cell_and_columns():
    old = _record(quality={"primary": "perplexity", "protocol": {"gen_new_tokens": 32, "window": 32},
                           "metrics": {"perplexity": PPL, "time_to_first_token": TTFT, "decode_tokens_per_s": DECODE,
                                       "decode_bandwidth_percent": ROOF}})
    new = _record(quality={"primary": "perplexity", "metrics": {"perplexity": PPL}},
                  generation={"time_to_first_token": TTFT, "decode_tokens_per_s": DECODE,
                              "decode_bandwidth_percent": ROOF, "protocol": {"gen_new_tokens": 32}})
    assert GenerationMeasure().read(old).protocol == {"gen_new_tokens": 32}  # only generation's protocol keys
    cell = QualityMeasure.columns[0].cell
    for rec in (old, new):
        row = Row("t", "m", "t", "original", cpu=rec)
        assert cell(row) == SHOWN
        values = {c.key: c.value(row) for c in GenerationMeasure.columns}
        assert values == {"decode_tokens_per_s": 9.94, "time_to_first_token_ms": 52.25,
                          "decode_bandwidth_percent": 41.06}
        assert [c.cell(row) for c in GenerationMeasure.columns] == ["9.9", "52.2", "41.1"]


def test_a_task_without_generation_shows_nothing():
    rec = _record(quality={"primary": "perplexity", "metrics": {"perplexity": PPL}})
    row = Row("t", "m", "t", "original", cpu=rec)
    assert GenerationMeasure().read(rec) is None and GenerationMeasure().notes("quality", row) == []
    assert QualityMeasure.columns[0].cell(row) == "perplexity 12.000"
    assert [c.cell(row) for c in GenerationMeasure.columns] == ["—", "—", "—"]
