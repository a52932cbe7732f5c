"""OpenVINO runtime: an IR (model.xml + model.bin) compiled for the CPU plugin with a latency hint.

The executable records what OpenVINO really compiled: version, device, threads, performance hint,
inference precision, and how many compute layers (FullyConnected, Convolution, MatMul, ...) run with
int8 activations, int8-stored weights or float ones, read from the compiled runtime graph.

Pair: written by the OpenVINO exports (methods/export_openvino.py), which fill :class:`OpenVinoEntry`.
"""

from __future__ import annotations

import collections
import logging
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from squeezebench.errors import SqueezebenchError
from squeezebench.runtimes.base import Executable, Runtime, bundle_for_runtime, register_runtime
from squeezebench.runtimes.graphs import GraphsEntry, GraphsExecutable
from squeezebench.runtimes.openvino_lm import StatefulLm, load_stateful_lm

log = logging.getLogger(__name__)

XML_FILE = "model.xml"
BIN_FILE = "model.bin"
COMPUTE_LAYERS = ("FullyConnected", "Convolution", "GroupConvolution", "Deconvolution", "MatMul", "ScaledDotProductAttention")
INSTALL_HINT = "pip install 'squeezebench[openvino]' (openvino, nncf, openvino-genai)"


class OpenVinoEntry(GraphsEntry):
    """What an OpenVINO export tells this runtime: the IR's graph file (the entry graph's, for several) and the
    inference precision to compile with (None: the CPU plugin's choice, bf16 where the CPU has it); export and
    openvino_version record how it was converted and compressed; stateful_lm: set when the IR is a decoder-only
    LM with its KV cache inside (runtimes/openvino_lm.py: generation on OpenVINO GenAI)."""

    openvino_xml: str = XML_FILE
    openvino_version: Optional[str] = None
    openvino_inference_precision: Optional[str] = None
    export: dict[str, Any] = {}
    stateful_lm: Optional[StatefulLm] = None


def missing_openvino() -> Optional[str]:
    """A reason when openvino cannot be imported, else None."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return f"openvino is not installed; {INSTALL_HINT}"
    return None


def _type_name(t: Any) -> str:
    """'f32' for an element type, 'LATENCY' for an enum value, else str()."""
    if hasattr(t, "get_type_name"):
        return t.get_type_name()
    return getattr(t, "name", None) or str(t)


def compute_layer_precisions(compiled: Any) -> dict[str, int]:
    """Count compiled compute layers by activation and weight element type, e.g. 'FullyConnected a=i8 w=i8'."""
    counts: collections.Counter = collections.Counter()
    for op in compiled.get_runtime_model().get_ordered_ops():
        rt = op.get_rt_info()
        layer = rt["layerType"].astype(str) if "layerType" in rt else op.get_type_name()
        if layer not in COMPUTE_LAYERS:
            continue
        types = [_type_name(i.get_element_type()) for i in op.inputs()]
        act = types[0] if types else "?"
        weight = types[1] if len(types) > 1 else "?"
        counts[f"{layer} a={act} w={weight}"] += 1
    return dict(sorted(counts.items()))


class OpenVinoExecutable(Executable):
    """One InferRequest created at load, reused for every call (what a latency-bound server does)."""

    def __init__(self, compiled: Any, info: dict[str, Any]):
        self.compiled = compiled
        self.request = compiled.create_infer_request()
        self.input_names = [i.get_any_name() for i in compiled.inputs]
        self.info = info

    def prepare(self, inputs: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise SqueezebenchError(f"the OpenVINO model expects inputs {self.input_names}; missing {missing}")
        return {n: np.ascontiguousarray(inputs[n].detach().cpu().numpy()) for n in self.input_names}

    def run_prepared(self, prepared: dict[str, np.ndarray]) -> Any:
        return self.request.infer(prepared)

    def to_tensor(self, output: Any) -> torch.Tensor:
        # the result views the request's output buffer, which the next call overwrites: copy it
        return torch.from_numpy(np.array(output[0], copy=True)).float()


class OpenVinoGraphsExecutable(GraphsExecutable):
    """One compiled model and InferRequest per graph (encoder, decoder, ...), created at load."""

    def __init__(self, compiled: dict[str, Any], entry: OpenVinoEntry, info: dict[str, Any]):
        self.requests = {n: c.create_infer_request() for n, c in compiled.items()}
        self.types = {n: {i.get_any_name(): i.get_element_type().to_dtype() for i in c.inputs}
                      for n, c in compiled.items()}
        super().__init__(entry, info)

    def run_graph(self, name: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        request = self.requests[name]
        result = request.infer({k: np.asarray(feeds[k]).astype(t, copy=False) for k, t in self.types[name].items()})
        # results view the request's buffers, which the next call overwrites: copy them
        return {n: np.array(result[i], copy=True) for i, n in enumerate(self.graphs[name].outputs)}


def load_openvino(directory: Path, manifest: dict[str, Any], task, device: str, threads: Optional[int]):
    """Compile the artifact's IR on the CPU plugin (latency hint, ``threads`` inference threads)."""
    reason = missing_openvino()
    if reason:
        raise SqueezebenchError(reason)
    import openvino as ov

    entry = OpenVinoEntry.read(manifest)
    xml = Path(directory) / entry.openvino_xml
    if not xml.is_file():
        raise SqueezebenchError(f"artifact {directory} has no OpenVINO IR {xml.name}; rebuild it with `squeezebench run`")
    n_threads = int(threads or torch.get_num_threads())
    config = {"INFERENCE_NUM_THREADS": n_threads, "PERFORMANCE_HINT": "LATENCY"}
    if entry.openvino_inference_precision:  # e.g. f32: else the CPU plugin picks bf16 where it can
        config["INFERENCE_PRECISION_HINT"] = entry.openvino_inference_precision
    if entry.stateful_lm is not None:
        info = {"name": "openvino", "version": ov.get_version(), "device": "CPU", "threads": n_threads,
                "config": config, "timed_call": "logits of every position (stateful IR, empty cache)",
                "optimization": "OpenVINO CPU plugin graph compilation (default transformations)"}
        executable = load_stateful_lm(Path(directory), entry.stateful_lm, config, info, compute_layer_precisions)
        log.info("OpenVINO stateful LM %s: %s", xml, info)
        return bundle_for_runtime(directory, manifest, task), executable
    core = ov.Core()
    if entry.multi_graph:
        graphs = {n: core.compile_model(str(Path(directory) / g.file), "CPU", config=config)
                  for n, g in (entry.graphs or {}).items()}
        compiled = graphs[entry.entry_graph or next(iter(graphs))]
    else:
        compiled = core.compile_model(str(xml), "CPU", config=config)

    def prop(name: str) -> Any:
        try:
            value = compiled.get_property(name)
        except RuntimeError:
            return None
        if isinstance(value, (int, float, str, list)):
            return value
        return _type_name(value)

    info = {"name": "openvino", "version": ov.get_version(), "device": "CPU",
            "execution_devices": prop("EXECUTION_DEVICES"), "threads": prop("INFERENCE_NUM_THREADS"),
            "performance_hint": prop("PERFORMANCE_HINT"), "num_streams": prop("NUM_STREAMS"),
            "inference_precision": prop("INFERENCE_PRECISION_HINT"), "config": config,
            "optimization": "OpenVINO CPU plugin graph compilation (default transformations)",
            "compute_layers": compute_layer_precisions(compiled)}
    log.info("OpenVINO compiled %s: %s", xml, info)
    if entry.multi_graph:
        info["compute_layers"] = {n: compute_layer_precisions(c) for n, c in graphs.items()}
        return bundle_for_runtime(directory, manifest, task), OpenVinoGraphsExecutable(graphs, entry, info)
    return bundle_for_runtime(directory, manifest, task), OpenVinoExecutable(compiled, info)


def _check_device(device: str) -> Optional[str]:
    if not device.startswith("cpu"):
        return "squeezebench runs OpenVINO on its CPU plugin only"
    return missing_openvino()


register_runtime(Runtime("openvino", "OpenVINO CPU plugin (IR model.xml + model.bin)", load_openvino, _check_device, ("cpu",),
                         OpenVinoEntry))
