"""A toy export and the runtime that loads it, written in this file alone (one unit: the export fills the typed
manifest entry the runtime declares and reads), run end to end through the real runner: the worker processes
import this module as a plug-in, build the artifact with the export, load it with the runtime and measure it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Optional

import pytest
import torch

from squeezebench.methods.base import ExportResult, MethodConfig, MethodContext, register_export
from squeezebench.methods.lib.exports import example_inputs
from squeezebench.runtimes.base import (ManifestEntry, Runtime, bundle_for_runtime, register_runtime,
                                        torch_device_problem)
from squeezebench.runtimes.pytorch import TorchExecutable, module_dtype

PLUGIN = __name__  # "tests.test_plugin_export": what the workers import
PROGRAM_FILE = "program.pt2"


# --- the runtime ----------------------------------------------------------------------------------------------
class ExportedProgramEntry(ManifestEntry):
    """What the export tells the runtime: its file, and the dtype to cast float inputs to."""

    program_file: str = PROGRAM_FILE
    input_dtype: str = "torch.float32"
    example_shapes: dict[str, list[int]] = {}


class ProgramExecutable(TorchExecutable):
    def __init__(self, module, device: str, input_dtype: torch.dtype, info: dict[str, Any]):
        super().__init__(module, device, info)
        self.input_dtype = input_dtype


def load_program(directory: Path, manifest: dict[str, Any], task, device: str, threads: Optional[int]):
    entry = ExportedProgramEntry.read(manifest)
    module = torch.export.load(str(Path(directory) / entry.program_file)).module().to(device)
    dtype = getattr(torch, entry.input_dtype.removeprefix("torch."))
    info = {"name": "toy-exported-program", "version": torch.__version__, "device": device,
            "threads": torch.get_num_threads(), "dtype": str(dtype)}
    return bundle_for_runtime(directory, manifest, task), ProgramExecutable(module, device, dtype, info)


register_runtime(Runtime("toy-exported-program", "torch.export program (toy plug-in runtime)", load_program,
                         torch_device_problem, ("cpu",), ExportedProgramEntry))


# --- the export -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ToyExportConfig(MethodConfig):
    name: ClassVar[str] = "toy-torch-export"


@register_export(ToyExportConfig, "torch.export of the task's module (toy plug-in export)",
                 runtime="toy-exported-program", devices=("cpu",))
def toy_export(wrapped, config: ToyExportConfig, ctx: MethodContext, directory: Path) -> ExportResult:
    samples = example_inputs(ctx, wrapped, 2, "the toy export")
    example = {k: torch.cat([s[k] for s in samples]) for k in samples[0]}  # batch 2: the batch axis stays dynamic
    program = torch.export.export(wrapped, (), example, dynamic_shapes={k: {0: torch.export.Dim.AUTO} for k in example})
    path = Path(directory) / PROGRAM_FILE
    torch.export.save(program, str(path))
    return ExportResult("toy-exported-program", [path], ExportedProgramEntry(
        program_file=PROGRAM_FILE, input_dtype=str(module_dtype(wrapped)),
        example_shapes={k: list(v.shape) for k, v in example.items()}))


# --- the test -------------------------------------------------------------------------------------------------
def test_toy_export_and_runtime_end_to_end(tmp_path, image_dir):
    from squeezebench.runner import RunConfig, Runner
    from squeezebench.runtimes.base import read_manifest
    from tests.conftest import fast_protocol

    config = RunConfig(models=["python:tests.helpers_models:tiny_cnn"], task="image-classification",
                       methods=["original", "toy-torch-export"], dataset=f"image-dir:{image_dir}",
                       out=tmp_path / "out", team="t", protocol=fast_protocol(), plugins=[PLUGIN])
    records = {r.method: r.dump() for r in Runner(config).run()}
    orig, toy = records["original"], records["toy-torch-export"]
    assert orig["status"] == "ok" and toy["status"] == "ok", toy
    assert toy["build"]["runtime"] == "toy-exported-program"
    assert toy["runtime"]["name"] == "toy-exported-program"  # the measure phase loaded it with the toy runtime
    assert toy["build"]["size"]["weight_files"] == [PROGRAM_FILE]
    # the exported program computes what the PyTorch model computes, on every evaluation batch
    assert toy["quality"]["metrics"]["top1_agreement"]["value"] == 1.0
    assert toy["quality"]["metrics"]["accuracy"]["value"] == orig["quality"]["metrics"]["accuracy"]["value"]
    manifest = read_manifest(_artifact(tmp_path / "out", "toy-exported-program"))
    assert ExportedProgramEntry.read(manifest).example_shapes["pixel_values"][0] == 2


def _artifact(root: Path, runtime: str) -> Path:
    from squeezebench.runtimes.base import MANIFEST, read_manifest

    found = [p.parent for p in root.rglob(MANIFEST) if read_manifest(p.parent)["runtime"] == runtime]
    assert len(found) == 1, found
    return found[0]


def test_an_export_must_hand_its_runtime_entry(tmp_path):
    """The pair is checked when the manifest is written: another entry type (or none) is refused."""
    from squeezebench.runtimes.base import write_export_manifest

    with pytest.raises(TypeError, match="ExportedProgramEntry"):
        write_export_manifest(None, None, [], tmp_path, "toy-exported-program", [], {}, ManifestEntry())


def test_the_runtime_devices_are_read_by_loads_and_export_checks():
    from squeezebench.methods.base import METHODS

    bare = Runtime("bare", "", load_program, None, ("cpu",))
    assert bare.unavailable("cpu") is None and bare.unavailable("cuda:0") == "runtime bare runs on cpu only"
    method = METHODS.get("toy-torch-export")
    assert method.kind == "export" and method.runtime == "toy-exported-program"
    assert method.defined_in() == f"{PLUGIN}:toy_export"
    # the export's check asks its runtime first: no CUDA here, or a CPU-only runtime on a GPU machine
    assert method.check(ToyExportConfig(), MethodContext(task=None, bundle=None, device="cuda")) is not None
    assert method.check(ToyExportConfig(), MethodContext(task=None, bundle=None, device="cpu")) is None
