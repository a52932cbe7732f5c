"""Runtimes execute a saved variant. Each registers how to load an artifact into an Executable."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Optional

import torch
from pydantic import BaseModel, ConfigDict

from squeezebench.atomic import atomic_write_text
from squeezebench.errors import SqueezebenchError
from squeezebench.registry import Registry

MANIFEST = "squeezebench-artifact.json"
ARTIFACT_FORMAT_VERSION = 1


class Executable:
    """A loaded variant. ``prepare`` moves inputs once; ``run_prepared`` is what latency times."""

    info: dict[str, Any]
    module: Optional[torch.nn.Module] = None  # the torch model when the runtime is PyTorch

    def prepare(self, inputs: dict[str, torch.Tensor]) -> Any:
        raise NotImplementedError

    def run_prepared(self, prepared: Any) -> Any:
        raise NotImplementedError

    def to_tensor(self, output: Any) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        with torch.no_grad():  # not inference_mode: sparse CSR weights fail under it (torch 2.13)
            return self.to_tensor(self.run_prepared(self.prepare(inputs)))


class ManifestEntry(BaseModel):
    """The manifest keys an export writes for the runtime that loads it: one subclass per export/runtime pair,
    defined in the runtime's module (methods import runtimes, never the other way), written by the export
    (``ExportResult.entry``) and read back typed by the runtime (``Entry.read(manifest)``).

    The keys stay at the manifest's top level, so artifacts written before the entries were typed load as before;
    None fields are left out of the file."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    def dump(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)

    @classmethod
    def read(cls, manifest: dict[str, Any]):
        return cls.model_validate(manifest)


@dataclass(frozen=True)
class Runtime:
    """name; load(directory, manifest, task, device, threads) -> (bundle, Executable); check(device) -> reason
    beyond ``devices`` (the device kinds it can run on at all); entry: the ManifestEntry its export writes (None:
    the runtime reads only the common keys, e.g. PyTorch)."""

    name: str
    summary: str
    load: Callable[..., tuple[Any, Executable]]
    check: Optional[Callable[[str], Optional[str]]] = None
    devices: tuple[str, ...] = ("cpu",)
    entry: Optional[type[ManifestEntry]] = None

    def unavailable(self, device: str) -> Optional[str]:
        """Why this runtime cannot run on ``device`` here (a device kind it does not support, a missing package, no
        GPU), or None: what loading an artifact and every export to this runtime check first."""
        reason = self.check(device) if self.check is not None else None  # its own words first (e.g. "CPU only")
        if reason is None and device.split(":")[0] not in self.devices:
            reason = f"runtime {self.name} runs on {', '.join(self.devices)} only"
        return reason


RUNTIMES: Registry[Runtime] = Registry("runtime")


@dataclass(frozen=True)
class StructureRestore:
    """How a method's compressed structure is rebuilt on a fresh skeleton before its saved weights load:
    ``restore(module, config_cls(**params), facts) -> module``. Methods register these (methods/base.py) so that a
    runtime can replay a chain without importing the methods."""

    config_cls: type
    restore: Callable[..., Any]


RESTORES: Registry[StructureRestore] = Registry("reloadable method")


def register_runtime(runtime: Runtime) -> Runtime:
    return RUNTIMES.register(runtime.name, runtime)


def torch_device_problem(device: str) -> Optional[str]:
    """The device check of runtimes that run torch code (PyTorch, TorchScript, torch.compile)."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        return "no CUDA device visible to PyTorch"
    return None


def read_manifest(directory: Path) -> dict[str, Any]:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise SqueezebenchError(f"{directory} is not a squeezebench artifact (no {MANIFEST}); build it with `squeezebench run`")
    manifest = json.loads(path.read_text())
    if manifest.get("format_version", 0) > ARTIFACT_FORMAT_VERSION:
        raise SqueezebenchError(f"artifact {directory} was written by a newer squeezebench; upgrade squeezebench")
    return manifest


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    manifest = dict(manifest, format="squeezebench-artifact", format_version=ARTIFACT_FORMAT_VERSION)
    atomic_write_text(Path(directory) / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))


def write_export_manifest(bundle, task, chain: list, directory: Path, runtime: str, weight_files: list[Path],
                          extra: dict[str, Any], entry: Optional[ManifestEntry] = None) -> None:
    """Manifest and preprocessing files (tokenizer, image settings) beside an exported model: the common keys,
    ``extra`` (parameters, notes, facts) and the runtime's typed ``entry`` (checked to be the one it reads)."""
    expected = RUNTIMES.get(runtime).entry
    if expected is not None and not isinstance(entry, expected):
        raise TypeError(f"an export to runtime {runtime} must give a {expected.__name__} manifest entry, "
                        f"got {type(entry).__name__}")
    if entry is not None:
        extra = {**extra, **entry.dump()}
    task.save_preprocessing(bundle, Path(directory) / "preprocessing")
    write_manifest(directory, {
        "runtime": runtime, "source": bundle.source, "task": task.name,
        "chain": [c.link() for c in chain],
        "weights_files": [str(Path(p).relative_to(directory)) for p in weight_files],
        "label_names": bundle.label_names, "newly_initialized": bundle.newly_initialized, **extra})


def bundle_for_runtime(directory: Path, manifest: dict[str, Any], task) -> Any:
    """A ModelBundle without a torch module (module=None), with the artifact's tokenizer/image settings."""
    from squeezebench.models.bundle import ModelBundle

    bundle = ModelBundle(module=None, source=manifest["source"], label_names=manifest.get("label_names"),
                         newly_initialized=manifest.get("newly_initialized", []))
    task.attach_preprocessing(bundle, str(Path(directory) / "preprocessing"), {})
    return bundle


def load_artifact(directory: Path, task: Any, device: str, threads: Optional[int] = None) -> tuple[Any, Executable]:
    """Load a saved variant with the runtime its manifest names."""
    manifest = read_manifest(directory)
    runtime = RUNTIMES.get(manifest["runtime"])
    reason = runtime.unavailable(device)
    if reason:
        raise SqueezebenchError(reason)
    return runtime.load(Path(directory), manifest, task, device, threads)
