"""TorchScript runtime: a traced archive (model.pt) loaded with ``torch.jit.load``.

Note on safety: ``torch.jit.load`` is not a ``weights_only`` pickle load. A TorchScript archive holds
code (TorchScript IR, run by the JIT interpreter) plus tensors; that is the format's nature, so load
only archives you built or trust. TorchScript is deprecated in PyTorch 2.x (torch.export /
torch.compile replace it) but still ships and runs in torch 2.13.

Pair: written by the ``torchscript`` export (methods/export_torchscript.py), which fills :class:`TorchScriptEntry`.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any, Optional

import torch

from squeezebench.errors import SqueezebenchError
from squeezebench.runtimes.base import (ManifestEntry, Runtime, bundle_for_runtime, register_runtime,
                                        torch_device_problem)
from squeezebench.runtimes.pytorch import TorchExecutable

log = logging.getLogger(__name__)

TORCHSCRIPT_FILE = "model.pt"


class TorchScriptEntry(ManifestEntry):
    """What the torchscript export tells this runtime. cpu_device_constants: tensors the trace pins to the CPU
    device (a CPU trace that has any cannot run on CUDA); export: how it was traced (optimize is read here)."""

    torchscript_file: str = TORCHSCRIPT_FILE
    module_dtype: str = "torch.float32"
    traced_on: Optional[str] = None
    cpu_device_constants: int = 0
    export: dict[str, Any] = {}


class TorchScriptExecutable(TorchExecutable):
    """A loaded TorchScript archive; the input dtype comes from the manifest (a ScriptModule hides its weights)."""

    def __init__(self, module: torch.jit.ScriptModule, device: str, input_dtype: torch.dtype, info: dict[str, Any]):
        super().__init__(module, device, info)
        self.input_dtype = input_dtype


def load_torchscript(directory: Path, manifest: dict[str, Any], task, device: str, threads: Optional[int]):
    """Load the traced archive onto ``device`` (tensors are mapped there by ``map_location``)."""
    entry = TorchScriptEntry.read(manifest)
    path = Path(directory) / entry.torchscript_file
    if not path.is_file():
        raise SqueezebenchError(f"artifact {directory} has no TorchScript archive {path.name}; rebuild it")
    pinned = entry.cpu_device_constants
    if device.startswith("cuda") and pinned:
        raise SqueezebenchError(f"this TorchScript trace was recorded on CPU and pins {pinned} tensor(s) to the CPU device "
                                "(e.g. transformers' attention-mask code); it cannot run on CUDA")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript deprecation notice, noted in the docs
        try:
            module = torch.jit.load(str(path), map_location=device)
        except RuntimeError as exc:
            raise SqueezebenchError(f"torch.jit.load failed for {path}: {str(exc).splitlines()[0]}") from None
        module.eval()
        export = entry.export
        if export.get("optimize") == "optimize_for_inference":  # load-time pass: its MKLDNN constants are not saveable
            module = torch.jit.optimize_for_inference(module)
    dtype = getattr(torch, entry.module_dtype.removeprefix("torch."), torch.float32)
    info = {"name": "torchscript", "version": torch.__version__, "device": device,
            "threads": torch.get_num_threads(), "dtype": str(dtype),
            "optimization": export.get("optimize", "none"),
            "executor": "profiling" if torch._C._get_graph_executor_optimize() else "simple (optimisations off)"}
    return bundle_for_runtime(directory, manifest, task), TorchScriptExecutable(module, device, dtype, info)


register_runtime(Runtime("torchscript", "TorchScript archive run by the PyTorch JIT (deprecated in torch 2.x)",
                         load_torchscript, torch_device_problem, ("cpu", "cuda"), TorchScriptEntry))
