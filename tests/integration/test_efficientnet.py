"""EfficientNet-Lite0 through the own-model path on the shared ImageNet sample (real weights, real images)."""

import pytest

from squeezebench.runner import RunConfig, Runner
from tests.conftest import SHARED_DATA, fast_protocol

pytestmark = pytest.mark.integration
IMAGENET = SHARED_DATA / "imagenet-sample"


@pytest.mark.skipif(not IMAGENET.is_dir(), reason="../shared/data/imagenet-sample is not beside the project")
def test_efficientnet_lite0_top1_on_imagenet_sample(tmp_path):
    config = RunConfig(models=["offline:efficientnet-lite0"], task="image-classification", methods=["original"],
                       dataset=f"imagenet-sample:{IMAGENET}", out=tmp_path, team="t",
                       protocol=fast_protocol(limit=60, eval_batch_size=20))
    rec = Runner(config).run()[0].dump()
    assert rec["status"] == "ok", rec
    m = rec["quality"]["metrics"]
    # the published model reaches ~75 % top-1 on ImageNet val; a 60-image sample must be far above chance
    assert m["accuracy"]["value"] > 0.6 and m["top5_accuracy"]["value"] > 0.8
    assert rec["input_shapes"] == {"pixel_values": [1, 3, 224, 224]}
    assert 18.0 < rec["build"]["size"]["weights_mb"] < 19.5
