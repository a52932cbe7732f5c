import numpy as np
from sklearn.metrics import f1_score

from squeezebench.tasks.metrics import METRICS, bootstrap_ci, chance_flag, classification_metrics, macro_f1


def test_macro_f1_matches_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 200)
    p = np.where(rng.random(200) < 0.7, y, rng.integers(0, 4, 200))
    assert abs(macro_f1(y, p, 4) - f1_score(y, p, average="macro")) < 1e-12


def test_bootstrap_interval_contains_mean_and_is_deterministic():
    x = np.random.default_rng(0).random(300)
    lo, hi = bootstrap_ci(lambda i: x[i].mean(), len(x))
    assert lo < x.mean() < hi
    assert (lo, hi) == bootstrap_ci(lambda i: x[i].mean(), len(x))


def test_chance_flag_for_random_predictions_and_not_for_good_ones():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 100)
    random_pred = rng.integers(0, 5, 100)
    m = classification_metrics(y, random_pred, 5)
    assert chance_flag(m["accuracy"], y, 5) is not None
    good = np.where(rng.random(100) < 0.95, y, (y + 1) % 5)
    m = classification_metrics(y, good, 5)
    assert chance_flag(m["accuracy"], y, 5) is None


def test_metrics_registered_with_direction_and_unit():
    assert METRICS.get("perplexity").higher_is_better is False
    assert METRICS.get("accuracy").unit == "fraction"


def test_paired_bootstrap_detects_a_shift_that_unpaired_intervals_hide():
    from squeezebench.tasks.metrics import paired_bootstrap_ci

    rng = np.random.default_rng(0)
    difficulty = rng.uniform(1, 10, 30)  # examples differ far more than the two variants do
    a, b = difficulty * 1.03, difficulty
    lo_a, hi_a = bootstrap_ci(lambda i: a[i].mean(), 30)
    lo_b, hi_b = bootstrap_ci(lambda i: b[i].mean(), 30)
    assert lo_a < hi_b  # unpaired: the intervals overlap
    lo, hi = paired_bootstrap_ci(lambda i: a[i].mean(), lambda i: b[i].mean(), 30)
    assert 1.0 < lo <= 1.03 <= hi < 1.06  # paired: the ratio is clearly above 1


def test_every_task_lists_registered_metrics_with_its_primary_first():
    from squeezebench.tasks import TASKS
    from squeezebench.tasks.metrics import METRICS

    assert len(list(TASKS)) >= 7
    for name, task in TASKS.items():
        assert task.metrics and task.metrics[0] == task.primary_metric, name
        assert all(m in METRICS for m in task.metrics), name


def test_every_task_lists_registered_metrics_and_every_metric_has_a_label():
    from squeezebench.tasks import TASKS

    for name, task in TASKS.items():
        assert task.primary_metric in task.metrics, name
        for metric in task.metrics:
            assert metric in METRICS, f"{name} lists unregistered metric {metric!r}"
    for name, metric in METRICS.items():
        assert metric.label and metric.decimals >= 0, name
    wer = METRICS.get("wer")
    assert (wer.text(0.0981), wer.delta_text(0.1234, 0.0981)) == ("9.81 %", "+2.5 pp")
    acc = METRICS.get("accuracy")
    assert (acc.text(0.9), acc.delta_text(0.89, 0.9)) == ("0.9000", "-1.0 pt")
    assert METRICS.get("bleu").title() == "BLEU" and METRICS.get("perplexity").delta_text(22.0, 20.0) == "+10 %"
