"""The per-example scores the search judges by: stored with accuracy and WER, and giving back the metric itself."""

from __future__ import annotations

import numpy as np
import pytest

from squeezebench.results.schema import MetricValue
from squeezebench.search.tolerance import scores_of
from squeezebench.tasks.metrics import classification_metrics


def test_accuracy_stores_each_example():
    y_true, y_pred = np.array([0, 1, 2, 1, 0]), np.array([0, 2, 2, 1, 1])
    acc = MetricValue.model_validate(classification_metrics(y_true, y_pred, 3)["accuracy"])
    assert acc.per_example == [1.0, 0.0, 1.0, 1.0, 0.0]
    assert scores_of(acc).value == pytest.approx(acc.value) and scores_of(acc).higher_is_better


def test_wer_stores_errors_and_words_per_utterance():
    pytest.importorskip("jiwer")
    from squeezebench.tasks.speech_recognition import error_rates

    wer = MetricValue.model_validate(error_rates(["A B", "C D E F"], ["A B", "C D"])["wer"])
    assert wer.per_example == [0, 2] and wer.per_example_weight == [2, 4]
    scores = scores_of(wer)
    assert scores.value == pytest.approx(wer.value) == pytest.approx(2 / 6) and not scores.higher_is_better


def test_a_metric_without_them_gives_none():
    assert scores_of(MetricValue(value=0.5, unit="fraction")) is None and scores_of(None) is None
