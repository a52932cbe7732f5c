"""PyTorch eager: the default runtime. Artifacts are a state dict (safetensors when possible) plus config."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import torch

from squeezebench.errors import SqueezebenchError
from squeezebench.runtimes.base import (RESTORES, Executable, Runtime, register_runtime, torch_device_problem,
                                        write_manifest)

log = logging.getLogger(__name__)

SAFETENSORS_FILE = "model.safetensors"
TORCH_FILE = "model.pt"


def module_dtype(module: torch.nn.Module) -> torch.dtype:
    for t in list(module.parameters()) + list(module.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.float32


class TorchExecutable(Executable):
    def __init__(self, wrapped: torch.nn.Module, device: str, info: dict[str, Any]):
        self.module = wrapped
        self.device = device
        self.input_dtype = module_dtype(wrapped)
        self.info = info

    def prepare(self, inputs):
        return {k: (v.to(self.device, self.input_dtype) if v.is_floating_point() else v.to(self.device))
                for k, v in inputs.items()}

    def run_prepared(self, prepared):
        return self.module(**prepared)

    def to_tensor(self, output):
        return output.detach().float().cpu()


def _plain_tensors(state: dict[str, Any]) -> bool:
    return all(isinstance(v, torch.Tensor) and not v.is_quantized and v.layout == torch.strided
               for v in state.values())


def save_state(module: torch.nn.Module, directory: Path) -> tuple[list[Path], str]:
    """Write the module's weights; safetensors when every entry is a plain tensor, else a torch file."""
    state = module.state_dict()
    if _plain_tensors(state):
        from safetensors.torch import save_model

        path = directory / SAFETENSORS_FILE
        save_model(module, str(path))
        return [path], "safetensors"
    path = directory / TORCH_FILE
    torch.save(state, path)
    return [path], "torch"


def load_state(module: torch.nn.Module, directory: Path, state_format: str) -> None:
    if state_format == "safetensors":
        from safetensors.torch import load_model

        missing, unexpected = load_model(module, str(directory / SAFETENSORS_FILE), strict=True)
        return
    state = torch.load(directory / TORCH_FILE, map_location="cpu", weights_only=True)
    module.load_state_dict(state, strict=True)


def save_pytorch_artifact(bundle, task, chain: list, directory: Path, extra: dict[str, Any]) -> list[Path]:
    """Save a PyTorch variant as it would be shipped; returns the weight files."""
    directory.mkdir(parents=True, exist_ok=True)
    weight_files, state_format = save_state(bundle.module, directory)
    if bundle.is_transformers:
        bundle.module.config.save_pretrained(directory)
        gen = getattr(bundle.module, "generation_config", None)
        if gen is not None and getattr(bundle.module, "can_generate", lambda: False)():
            gen.save_pretrained(directory)
    task.save_preprocessing(bundle, directory / "preprocessing")
    write_manifest(directory, {
        "runtime": "pytorch", "source": bundle.source, "task": task.name, "state_format": state_format,
        "chain": [c.link() for c in chain],
        "weights_files": [p.name for p in weight_files], "label_names": bundle.label_names,
        "newly_initialized": bundle.newly_initialized, "module_dtype": str(module_dtype(bundle.module)), **extra})
    return weight_files


def rebuild_pytorch(directory: Path, manifest: dict[str, Any], task) -> Any:
    """The saved variant as a ModelBundle on CPU: skeleton, each method's structural restore, weights."""
    from squeezebench.models.sources import build_skeleton

    bundle = build_skeleton(manifest["source"], task, directory)
    module = bundle.module
    for link in manifest["chain"]:
        if link["name"] not in RESTORES:
            raise SqueezebenchError(f"method {link['name']} cannot be reloaded from its artifact")
        entry = RESTORES.get(link["name"])
        module = entry.restore(module, entry.config_cls(**link["params"]), manifest.get("facts", {})) or module
    bundle.module = module
    try:
        load_state(module, directory, manifest["state_format"])
    except (RuntimeError, KeyError) as exc:
        raise SqueezebenchError(f"artifact {directory} does not match its rebuilt model: {str(exc).splitlines()[0]}") from None
    module.eval()
    bundle.label_names = manifest.get("label_names")
    bundle.newly_initialized = manifest.get("newly_initialized", [])
    return bundle


def load_pytorch(directory: Path, manifest: dict[str, Any], task, device: str, threads: Optional[int]):
    bundle = rebuild_pytorch(directory, manifest, task)
    bundle.module.to(device)
    wrapped = task.wrap(bundle).eval()
    info = {"name": "pytorch-eager", "version": torch.__version__, "device": device,
            "threads": torch.get_num_threads(), "dtype": str(module_dtype(bundle.module))}
    return bundle, TorchExecutable(wrapped, device, info)


register_runtime(Runtime("pytorch", "PyTorch eager (default)", load_pytorch, torch_device_problem, ("cpu", "cuda")))
