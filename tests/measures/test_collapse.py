"""The "quality collapsed" flag: known answers for each rule, and the committed rows it names."""

from __future__ import annotations

from pathlib import Path

from squeezebench.measures import Row
from squeezebench.measures.collapse import collapse_reason, collapsed, worse_beyond_interval
from squeezebench.report.table import collect, render
from squeezebench.results.schema import MetricValue, Record

ROOT = Path(__file__).resolve().parents[2]


def metric(value, ci=None, unit="fraction", higher=True):
    return {"value": value, "unit": unit, "higher_is_better": higher, **({"ci95": list(ci)} if ci else {})}


def record(method, primary, metrics, flags=()):
    return Record.model_validate({"model": {"name": "m"}, "task": {"name": "t"}, "method": method, "status": "ok",
                                  "quality": {"primary": primary, "metrics": metrics, "flags": list(flags)}})


def row(method, primary, metrics, orig_metrics, flags=(), orig_flags=()):
    orig = record("original", primary, orig_metrics, orig_flags)
    return Row("team", "m", "t", method, cpu=record(method, primary, metrics, flags), original={"cpu": orig})


ACC = {"accuracy": metric(0.88, (0.84, 0.91))}
WER = {"wer": metric(0.44, (0.23, 0.79), higher=False)}


def test_error_rate_above_100_percent_collapses_whatever_the_interval():
    r = row("prune", "wer", {"wer": metric(1.37, (1.10, 1.68), higher=False)}, WER)
    assert collapse_reason(r) == "WER 137 % > 100 %"
    cer = row("prune", "wer", {"wer": metric(0.5, (0.2, 0.9), higher=False), "cer": metric(1.02, higher=False)}, WER)
    assert collapse_reason(cer) == "CER 102 % > 100 %"
    assert not collapsed(row("int4", "wer", {"wer": metric(0.99, (0.5, 1.3), higher=False)}, WER))


def test_no_agreement_collapses_only_with_a_drop_beyond_the_interval():
    broken = {"accuracy": metric(0.037, (0.017, 0.06)), "top1_agreement": metric(0.037)}
    assert collapse_reason(row("p", "accuracy", broken, ACC)) == ("top1 agreement 4 %, accuracy beyond the original's "
                                                                    "interval")
    # agreement 0 but intervals overlap (a quantised generator rarely repeats an answer word for word): not collapsed
    bleu = {"bleu": metric(0.324, (0.270, 0.361)), "output_agreement": metric(0.0)}
    assert not collapsed(row("gptq", "bleu", bleu, {"bleu": metric(0.362, (0.285, 0.449))}))
    # a drop beyond the interval but half the outputs still agree: degraded, not collapsed
    degraded = {"accuracy": metric(0.49, (0.43, 0.55)), "top1_agreement": metric(0.51)}
    assert not collapsed(row("p", "accuracy", degraded, ACC))
    # lower is better: a perplexity wholly above the original's interval with agreement 0.004
    ppl = {"perplexity": metric(5e5, (3e5, 8e5), "ppl", False), "top1_agreement": metric(0.004)}
    assert collapsed(row("k", "perplexity", ppl, {"perplexity": metric(20.2, (17.6, 22.9), "ppl", False)}))
    # ... and one that is better than the original never collapses
    good = {"perplexity": metric(15.0, (14.0, 16.0), "ppl", False), "top1_agreement": metric(0.0)}
    assert not collapsed(row("k", "perplexity", good, {"perplexity": metric(20.2, (17.6, 22.9), "ppl", False)}))


def test_chance_level_collapses_unless_the_original_was_at_chance_too():
    flag = ["chance-level: accuracy CI 0.230-0.310 reaches chance 0.250"]
    low = {"accuracy": metric(0.27, (0.23, 0.31))}
    assert collapse_reason(row("p", "accuracy", low, ACC, flags=flag)) == "chance level"
    assert not collapsed(row("p", "accuracy", low, ACC, flags=flag, orig_flags=flag))


def test_the_original_and_rows_without_quality_are_never_collapsed():
    orig = record("original", "wer", {"wer": metric(1.5, higher=False)})
    assert not collapsed(Row("team", "m", "t", "original", cpu=orig))
    assert not collapsed(Row("team", "m", "t", "x"))
    assert worse_beyond_interval(MetricValue(**metric(0.5, (0.4, 0.6))), MetricValue(**metric(0.8, (0.7, 0.9))))
    assert not worse_beyond_interval(MetricValue(**metric(0.5, (0.4, 0.75))), MetricValue(**metric(0.8, (0.7, 0.9))))


def test_committed_rows_flagged_exactly():
    named = set()
    for folder in ("whisper", "smollm2", "efficientnet", "minilm", "smollm2-gen", "smollm2-prune"):
        for r in collect([ROOT / "results" / folder]):
            if collapsed(r):
                named.add((folder, r.method))
                assert r.flags[0].startswith("quality collapsed (")  # first among the row's flags
    assert named == {("whisper", "cluster-kmeans"), ("whisper", "prune-structured"), ("smollm2", "cluster-kmeans"),
                     ("efficientnet", "prune-structured:bn_samples=0")}
    assert "⚠ quality collapsed (WER 160 % > 100 %)" in render(collect([ROOT / "results" / "whisper"]))
