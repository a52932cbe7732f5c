"""torch-compile method: the check, and an export that saves the plain PyTorch weights with the compile settings."""

from __future__ import annotations

from pathlib import Path

import torch

from squeezebench.methods import METHODS, MethodContext, apply_chain, parse_chain
from squeezebench.methods.torch_compile import TorchCompileConfig
from squeezebench.models.sources import load_model, source_of
from squeezebench.runtimes.base import read_manifest
from squeezebench.runtimes.torch_compile import CompileSettings
from squeezebench.tasks import TASKS


def test_export_saves_plain_weights_and_the_compile_settings(tmp_path):
    task = TASKS.get("image-classification")
    bundle = load_model(source_of("python:tests.helpers_models:tiny_cnn"), task)
    chain = parse_chain("fp16+torch-compile:dynamic=false,backend=aot_eager")
    export = apply_chain(bundle, chain, MethodContext(task=task, bundle=bundle, calibration=lambda n: []), tmp_path)
    assert export.runtime == "torch-compile" and [Path(p).name for p in export.weight_files] == ["model.safetensors"]
    assert export.entry.dump() == {"state_format": "safetensors", "module_dtype": "torch.float16",
                                     "compile": {"mode": "default", "backend": "aot_eager", "dynamic": False}}
    assert read_manifest(tmp_path)["state_format"] == "safetensors"
    assert bundle.module.fc.weight.dtype == torch.float16


def test_runtime_defaults_match_the_config():
    """A manifest without a parameter compiles as the method's default would."""
    assert TorchCompileConfig().params() == CompileSettings().model_dump()


def test_torch_compile_check_and_params():
    config = parse_chain("torch-compile:mode=max-autotune-no-cudagraphs,backend=nope")[0]
    reason = METHODS.get("torch-compile").check(config, MethodContext(task=None, bundle=None, device="cpu"))
    assert reason and "unknown torch.compile backend 'nope'" in reason
    assert METHODS.get("torch-compile").devices == ("cpu", "cuda")
