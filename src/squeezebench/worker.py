"""One phase of one variant, run in a fresh subprocess: ``python -m squeezebench.worker PHASE JOB RESULT``.

build:   load the model from its source, apply the method chain, save the artifact as it would ship.
measure: load the saved artifact on a device, time it, read memory peaks, score quality.
The result is written as JSON to RESULT; user-facing problems become {"status": "skipped"|"failed"}.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any


def _write(path: str, payload: dict[str, Any]) -> None:
    tmp = Path(path).with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, default=_jsonable))
    tmp.replace(path)


def _jsonable(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def _setup(job: dict[str, Any]):
    import torch

    if job["protocol"].get("threads"):
        torch.set_num_threads(int(job["protocol"]["threads"]))
    import squeezebench.methods  # noqa: F401  (registers methods)
    import squeezebench.runtimes  # noqa: F401
    from squeezebench.tasks import TASKS, Protocol

    return TASKS.get(job["task"]), Protocol(**job["protocol"])


def _dataset(job: dict[str, Any], protocol, with_rest: bool = False):
    from squeezebench.tasks.data import DatasetOptions, load_dataset

    full = load_dataset(job["dataset"], DatasetOptions(**job["dataset_options"]))
    subset = full.subset(protocol.limit, protocol.seed)
    return (subset, full.rest(subset)) if with_rest else subset


def build(job: dict[str, Any]) -> dict[str, Any]:
    from squeezebench.measures.size import size_record
    from squeezebench.methods import METHODS, MethodContext, apply_chain, parse_chain
    from squeezebench.models.sources import load_model
    from squeezebench.runtimes.base import write_export_manifest
    from squeezebench.runtimes.pytorch import save_pytorch_artifact

    task, protocol = _setup(job)
    chain = parse_chain(job["method"])
    if job["source"]["kind"] == "onnx":  # an ONNX file is copied as is and run by ONNX Runtime
        from squeezebench.runtimes.onnxruntime import build_onnx_input

        return build_onnx_input(job, task, chain)
    dataset, rest = _dataset(job, protocol, with_rest=True)
    t0 = time.perf_counter()
    bundle = load_model(job["source"], task, num_labels=len(dataset.label_names or []) or None)
    load_s = time.perf_counter() - t0
    parameters = bundle.parameter_count()
    data = task.prepare(dataset, bundle, protocol)
    calib: dict[str, Any] = {}

    def calibration(n: int) -> list:
        """Calibration inputs, prepared on first use only (tokenising the rest of a corpus is not free)."""
        if "data" not in calib:
            calib["data"], note = task.calibration_data(data, rest, bundle, protocol)
            if note:
                ctx.notes.append(note)
        return task.calibration_inputs(bundle, calib["data"], protocol, n)

    ctx = MethodContext(task=task, bundle=bundle, device=job["build_device"], protocol=protocol,
                        calibration=calibration)
    for config in chain:
        method = METHODS.get(config.name)
        if method.check is not None:
            reason = method.check(config, ctx)
            if reason:
                return {"status": "skipped", "reason": f"{config.name}: {reason}"}
    directory = Path(job["artifact_dir"])
    directory.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    export = apply_chain(bundle, chain, ctx, directory)
    transform_s = time.perf_counter() - t0
    extra = {"parameters": parameters, "notes": ctx.notes, "facts": ctx.facts}
    if export is None:
        runtime = "pytorch"
        weight_files = save_pytorch_artifact(bundle, task, chain, directory, extra)
    else:
        runtime = export.runtime
        weight_files = [Path(p) for p in export.weight_files]
        write_export_manifest(bundle, task, chain, directory, runtime, weight_files, {**extra, **export.manifest_extra})
    all_files = [p for p in directory.rglob("*") if p.is_file()]
    size = size_record(weight_files, all_files, parameters, directory)
    size.update(ctx.facts)
    return {"status": "ok", "runtime": runtime, "load_source_s": load_s, "transform_s": transform_s,
            "notes": ctx.notes, "size": size}


def measure(job: dict[str, Any]) -> dict[str, Any]:
    import torch

    from squeezebench import references
    from squeezebench.measures import memory
    from squeezebench.measures.environment import environment
    from squeezebench.measures.latency import measure_latency
    from squeezebench.methods import METHODS, MethodContext, parse_chain
    from squeezebench.runtimes.base import load_artifact

    task, protocol = _setup(job)
    device = job["device"]
    import transformers  # noqa: F401  (part of the import baseline)

    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            return {"status": "skipped", "reason": "no CUDA device visible to PyTorch"}
        torch.cuda.init()
        torch.empty(1, device=device)  # create the context before the baseline
    baseline_rss = memory.current_rss_mb()
    chain = parse_chain(job["method"])
    for config in chain:  # device-specific applicability (e.g. bf16 on a GPU without it)
        method = METHODS.get(config.name)
        if device.split(":")[0] not in method.devices:
            return {"status": "skipped", "reason": f"{config.name} runs on {', '.join(method.devices)} only"}
        if method.check is not None:
            reason = method.check(config, MethodContext(task=task, bundle=None, device=device))
            if reason:
                return {"status": "skipped", "reason": f"{config.name}: {reason}"}
    if device.startswith("cuda"):
        memory.reset_cuda_peaks()
    t0 = time.perf_counter()
    bundle, executable = load_artifact(Path(job["artifact_dir"]), task, device, protocol.threads)
    load_s = time.perf_counter() - t0
    data = task.prepare(_dataset(job, protocol), bundle, protocol)
    inputs = task.example_inputs(bundle, data, protocol)
    shapes = {k: list(v.shape) for k, v in inputs.items()}
    with torch.no_grad():  # not inference_mode: sparse CSR weights fail under it (torch 2.13)
        prepared = executable.prepare(inputs)
        latency = measure_latency(lambda: executable.run_prepared(prepared), device, protocol.warmup_iters,
                                  protocol.min_iters, protocol.min_time_s, protocol.max_time_s)
    peak_rss = memory.peak_rss_mb()
    mem: dict[str, Any] = {"unit": "MB", "baseline_rss_mb": baseline_rss, "peak_rss_mb": peak_rss,
                           "ram_mb": peak_rss - baseline_rss,
                           "scope": "peak during artifact load and timed inference, minus RSS after imports"}
    if device.startswith("cuda"):
        mem["vram"] = memory.cuda_memory(torch.device(device).index or 0)
    reference, reference_problem = None, None
    ref_path = Path(job["reference_path"])
    if not job["is_original"]:
        reference, reference_problem = references.load(ref_path)
    t0 = time.perf_counter()
    with torch.no_grad():  # not inference_mode: sparse CSR weights fail under it (torch 2.13)
        result = task.evaluate(executable, bundle, data, protocol, reference)
    eval_s = time.perf_counter() - t0
    mem["process_peak_rss_mb"] = memory.peak_rss_mb()  # whole process, quality evaluation included
    quality = {"primary": task.primary_metric, "metrics": result.metrics, "flags": result.flags,
               "protocol": result.protocol, "task_version": task.version, "eval_s": eval_s}
    if reference_problem:
        quality["flags"] = quality["flags"] + [reference_problem]
    if job["is_original"] and device == "cpu" and result.reference is not None:
        references.save(ref_path, result.reference)
        quality["reference_file"] = str(ref_path)
    info = dict(executable.info)
    info["first_call_ms"] = latency.get("first_call_ms")
    return {"status": "ok", "load_artifact_s": load_s, "input_shapes": shapes, "latency": latency,
            "memory": mem, "quality": quality, "runtime": info, "environment": environment(device)}


PHASES = {"build": build, "measure": measure}


def main(argv: list[str]) -> int:
    phase, job_path, result_path = argv
    job = json.loads(Path(job_path).read_text())
    from squeezebench.errors import SqueezebenchError

    try:
        payload = PHASES[phase](job)
    except SqueezebenchError as exc:
        payload = {"status": "failed", "error": str(exc)}
    except Exception as exc:  # noqa: BLE001 - any crash becomes a failed record; the run goes on
        traceback.print_exc()
        payload = {"status": "failed", "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
    _write(result_path, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
