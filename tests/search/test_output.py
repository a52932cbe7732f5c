"""What the user reads: the recommendation and why, the front, and the report's preface (escaped HTML)."""

from __future__ import annotations

from squeezebench.search.command import describe, preface
from squeezebench.search.state import RungResult, Trial
from squeezebench.search.strategy import Outcome


def test_recommendation_front_and_report_preface():
    best = Trial(3, "prune:ratio=0.3+<b>", {}, {}, "full",
                 full=RungResult("ok", {"cpu_ms": 4.0}, 0.89, 0.004, 0.001, 0.008, 0.01, True, True))
    base = RungResult("ok", {"cpu_ms": 10.0}, 0.894)
    lines = describe(Outcome(best, [best], base, "prune is recommended: ...", ["the budget ran out"]), ("cpu_ms",))
    assert lines[0] == "note: the budget ran out" and lines[1] == "recommended: prune is recommended: ..."
    assert "| original | 10 | 0.8940 | — |" in lines and "| prune:ratio=0.3+<b> | 4 | 0.8900 | +0.0040 [+0.0010, +0.0080] |" in lines
    html = preface(lines)
    assert "<td>prune:ratio=0.3+&lt;b&gt;</td>" in html and "<b>" not in html  # a name never becomes markup
    assert describe(Outcome(None, [], base, "keep the original"), ("cpu_ms",)) == ["no recommendation: keep the original"]


def test_outcome_writes_the_metric_in_its_table_form():
    """WER is stored as a fraction and written in % with drops in percentage points, as the table writes it."""
    from squeezebench.search.command import quality_text

    wer = quality_text("speech-recognition")
    trial = Trial(1, "onnx", {}, {}, "full",
                  full=RungResult("ok", {"cpu_ms": 300.0}, 0.4606, 0.02, -0.011, 0.052, 0.02, False, True))
    base = RungResult("ok", {"cpu_ms": 900.0}, 0.4406)
    lines = describe(Outcome(None, [trial], base, "keep the original", text=wer), ("cpu_ms",))
    assert "| original | 900 | 44.06 % | — |" in lines
    assert "| onnx | 300 | 46.06 % | +2.00 pp [-1.10 pp, +5.20 pp] |" in lines
    assert wer.verdict(trial.full) == "drop +2.00 pp, interval [-1.10 pp, +5.20 pp], allowed 2.00 pp"
    assert quality_text("sentence-embedding").drop(0.016) == "+1.60 pt"
