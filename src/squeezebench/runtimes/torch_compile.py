"""torch-compile runtime: the PyTorch runtime's model, wrapped in ``torch.compile`` at load.

The artifact is a plain PyTorch one (written by the ``torch-compile`` method); the manifest's ``compile`` entry
holds the method's parameters (mode, backend, dynamic). Compilation happens on the first call: it is recorded as
``compile_s`` in the runtime info (first call = compile + one run, also the latency's ``first_call_ms``); later
recompilations (new input shapes during evaluation) are counted separately. Steady-state latency is measured
after warm-up as for every variant. Each load uses a fresh, empty ``TORCHINDUCTOR_CACHE_DIR`` so compile times
are cold-cache times.

Pair: written by the ``torch-compile`` method (methods/torch_compile.py), which fills :class:`TorchCompileEntry`.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import torch

from squeezebench.errors import SqueezebenchError
from squeezebench.runtimes.base import ManifestEntry, Runtime, register_runtime, torch_device_problem
from squeezebench.runtimes.pytorch import TorchExecutable, load_pytorch


class CompileSettings(ManifestEntry):
    """The torch-compile method's parameters; the defaults are its config's, for a manifest that leaves one out."""

    mode: str = "default"
    backend: str = "inductor"
    dynamic: Optional[bool] = None


class TorchCompileEntry(ManifestEntry):
    """A PyTorch artifact's keys (state_format, module_dtype: as the PyTorch runtime reads them) plus how to compile."""

    state_format: str
    module_dtype: str
    compile: CompileSettings = CompileSettings()

    def dump(self) -> dict[str, Any]:
        return self.model_dump()  # dynamic=None is a setting of its own, kept in the file


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

    settings = CompileSettings.read(manifest.get("compile", {}))
    mode, backend, dynamic = settings.mode, settings.backend, settings.dynamic
    cache_dir = _fresh_cache_dir()
    torch._dynamo.reset()
    bundle, eager = load_pytorch(directory, manifest, task, device, threads)
    compiled = torch.compile(eager.module, mode=mode, backend=backend, dynamic=dynamic)
    info = dict(eager.info, name="torch-compile", backend=backend, mode=mode, dynamic=dynamic,
                optimization=f"torch.compile backend={backend} mode={mode} dynamic={dynamic}",
                inductor_cache_dir=cache_dir, cache="fresh empty TORCHINDUCTOR_CACHE_DIR (cold compile)")
    return bundle, CompiledExecutable(compiled, eager.module, device, info)


register_runtime(Runtime("torch-compile", "PyTorch + torch.compile applied at load", load_torch_compile,
                         torch_device_problem, ("cpu", "cuda"), TorchCompileEntry))
