"""torchscript: trace the task's module with ``torch.jit.trace`` and save a TorchScript archive (model.pt).

Tracing records the operations run on one example input; Python control flow that depends on the data
is frozen to that example's branch. The tracer's warnings about such spots are kept in the manifest, and
the quality/agreement columns show whether the trace generalised to the evaluation inputs.
TorchScript is deprecated in PyTorch 2.x; it still runs in torch 2.13.

Pair: loaded by the ``torchscript`` runtime (runtimes/torchscript.py), told what it needs by a TorchScriptEntry.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal, Optional

import torch

from squeezebench.errors import SqueezebenchError
from squeezebench.methods.base import ExportResult, MethodConfig, MethodContext, register_export
from squeezebench.methods.lib.exports import example_inputs
from squeezebench.runtimes.pytorch import module_dtype
from squeezebench.runtimes.torchscript import TORCHSCRIPT_FILE, TorchScriptEntry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TorchScriptConfig(MethodConfig):
    """optimize: none (plain trace), freeze (inline weights, fold constants) or optimize_for_inference
    (freeze at export; ``torch.jit.optimize_for_inference`` - conv-bn folding, MKLDNN layouts - is applied
    by the runtime after loading, because its MKLDNN constants cannot be serialised)."""

    name: ClassVar[str] = "torchscript"
    optimize: Literal["none", "freeze", "optimize_for_inference"] = "none"


def trace(wrapped: torch.nn.Module, example: dict[str, torch.Tensor], optimize: str = "none",
          path: Optional[Path] = None):
    """Trace ``wrapped`` on keyword inputs (and save it to ``path``); returns the script module, the
    tracer's warnings and TorchScript deprecation notices."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with torch.no_grad():
                traced = torch.jit.trace(wrapped.eval(), example_kwarg_inputs=example, strict=False, check_trace=False)
                if optimize in ("freeze", "optimize_for_inference"):
                    traced = torch.jit.freeze(traced)
            if path is not None:
                torch.jit.save(traced, str(path))
        except Exception as exc:  # noqa: BLE001 - the tracer raises many types; one clear line
            raise SqueezebenchError(f"torch.jit.trace failed for this model: {str(exc).splitlines()[0]}") from None
    messages = sorted({str(w.message).splitlines()[0] for w in caught if issubclass(w.category, torch.jit.TracerWarning)})
    deprecation = sorted({str(w.message).splitlines()[0] for w in caught
                          if issubclass(w.category, (DeprecationWarning, FutureWarning)) and "torch.jit" in str(w.message)})
    return traced, messages, deprecation


@register_export(TorchScriptConfig, "TorchScript trace (torch.jit.trace), run by the PyTorch JIT; deprecated in torch 2.x",
                 runtime="torchscript", devices=("cpu", "cuda"))
def export_torchscript(wrapped, config: TorchScriptConfig, ctx: MethodContext, directory: Path) -> ExportResult:
    example = example_inputs(ctx, wrapped, 1, "a TorchScript export")[0]
    dtype = module_dtype(wrapped)
    path = directory / TORCHSCRIPT_FILE
    traced, tracer_warnings, deprecation = trace(wrapped, example, config.optimize, path)
    # a trace records tensor.to(device=...) with the example's device as a constant (transformers' mask code does
    # this): such a CPU trace cannot run on CUDA; the runtime refuses it there with this count as the reason
    pinned = str(traced.inlined_graph).count('prim::Constant[value="cpu"]')
    if tracer_warnings:
        log.warning("torch.jit.trace warned %d time(s); the trace may be specialised to the example input",
                    len(tracer_warnings))
    if not ctx.facts:  # earlier links (e.g. int8-dynamic) state their own facts
        ctx.facts.update(in_memory_compressed=dtype != torch.float32, in_memory_format=str(dtype).removeprefix("torch."))
    return ExportResult("torchscript", [path], TorchScriptEntry(
        torchscript_file=TORCHSCRIPT_FILE, module_dtype=str(dtype),
        traced_on=str(next(wrapped.parameters()).device), cpu_device_constants=pinned,
        export={"tracer": "torch.jit.trace(strict=False)", "optimize": config.optimize, "torch": torch.__version__,
                   "example_shapes": {k: list(v.shape) for k, v in example.items()},
                   "tracer_warnings": tracer_warnings[:20], "deprecation_warnings": deprecation[:5],
                   "file_contents": "TorchScript archive: code + tensors (not a weights-only file)"}))
