"""image-classification behind `serve`: an image file in base64 per request, answered with the class the
evaluation predicts for it (same preprocessing); a body that is not an image is a one-line problem."""

from __future__ import annotations

import base64

import numpy as np

from squeezebench.runtimes.pytorch import TorchExecutable
from squeezebench.tasks import TASKS
from squeezebench.tasks.data import load_dataset
from tests.conftest import fast_protocol
from tests.helpers_models import tiny_cnn

TASK = TASKS.get("image-classification")


def test_served_classes_are_the_evaluated_predictions(image_dir):
    bundle = tiny_cnn()
    bundle.label_names = ["red", "green", "blue"]
    ds = load_dataset(f"image-dir:{image_dir}")
    run = TorchExecutable(TASK.wrap(bundle).eval(), "cpu", {})
    protocol = fast_protocol()
    evaluated = TASK.evaluate(run, bundle, TASK.prepare(ds, bundle, protocol), protocol, None)
    bodies = [TASK.request_of(ex) for ex in ds.examples]
    assert all(TASK.check_request(b) is None for b in bodies)
    answers = TASK.serve_batch(run, bundle, bodies, protocol)
    predicted = np.asarray(evaluated.reference["predictions"]).tolist()
    assert [a["index"] for a in answers] == predicted
    assert [a["label"] for a in answers] == [bundle.label_names[i] for i in predicted]


def test_a_body_that_is_not_an_image_is_one_line():
    for bad in ({"text": "x"}, {"image": "%%%"}, {"image": base64.b64encode(b"not an image").decode()}, ["a"]):
        problem = TASK.check_request(bad)
        assert problem and "\n" not in problem, bad
