"""TorchScript runtime: a traced archive (model.pt) loaded with ``torch.jit.load``.

Note on safety: ``torch.jit.load`` is not a ``weights_only`` pickle load. A TorchScript archive holds
code (TorchScript IR, run by the JIT interpreter) plus tensors; that is the format's nature, so load
only archives you built or trust. TorchScript is deprecated in PyTorch 2.x (torch.export /
torch.compile replace it) but still ships and runs in torch 2.13.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any, Optional

import torch

from squeezebench.errors import SqueezebenchError
from squeezebench.runtimes.base import Runtime, bundle_for_runtime, register_runtime
from squeezebench.runtimes.pytorch import TorchExecutable

log = logging.getLogger(__name__)

TORCHSCRIPT_FILE = "model.pt"


class TorchScriptExecutable(TorchExecutable):
    """A loaded TorchScript archive; the input dtype comes from the manifest (a ScriptModule hides its weights)."""

    def __init__(self, module: torch.jit.ScriptModule, device: str, input_dtype: torch.dtype, info: dict[str, Any]):
        super().__init__(module, device, info)
        self.input_dtype = input_dtype


def load_torchscript(directory: Path, manifest: dict[str, Any], task, device: str, threads: Optional[int]):
    """Load the traced archive onto ``device`` (tensors are mapped there by ``map_location``)."""
    path = Path(directory) / manifest.get("torchscript_file", TORCHSCRIPT_FILE)
    if not path.is_file():
        raise SqueezebenchError(f"artifact {directory} has no TorchScript archive {path.name}; rebuild it")
    pinned = manifest.get("cpu_device_constants", 0)
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
        export = manifest.get("export", {})
        if export.get("optimize") == "optimize_for_inference":  # load-time pass: its MKLDNN constants are not saveable
            module = torch.jit.optimize_for_inference(module)
    dtype = getattr(torch, manifest.get("module_dtype", "torch.float32").removeprefix("torch."), torch.float32)
    info = {"name": "torchscript", "version": torch.__version__, "device": device,
            "threads": torch.get_num_threads(), "dtype": str(dtype),
            "optimization": export.get("optimize", "none"),
            "executor": "profiling" if torch._C._get_graph_executor_optimize() else "simple (optimisations off)"}
    return bundle_for_runtime(directory, manifest, task), TorchScriptExecutable(module, device, dtype, info)


def _check_device(device: str) -> Optional[str]:
    if device.startswith("cuda") and not torch.cuda.is_available():
        return "no CUDA device visible to PyTorch"
    return None


register_runtime(Runtime("torchscript", "TorchScript archive run by the PyTorch JIT (deprecated in torch 2.x)",
                         load_torchscript, _check_device, ("cpu", "cuda")))
