"""torch-compile runtime: the saved PyTorch weights compiled at load; compile time recorded apart."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from squeezebench.methods import MethodContext, apply_chain, parse_chain
from squeezebench.models.sources import load_model, source_of
from squeezebench.runtimes import load_artifact
from squeezebench.runtimes.base import write_export_manifest
from squeezebench.tasks import TASKS

pytestmark = pytest.mark.skipif(not any(shutil.which(c) for c in ("g++", "c++", "clang++")),
                                reason="inductor on CPU needs a C++ compiler")

TOL = 1e-4  # inductor fuses and reorders float ops: rounding-level differences only


def build(directory: Path, bundle, task, method: str):
    """What the worker's build phase does, in process: transforms, the torch-compile export, manifest."""
    chain = parse_chain(method)
    ctx = MethodContext(task=task, bundle=bundle, calibration=lambda n: [])
    export = apply_chain(bundle, chain, ctx, directory)
    write_export_manifest(bundle, task, chain, directory, export.runtime, export.weight_files,
                          {"facts": ctx.facts}, export.entry)
    return export


@pytest.fixture()
def cnn():
    task = TASKS.get("image-classification")
    return task, load_model(source_of("python:tests.helpers_models:tiny_cnn"), task)


def test_compiled_load_records_compile_time(tmp_path, cnn):
    task, bundle = cnn
    export = build(tmp_path, bundle, task, "torch-compile")
    assert export.runtime == "torch-compile" and Path(export.weight_files[0]).name == "model.safetensors"
    _, exe = load_artifact(tmp_path, task, "cpu", 1)
    info = exe.info
    assert info["name"] == "torch-compile" and info["backend"] == "inductor" and info["mode"] == "default"
    assert info["version"] == torch.__version__ and info["device"] == "cpu" and info["threads"] >= 1
    cache = info["inductor_cache_dir"]
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == cache and not os.listdir(cache)  # fresh, empty before compiling
    assert info["compile_s"] is None
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = task.wrap(bundle).eval()(pixel_values=x)
    assert (exe({"pixel_values": x}) - expected).abs().max().item() < TOL
    first = info["compile_s"]
    assert first > 0 and info["compile_calls"] == 1 and info["graphs_compiled"] >= 1
    assert os.listdir(cache)  # inductor wrote its code into the fresh directory
    exe({"pixel_values": x})  # same shape: no recompilation
    assert info["compile_calls"] == 1 and info["compile_s"] == first


def test_compiled_load_after_a_transform_replays_restore(tmp_path, cnn):
    task, bundle = cnn
    # aot_eager: the same dynamo capture without inductor's C++ build, to keep this test fast
    build(tmp_path, bundle, task, "fp16+torch-compile:dynamic=false,backend=aot_eager")
    assert bundle.module.fc.weight.dtype == torch.float16
    _, exe = load_artifact(tmp_path, task, "cpu", 1)
    assert exe.info["dtype"] == "torch.float16" and exe.info["dynamic"] is False and exe.info["backend"] == "aot_eager"
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        expected = task.wrap(bundle).eval()(pixel_values=x.half()).float()
    assert (exe({"pixel_values": x}) - expected).abs().max().item() < 1e-2
    exe({"pixel_values": torch.randn(3, 3, 32, 32)})  # a new batch size recompiles (dynamic=False): counted
    assert exe.info["compile_calls"] == 2 and exe.info["compile_total_s"] >= exe.info["compile_s"] > 0
