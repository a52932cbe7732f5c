"""ONNX Runtime: runs an artifact's ``model.onnx`` with an InferenceSession (CPU, or CUDA when available).

Artifacts come from the ONNX export methods (``onnx``, ``onnx-int8-dynamic``, ``onnx-int8-static``) or from a
model given as an ONNX file (``--model onnx:PATH``, copied as is by :func:`import_onnx_model`).

Pair: the ONNX exports (methods/export_onnx.py) and :func:`import_onnx_model` fill :class:`OnnxRuntimeEntry`.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from squeezebench.hardware.cpu import ort_int8_kernel
from squeezebench.errors import SqueezebenchError
from squeezebench.runtimes.base import Executable, Runtime, bundle_for_runtime, register_runtime
from squeezebench.runtimes.graphs import GraphsEntry, GraphsExecutable

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
DEFAULT_OPT_LEVEL = "ORT_ENABLE_ALL"
INSTALL_HINT = "pip install 'squeezebench[onnx]' (onnx, onnxruntime)"
NUMPY_TYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(float)": np.float32,
               "tensor(float16)": np.float16, "tensor(double)": np.float64, "tensor(bool)": np.bool_}
POOLING_NOTE = ("the graph outputs token embeddings; squeezebench mean-pools them over the attention mask and "
                "L2-normalises (as tasks/sentence_embedding.py), inside the timed call")
# ops that compute with 8-bit integers in ONNX Runtime (after its graph optimisations)
INT8_OP_PREFIXES = ("QLinear", "DynamicQuantize", "MatMulInteger", "ConvInteger", "QGemm", "QAttention", "QEmbed")


class OnnxRuntimeEntry(GraphsEntry):
    """What an ONNX export tells this runtime: the graph file (the entry graph's, for several), the session's
    optimisation level; and what it records for the reader: how it exported (onnx_export), quantised
    (quantization) and what ONNX Runtime's optimised graph holds (ort_optimized_graph; per graph for several)."""

    onnx_file: str = MODEL_FILE
    ort_graph_optimization_level: str = DEFAULT_OPT_LEVEL
    ort_optimized_graph: Optional[dict[str, Any]] = None
    onnx_export: Optional[dict[str, Any]] = None
    quantization: Optional[dict[str, Any]] = None


def require_ort():
    try:
        import onnxruntime
    except ImportError:
        raise SqueezebenchError(f"ONNX Runtime is not installed: {INSTALL_HINT}") from None
    return onnxruntime


def ort_missing() -> Optional[str]:
    """A reason when onnx/onnxruntime cannot be imported, else None."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return f"needs onnx and onnxruntime: {INSTALL_HINT}"
    return None


def providers_for(device: str) -> list[str]:
    return ["CUDAExecutionProvider", "CPUExecutionProvider"] if device.startswith("cuda") else ["CPUExecutionProvider"]


def check_device(device: str) -> Optional[str]:
    """Why ONNX Runtime cannot run on ``device`` here, or None."""
    missing = ort_missing()
    if missing:
        return missing
    if device.startswith("cuda"):
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            return ("this onnxruntime build has no CUDAExecutionProvider (install onnxruntime-gpu instead of "
                    "onnxruntime for GPU runs)")
    return None


def session_options(threads: int, opt_level: str = DEFAULT_OPT_LEVEL):
    ort = require_ort()
    level = getattr(ort.GraphOptimizationLevel, opt_level, None)
    if level is None:
        raise SqueezebenchError(f"unknown ONNX Runtime graph optimisation level {opt_level!r}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.graph_optimization_level = level
    options.log_severity_level = 3  # errors only
    return options


def open_session(path: Path, threads: int, device: str = "cpu", opt_level: str = DEFAULT_OPT_LEVEL):
    ort = require_ort()
    try:
        return ort.InferenceSession(str(path), sess_options=session_options(threads, opt_level),
                                    providers=providers_for(device))
    except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
        raise SqueezebenchError(f"ONNX Runtime cannot load {path}: {str(exc).splitlines()[0][:300]}") from None


def mean_pool_normalize(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean over the attention mask, then L2 normalisation (as MeanPooledEmbedding does in torch)."""
    m = mask[..., None].astype(hidden.dtype)
    pooled = (hidden * m).sum(1) / np.clip(m.sum(1), 1e-9, None)
    return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)


class OrtExecutable(Executable):
    """An InferenceSession fed with numpy arrays of the types the graph declares."""

    def __init__(self, session, device: str, info: dict[str, Any], pool_tokens: bool = False):
        self.session = session
        self.device = device
        self.pool_tokens = pool_tokens
        self.inputs = {i.name: NUMPY_TYPES.get(i.type) for i in session.get_inputs()}
        self.output_name = session.get_outputs()[0].name
        self.info = info

    def prepare(self, inputs: dict[str, torch.Tensor]) -> tuple[Any, Optional[np.ndarray]]:
        feeds = {}
        for name, dtype in self.inputs.items():
            if name in inputs:
                feeds[name] = np.ascontiguousarray(inputs[name].detach().cpu().numpy().astype(dtype or np.float32))
            elif name == "token_type_ids" and "input_ids" in inputs:  # BERT graphs: a single segment
                feeds[name] = np.zeros(tuple(inputs["input_ids"].shape), dtype=dtype or np.int64)
            else:
                raise SqueezebenchError(f"the ONNX graph needs input {name!r}, which this task does not provide "
                                        f"(it gives {', '.join(inputs)})")
        mask = None
        if self.pool_tokens:
            if "attention_mask" not in inputs:
                raise SqueezebenchError("pooling token embeddings needs an attention_mask input")
            mask = inputs["attention_mask"].detach().cpu().numpy()
        if self.device.startswith("cuda"):
            return self._bind(feeds), mask
        return feeds, mask

    def _bind(self, feeds: dict[str, np.ndarray]):
        import onnxruntime as ort

        index = torch.device(self.device).index or 0
        binding = self.session.io_binding()
        for name, arr in feeds.items():
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(arr, "cuda", index))
        binding.bind_output(self.output_name, "cuda", index)
        return binding

    def run_prepared(self, prepared) -> np.ndarray:
        feeds, mask = prepared
        if self.device.startswith("cuda"):
            self.session.run_with_iobinding(feeds)
            out = feeds.copy_outputs_to_cpu()[0]
        else:
            out = self.session.run([self.output_name], feeds)[0]
        return mean_pool_normalize(out, mask) if self.pool_tokens else out

    def to_tensor(self, output: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(output)).float()


class OrtGraphsExecutable(GraphsExecutable):
    """One InferenceSession per graph (encoder, decoder, ...); feeds cast to the types each graph declares."""

    def __init__(self, sessions: dict[str, Any], entry: OnnxRuntimeEntry, info: dict[str, Any]):
        self.sessions = sessions
        self.types = {n: {i.name: NUMPY_TYPES.get(i.type, np.float32) for i in s.get_inputs()}
                      for n, s in sessions.items()}
        super().__init__(entry, info)

    def run_graph(self, name: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        types = self.types[name]
        out = self.sessions[name].run(None, {k: np.asarray(feeds[k]).astype(t, copy=False) for k, t in types.items()})
        return dict(zip(self.graphs[name].outputs, out))


def _load_graphs(directory: Path, entry: OnnxRuntimeEntry, device: str, n_threads: int, opt_level: str,
                 info: dict[str, Any]) -> OrtGraphsExecutable:
    sessions = {name: open_session(directory / g.file, n_threads, device, opt_level)
                for name, g in (entry.graphs or {}).items()}
    first = next(iter(sessions.values()))
    info.update(providers=first.get_providers(),
                graph_inputs={n: [i.name for i in s.get_inputs()] for n, s in sessions.items()})
    if device.startswith("cuda"):
        info["timed_call"] = "numpy inputs copied to the GPU and outputs back at every graph call"
    return OrtGraphsExecutable(sessions, entry, info)


def int8_kernel_of(entry: OnnxRuntimeEntry) -> dict[str, str]:
    """{"int8_kernel": ...}: the integer path this CPU takes for the artifact's quantised graphs, or {} for a float
    artifact. Recorded with every measurement because int8 speed and fidelity depend on it."""
    if not entry.quantization:
        return {}
    settings = next(iter(entry.quantization.values())) if entry.multi_graph else entry.quantization
    return {"int8_kernel": ort_int8_kernel(settings)}


def load_onnxruntime(directory: Path, manifest: dict[str, Any], task, device: str, threads: Optional[int]):
    import onnxruntime as ort

    bundle = bundle_for_runtime(directory, manifest, task)
    entry = OnnxRuntimeEntry.read(manifest)
    opt_level = entry.ort_graph_optimization_level
    n_threads = int(threads or torch.get_num_threads())
    kernel = int8_kernel_of(entry) if device == "cpu" else {}
    if entry.multi_graph:
        info = {"name": "onnxruntime", "version": ort.__version__, "device": device, "threads": n_threads,
                "threads_from": "--threads" if threads else "torch.get_num_threads()",
                "graph_optimization_level": opt_level, "execution_mode": "sequential", **kernel}
        return bundle, _load_graphs(Path(directory), entry, device, n_threads, opt_level, info)
    session = open_session(directory / entry.onnx_file, n_threads, device, opt_level)
    out = session.get_outputs()[0]
    pool = task.output_kind == "embedding" and len(out.shape or []) == 3
    info = {"name": "onnxruntime", "version": ort.__version__, "device": device,
            "providers": session.get_providers(), "threads": n_threads,
            "threads_from": "--threads" if threads else "torch.get_num_threads()",
            "graph_optimization_level": opt_level, "execution_mode": "sequential",
            "graph_inputs": [i.name for i in session.get_inputs()], "graph_output": f"{out.name} {out.shape}",
            **kernel}
    if pool:
        info["pooling"] = POOLING_NOTE
    if "token_type_ids" in info["graph_inputs"] and "token_type_ids" not in task.input_names:
        info["token_type_ids"] = "fed as zeros (one segment)"
    if device.startswith("cuda"):
        info["timed_call"] = "inputs bound on the GPU once; each call includes copying the output to the host"
    return bundle, OrtExecutable(session, device, info, pool)


register_runtime(Runtime("onnxruntime", "ONNX Runtime InferenceSession (CPU; CUDA with onnxruntime-gpu)",
                         load_onnxruntime, check_device, ("cpu", "cuda"), OnnxRuntimeEntry))


# --- facts about an ONNX file ----------------------------------------------------------------------------
def external_data_files(path: Path) -> list[Path]:
    """The external-data files an ONNX model refers to, each checked to lie inside the model's folder.

    A tensor's ``location`` is a path the file's author chose: ``../../etc/hostname``, an absolute path or a
    symlink leading out of the folder would make squeezebench read (and copy into the artifact) a file of
    their choosing, so any of those refuses the model with one line.
    """
    import onnx
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises its own types for a damaged file
        raise SqueezebenchError(f"{path} is not a readable ONNX model ({type(exc).__name__}); "
                                "check the file (a truncated download?)") from None
    names = set()
    for tensor in _get_all_tensors(model):
        if uses_external_data(tensor):
            names.update(e.value for e in tensor.external_data if e.key == "location")
    return [safe_external_path(path, n) for n in sorted(names)]


def safe_external_path(model_path: Path, location: str) -> Path:
    """``location`` resolved beside ``model_path``; refused unless it is an existing file inside that folder."""
    folder = model_path.resolve().parent
    candidate = folder / location
    resolved = candidate.resolve()
    if Path(location).is_absolute() or not resolved.is_relative_to(folder) or resolved == folder:
        raise SqueezebenchError(
            f"ONNX model {model_path.name} refers to external data {location!r} outside its folder; only files "
            "beside the .onnx file are read (refusing a possibly hostile model)")
    if not resolved.is_file():
        raise SqueezebenchError(f"ONNX model {model_path.name} needs external data file {location!r}, which is "
                                f"missing from {folder}")
    return folder / Path(location)


def weight_files_of(path: Path) -> list[Path]:
    return [path] + external_data_files(path)


def count_onnx_parameters(path: Path) -> int:
    """Elements of the float and 8-bit initializers; quantisation scales/zero points and int shapes excluded."""
    import onnx
    from onnx import TensorProto

    model = onnx.load(str(path), load_external_data=False)
    qparams = set()
    for node in model.graph.node:
        if node.op_type in ("DequantizeLinear", "QuantizeLinear"):
            qparams.update(node.input[1:])
    kinds = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE,
             TensorProto.INT8, TensorProto.UINT8, TensorProto.INT4, TensorProto.UINT4}
    total = 0
    for t in model.graph.initializer:
        if t.data_type in kinds and t.dims and t.name not in qparams and not t.name.endswith(("_scale", "_zero_point")):
            total += int(np.prod(t.dims))
    return total


def optimized_graph_summary(path: Path, opt_level: str = DEFAULT_OPT_LEVEL, threads: int = 1) -> dict[str, Any]:
    """What ONNX Runtime really runs on CPU: op counts and initializer bytes by type after its optimisations."""
    import onnx
    from onnx import helper

    with tempfile.TemporaryDirectory(prefix="squeezebench-ort-") as tmp:
        options = session_options(threads, opt_level)
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        require_ort().InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        # initializer sizes come from their dims: external data (left beside the input model) is not read
        model = onnx.load(options.optimized_model_filepath, load_external_data=False)
    ops = Counter(n.op_type for n in model.graph.node)
    by_type: Counter = Counter()
    for t in model.graph.initializer:
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type))
        by_type[dtype.name] += int(np.prod(t.dims)) * dtype.itemsize if t.dims else dtype.itemsize
    int8_ops = {op: n for op, n in ops.items() if op.startswith(INT8_OP_PREFIXES)}
    float_bytes = sum(v for k, v in by_type.items() if k.startswith(("float", "bfloat")))
    int8_bytes = by_type.get("int8", 0) + by_type.get("uint8", 0)
    return {"opt_level": opt_level, "ops": dict(ops.most_common(12)), "int8_ops": int8_ops,
            "initializer_mb_by_type": {k: round(v / 1e6, 3) for k, v in by_type.items()},
            "weights_int8_in_memory": int8_bytes > float_bytes}


# --- a model given as an ONNX file --------------------------------------------------------------------------
def import_onnx_model(source: dict[str, Any], task, chain: list, directory: Path) -> tuple[list[Path], dict[str, Any]]:
    """Build phase for ``--model onnx:PATH``: copy the file (+ external data) into ``directory`` as the artifact and
    write its manifest; returns (weight files, manifest facts: parameters, notes, facts)."""
    from squeezebench.models.bundle import ModelBundle
    from squeezebench.runtimes.base import write_export_manifest

    missing = ort_missing()
    if missing:
        raise SqueezebenchError(f"running an ONNX model {missing}")
    src = Path(source["path"])
    sources = weight_files_of(src)  # refuses external data outside the model's folder before anything is read
    bundle = ModelBundle(module=None, source=source)
    if "input_ids" in task.input_names:
        where = source.get("tokenizer")
        if not where:
            raise SqueezebenchError(f"{task.name} needs a tokenizer for ONNX model {src.name} and none is beside it; "
                                    "pass --tokenizer DIR_OR_ID (e.g. --tokenizer offline:all-minilm-l6-v2)")
        task.attach_preprocessing(bundle, where, {})
    else:
        task.attach_preprocessing(bundle, str(src.parent), {})
    directory.mkdir(parents=True, exist_ok=True)
    weight_files = []
    for f in sources:
        target = directory / (MODEL_FILE if f == src else f.relative_to(src.resolve().parent))
        if not target.resolve().is_relative_to(directory.resolve()):  # belt and braces: never write outside
            raise SqueezebenchError(f"refusing to write {target} outside the artifact folder {directory}")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, target)
        weight_files.append(target)
    parameters = count_onnx_parameters(src)
    summary = optimized_graph_summary(weight_files[0])
    facts = {"in_memory_compressed": summary["weights_int8_in_memory"],
             "in_memory_format": ("int8 weights after ONNX Runtime's graph optimisations"
                                  if summary["weights_int8_in_memory"] else
                                  "float weights after ONNX Runtime's graph optimisations (e.g. int8 storage "
                                  "dequantised by constant folding at load)")}
    notes = [f"ONNX input model copied as is from {src}"]
    if source.get("tokenizer"):
        notes.append(f"tokenizer from {source['tokenizer']}")
    extra = {"parameters": parameters, "parameters_counted_from": "ONNX initializers (float and 8-bit tensors; "
             "quantisation scales and zero points excluded)", "notes": notes, "facts": facts}
    entry = OnnxRuntimeEntry(onnx_file=MODEL_FILE, ort_graph_optimization_level=DEFAULT_OPT_LEVEL,
                             ort_optimized_graph=summary)
    write_export_manifest(bundle, task, chain, directory, "onnxruntime", weight_files, extra, entry)
    return weight_files, extra
