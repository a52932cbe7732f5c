"""torch-compile: the plain PyTorch weights, measured with ``torch.compile`` applied at load.

This is not an export but a runtime choice (``register_runtime_choice``): the artifact is the same state dict
(plus config) the PyTorch runtime loads, so its size is the size of the weights it was given
(``int8-dynamic+torch-compile`` saves the int8 weights). Pair: the ``torch-compile`` runtime
(runtimes/torch_compile.py) reads the TorchCompileEntry written here (this config's parameters), rebuilds the
model like the PyTorch runtime and compiles it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal, Optional

from squeezebench.methods.base import ExportResult, MethodConfig, MethodContext, register_runtime_choice
from squeezebench.runtimes.base import read_manifest
from squeezebench.runtimes.pytorch import module_dtype, save_pytorch_artifact
from squeezebench.runtimes.torch_compile import CompileSettings, TorchCompileEntry

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


@register_runtime_choice(TorchCompileConfig, "PyTorch weights run through torch.compile (compile time recorded "
                         "apart from steady-state latency)", runtime="torch-compile", check=_check)
def export_torch_compile(wrapped, config: TorchCompileConfig, ctx: MethodContext, directory: Path) -> ExportResult:
    """Save the (possibly already transformed) PyTorch weights exactly as the PyTorch runtime saves them."""
    bundle = ctx.bundle
    # save_pytorch_artifact writes weights, config, preprocessing and a provisional manifest; the worker
    # then rewrites the manifest with the full chain, runtime "torch-compile" and the entry below
    weight_files = save_pytorch_artifact(bundle, ctx.task, [], directory, {})
    state_format = read_manifest(directory)["state_format"]
    return ExportResult("torch-compile", weight_files, TorchCompileEntry(
        state_format=state_format, module_dtype=str(module_dtype(bundle.module)),
        compile=CompileSettings(**config.params())))
