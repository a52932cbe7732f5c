import time

from squeezebench.measures.latency import measure_latency, percentile_nearest_rank, summarize


def test_nearest_rank_percentiles():
    s = list(range(1, 101))
    assert percentile_nearest_rank(s, 90) == 90
    assert percentile_nearest_rank(s, 99) == 99
    assert percentile_nearest_rank([5.0], 99) == 5.0


def test_summary_warns_on_few_samples_and_high_cv():
    out = summarize([1.0, 1.0, 10.0])
    assert out["iterations"] == 3
    assert any("p99" in w for w in out["warnings"])
    assert any("CV" in w for w in out["warnings"])


def test_measure_latency_respects_min_iters_and_min_time():
    out = measure_latency(lambda: time.sleep(0.002), "cpu", warmup_iters=2, min_iters=5, min_time_s=0.05, max_time_s=5)
    assert out["iterations"] >= 5 and sum(out["samples"]) >= 40
    assert len(out["warmup_ms"]) == 2 and out["timer"] == "perf_counter"
    assert 1.5 < out["median"] < 20
