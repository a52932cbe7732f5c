"""torch-compile: the plain PyTorch weights, measured with ``torch.compile`` applied at load.

This is not an export: the artifact is the same state dict (plus config) the PyTorch runtime loads,
so its size is the size of the weights it was given (``int8-dynamic+torch-compile`` saves the int8
weights). The manifest's ``compile`` entry holds this config's parameters; the ``torch-compile`` runtime
(runtimes/torch_compile.py) reads them, rebuilds the model like the PyTorch runtime and compiles it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal, Optional

from squeezebench.methods.base import METHODS, ExportResult, Method, MethodConfig, MethodContext
from squeezebench.runtimes.base import RESTORES, StructureRestore, read_manifest
from squeezebench.runtimes.pytorch import module_dtype, save_pytorch_artifact

CXX_COMPILERS = ("g++", "c++", "clang++")


@dataclass(frozen=True)
class TorchCompileConfig(MethodConfig):
    """mode/backend: as ``torch.compile``. dynamic: None = PyTorch's default (static for the first shape,
    then dynamic after a shape change), False = one static graph per input shape, True = dynamic from the start."""

    name: ClassVar[str] = "torch-compile"
    mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = "default"
    backend: str = "inductor"
    dynamic: Optional[bool] = None


def _check(config: TorchCompileConfig, ctx: MethodContext) -> Optional[str]:
    import torch._dynamo

    if config.backend not in torch._dynamo.list_backends(exclude_tags=()):
        return f"unknown torch.compile backend {config.backend!r} (known: {', '.join(torch._dynamo.list_backends())})"
    if config.backend == "inductor":
        if ctx.device.startswith("cuda"):
            if importlib.util.find_spec("triton") is None:
                return "inductor on CUDA needs triton (pip install triton)"
        elif not (os.environ.get("CXX") or any(shutil.which(c) for c in CXX_COMPILERS)):
            return "inductor on CPU needs a C++ compiler (g++ or clang++) on PATH"
    return None


def export_torch_compile(wrapped, config: TorchCompileConfig, ctx: MethodContext, directory: Path) -> ExportResult:
    """Save the (possibly already transformed) PyTorch weights exactly as the PyTorch runtime saves them."""
    bundle = ctx.bundle
    # save_pytorch_artifact writes weights, config, preprocessing and a provisional manifest; the worker
    # then rewrites the manifest with the full chain, runtime "torch-compile" and the entries below
    weight_files = save_pytorch_artifact(bundle, ctx.task, [], directory, {})
    state_format = read_manifest(directory)["state_format"]
    return ExportResult("torch-compile", weight_files, {
        "state_format": state_format, "module_dtype": str(module_dtype(bundle.module)), "compile": config.params()})


def _restore_identity(module, config=None, facts=None):
    return module  # torch.compile changes nothing that is saved


METHODS.register(TorchCompileConfig.name, Method(
    TorchCompileConfig.name, TorchCompileConfig,
    "PyTorch weights run through torch.compile (compile time recorded apart from steady-state latency)",
    export=export_torch_compile, restore=_restore_identity, check=_check, devices=("cpu", "cuda")))
RESTORES.register(TorchCompileConfig.name, StructureRestore(TorchCompileConfig, _restore_identity))
