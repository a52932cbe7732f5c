"""The default executor: the run goes through the executor seam and records where and when it measured."""

from __future__ import annotations

import platform

import pytest

from squeezebench.errors import SqueezebenchError
from squeezebench.executors import make_executor
from squeezebench.runner import RunConfig, Runner
from tests.conftest import fast_protocol


def test_unknown_executor_is_a_one_line_error():
    with pytest.raises(SqueezebenchError, match="unknown executor 'rey'; did you mean 'ray'"):
        make_executor("rey")


def test_local_records_say_where_and_when_they_were_measured(tmp_path, image_dir):
    config = RunConfig(models=["python:tests.helpers_models:tiny_cnn", "python:tests.helpers_models:broken"],
                       task="image-classification", methods=["original"], dataset=f"image-dir:{image_dir}",
                       out=tmp_path / "out", team="t", protocol=fast_protocol())
    ok, failed = Runner(config).run()
    node = ok.node
    assert ok.ok and node.executor == "local" and node.hostname == platform.node()
    assert node.start < node.end and node.end - node.start >= ok.os["wall_s"] * 0.9
    assert failed.status == "failed" and failed.node is None  # its build failed: nothing was measured
