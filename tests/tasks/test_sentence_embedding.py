"""Known answer: on data that is separable by construction, sentence-embedding accuracy is ~1.0 for an even
number of balanced classes (the old split put whole classes only in train or only in test: accuracy 0)."""

import csv

import pytest

from squeezebench.runner import RunConfig, Runner
from tests.conftest import fast_protocol
from tests.helpers_models import separable_rows


@pytest.mark.parametrize("n_classes", [2, 4])
def test_separable_classes_score_accuracy_one(tmp_path, n_classes):
    path = tmp_path / "sep.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        w.writerows(separable_rows(n_classes))
    config = RunConfig(models=["python:tests.helpers_models:bag_of_words"], task="sentence-embedding",
                       methods=["original"], dataset=f"csv:{path}", out=tmp_path / "r", team="t",
                       protocol=fast_protocol())
    rec = Runner(config).run()[0].dump()
    assert rec["status"] == "ok", rec
    q = rec["quality"]
    assert q["metrics"]["accuracy"]["value"] >= 0.99, q
    assert q["protocol"]["test_examples"] == 10 * n_classes and q["protocol"]["train_examples"] == 10 * n_classes
    assert not any("chance" in f for f in q["flags"])
