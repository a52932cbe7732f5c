"""What every export needs from the task before it traces, converts or checks a model: example inputs."""

from __future__ import annotations

from typing import Any

import torch

from squeezebench.errors import SqueezebenchError
from squeezebench.runtimes.pytorch import module_dtype


def example_inputs(ctx: Any, module: torch.nn.Module, n: int = 1,
                   what: str = "this export") -> list[dict[str, torch.Tensor]]:
    """Up to ``n`` task inputs (``ctx.calibration``) restricted to the task's input names (a sample's own names when
    the task declares none it has), floating tensors cast to ``module``'s dtype so a half model traces on half
    inputs. Refuses with one line when the task data gives none."""
    if ctx.calibration is None:
        raise SqueezebenchError(f"{what} needs example inputs from the task data; none were given")
    dtype = module_dtype(module)
    out = []
    for sample in ctx.calibration(n):
        names = [k for k in (ctx.task.input_names or ()) if k in sample] or list(sample)
        out.append({k: sample[k].to(dtype) if sample[k].is_floating_point() else sample[k] for k in names})
    if not out:
        raise SqueezebenchError(f"{what} needs at least one example input and the task data gave none; raise --limit")
    return out
