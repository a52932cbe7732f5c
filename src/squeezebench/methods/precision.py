"""original, fp16, bf16: the baseline and plain half-precision casts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

import torch

from squeezebench.methods.base import MethodConfig, MethodContext, register_method


@dataclass(frozen=True)
class OriginalConfig(MethodConfig):
    """The model as loaded (fp32 unless the checkpoint says otherwise), saved as safetensors."""

    name: ClassVar[str] = "original"


@dataclass(frozen=True)
class Fp16Config(MethodConfig):
    name: ClassVar[str] = "fp16"


@dataclass(frozen=True)
class Bf16Config(MethodConfig):
    name: ClassVar[str] = "bf16"


def _identity(module, config=None, ctx=None, *_):
    return module


register_method(OriginalConfig, "no change: the reference every other variant is compared with",
                restore=_identity)(_identity)


def _cast(dtype: torch.dtype):
    def cast(module: torch.nn.Module, config=None, ctx=None, *_) -> torch.nn.Module:
        return module.to(dtype)

    return cast


def _check_dtype(dtype: torch.dtype):
    def check(config: MethodConfig, ctx: MethodContext) -> Optional[str]:
        device = ctx.device
        if device.startswith("cuda"):
            if dtype is torch.bfloat16 and not torch.cuda.is_bf16_supported():
                return f"{torch.cuda.get_device_name()} has no bf16 support"
            return None
        try:  # a tiny matmul proves the kernels exist; slow is not unsupported
            a = torch.ones(4, 4, dtype=dtype, device=device)
            (a @ a).sum().item()
        except RuntimeError as exc:
            return f"{dtype} matmul is not supported on {device}: {exc}".splitlines()[0]
        return None

    return check


register_method(Fp16Config, "cast all floating-point weights and activations to float16",
                restore=_cast(torch.float16), check=_check_dtype(torch.float16))(_cast(torch.float16))
register_method(Bf16Config, "cast all floating-point weights and activations to bfloat16",
                restore=_cast(torch.bfloat16), check=_check_dtype(torch.bfloat16))(_cast(torch.bfloat16))
