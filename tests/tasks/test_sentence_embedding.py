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


def test_evaluated_inputs_are_the_scored_test_split_not_the_classifier_train_split():
    """What a student must never train on is the scored split; the classifier's train split is training data."""
    from squeezebench.methods.student import input_digest
    from squeezebench.tasks import TASKS, text_common
    from squeezebench.tasks.data import Dataset
    from tests.helpers_models import bag_of_words

    task, bundle, protocol = TASKS.get("sentence-embedding"), bag_of_words(), fast_protocol()
    examples = [{"text": f"{word} number {i}", "label": c} for c, word in enumerate(["cat", "dog"]) for i in range(20)]
    data = task.prepare(Dataset(spec="distinct", examples=examples, label_names=["cat", "dog"]), bundle, protocol)
    scored = {input_digest(x) for x in task.evaluated_inputs(bundle, data, protocol)}
    test = {input_digest(text_common.fixed_batch(bundle, [ex["text"]], 1, protocol.seq_len))
            for ex in data["test"].examples}
    train = {input_digest(x) for x in task.calibration_inputs(bundle, data, protocol, 10 ** 6)}
    assert scored == test and len(test) == len(data["test"].examples) == 20
    assert len(train) == 20 and not scored & train  # calibration (and so a student) draws the train split only
