"""torch-compile: the plain PyTorch weights, measured with ``torch.compile`` applied at load.

This is not an export: the artifact is the same state dict (plus config) the PyTorch runtime loads,
so its size is the size of the weights it was given (``int8-dynamic+torch-compile`` saves the int8
weights). The ``torch-compile`` runtime rebuilds the model like the PyTorch runtime (replaying every
earlier link's restore) and wraps it in ``torch.compile``. Compilation happens on the first call: it
is recorded as ``compile_s`` in the runtime info (first call = compile + one run, also the latency's
``first_call_ms``); later recompilations (new input shapes during evaluation) are counted separately.
Steady-state latency is measured after warm-up as for every variant. Each load uses a fresh, empty
``TORCHINDUCTOR_CACHE_DIR`` so compile times are cold-cache times.
"""

from __future__ import annotations

import atexit
import importlib.util
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional

import torch

from squeezebench.errors import SqueezebenchError
from squeezebench.methods.base import METHODS, ExportResult, Method, MethodConfig, MethodContext
from squeezebench.runtimes.base import RESTORES, Runtime, StructureRestore, read_manifest, register_runtime
from squeezebench.runtimes.pytorch import TorchExecutable, load_pytorch, module_dtype, save_pytorch_artifact

log = logging.getLogger(__name__)

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


class CompiledExecutable(TorchExecutable):
    """A TorchExecutable whose calls go through the compiled module; times the calls that compile."""

    def __init__(self, compiled, eager: torch.nn.Module, device: str, info: dict[str, Any]):
        super().__init__(eager, device, info)
        self.compiled = compiled
        self.info.update(compile_s=None, compile_calls=0, compile_total_s=0.0)

    def run_prepared(self, prepared):
        from torch._dynamo.utils import counters

        graphs = counters["stats"]["unique_graphs"]
        t0 = time.perf_counter()
        try:
            out = self.compiled(**prepared)
        except Exception as exc:  # noqa: BLE001 - compile errors come in many types
            raise SqueezebenchError(f"torch.compile(backend={self.info['backend']}, mode={self.info['mode']}) failed: "
                                    f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
        if counters["stats"]["unique_graphs"] != graphs or self.info["compile_s"] is None:
            if self.device.startswith("cuda"):
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - t0
            if self.info["compile_s"] is None:
                self.info["compile_s"] = elapsed
            self.info["compile_calls"] += 1
            self.info["compile_total_s"] += elapsed
            self.info["graphs_compiled"] = counters["stats"]["unique_graphs"]
            self.info["graph_breaks"] = sum(counters["graph_break"].values())
        return out


def _fresh_cache_dir() -> str:
    path = tempfile.mkdtemp(prefix="squeezebench-inductor-")
    atexit.register(shutil.rmtree, path, True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = path
    return path


def load_torch_compile(directory: Path, manifest: dict[str, Any], task, device: str, threads: Optional[int]):
    """Rebuild like the PyTorch runtime, then wrap the task module in torch.compile (compiled lazily)."""
    import torch._dynamo

    params = manifest.get("compile", {})
    config = TorchCompileConfig(**params)
    cache_dir = _fresh_cache_dir()
    torch._dynamo.reset()
    bundle, eager = load_pytorch(directory, manifest, task, device, threads)
    compiled = torch.compile(eager.module, mode=config.mode, backend=config.backend, dynamic=config.dynamic)
    info = dict(eager.info, name="torch-compile", backend=config.backend, mode=config.mode, dynamic=config.dynamic,
                optimization=f"torch.compile backend={config.backend} mode={config.mode} dynamic={config.dynamic}",
                inductor_cache_dir=cache_dir, cache="fresh empty TORCHINDUCTOR_CACHE_DIR (cold compile)")
    return bundle, CompiledExecutable(compiled, eager.module, device, info)


def _check_device(device: str) -> Optional[str]:
    if device.startswith("cuda") and not torch.cuda.is_available():
        return "no CUDA device visible to PyTorch"
    return None


register_runtime(Runtime("torch-compile", "PyTorch + torch.compile applied at load", load_torch_compile,
                         _check_device, ("cpu", "cuda")))
