"""One phase of one variant, run in a fresh subprocess: ``python -m squeezebench.worker PHASE JOB RESULT``.

build:   load the model from its source, apply the method chain, save the artifact as it would ship; the
         build-phase measures (weights size) read the saved files.
measure: load the saved artifact on a device and drive every registered measure (latency, contention, memory,
         quality, generation, environment, ...) through the phases of measures/base.py: around the whole
         measurement, begin, around the load, run, around the timed window (opened by latency), end; each
         measure gives its section of the record.
The result is written as JSON to RESULT; user-facing problems become {"status": "skipped"|"failed"}.
"""

from __future__ import annotations

import sys
import time
import traceback
from pathlib import Path
from typing import Any

from squeezebench.atomic import atomic_write_json
from squeezebench.variant import Job

TRAINING_DIR = "_training"  # beside a model's artifacts: training checkpoints kept across runs (MethodContext.work_dir)


def _jsonable(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if hasattr(obj, "dump"):  # a record section
        return obj.dump()
    return str(obj)


def _setup(job: Job):
    import torch

    if job.threads:
        torch.set_num_threads(int(job.threads))
    import squeezebench.measures  # noqa: F401  (registers measures)
    import squeezebench.methods  # noqa: F401  (registers methods and their structure restores)
    import squeezebench.runtimes  # noqa: F401
    from squeezebench.methods import chain_from_links
    from squeezebench.plugins import load_plugins

    load_plugins(job.plugins)
    from squeezebench.protocol import Protocol
    from squeezebench.tasks import TASKS

    return TASKS.get(job.task), Protocol.from_dict(job.protocol), chain_from_links(job.chain)


def _dataset(job: Job, task, protocol, with_rest: bool = False):
    """The evaluated subset, and (``with_rest``) what calibration draws from: the examples outside it, or every
    example of --calibration-dataset when one is given."""
    from squeezebench.tasks.data import DatasetOptions, load_dataset

    options = DatasetOptions(**job.dataset_options)
    full = load_dataset(job.dataset, options, task.examples_from_rows)
    subset = full.subset(protocol.limit, protocol.seed)
    if not with_rest:
        return subset
    if protocol.calibration_dataset:
        return subset, load_dataset(protocol.calibration_dataset, options, task.examples_from_rows)
    return subset, full.rest(subset)


def _build_sections(directory: Path, weight_files: list[Path], parameters: int, facts: dict) -> dict[str, Any]:
    from squeezebench.measures.base import BuildSession, measures

    session = BuildSession(directory, weight_files, parameters, facts)
    return {m.name: m.build(session) for m in measures("build")}


def build(job: Job) -> dict[str, Any]:
    from squeezebench.methods import METHODS, MethodContext, apply_chain
    from squeezebench.models.sources import load_model
    from squeezebench.runtimes.base import write_export_manifest
    from squeezebench.runtimes.pytorch import save_pytorch_artifact

    task, protocol, chain = _setup(job)
    directory = Path(job.artifact_dir)
    if job.source["kind"] == "onnx":  # an ONNX file is copied as is and run by ONNX Runtime
        from squeezebench.runtimes.onnxruntime import import_onnx_model

        if any(c.name != "original" for c in chain):
            return {"status": "skipped", "reason": "an ONNX input model can only be measured as is"}
        t0 = time.perf_counter()
        weight_files, extra = import_onnx_model(job.source, task, chain, directory)
        return {"status": "ok", "runtime": "onnxruntime", "load_source_s": time.perf_counter() - t0,
                "transform_s": 0.0, "notes": extra["notes"],
                **_build_sections(directory, weight_files, extra["parameters"], extra["facts"])}
    dataset, rest = _dataset(job, task, protocol, with_rest=True)
    t0 = time.perf_counter()
    bundle = load_model(job.source, task, num_labels=len(dataset.label_names or []) or None)
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

    ctx = MethodContext(task=task, bundle=bundle, device=job.build_device, protocol=protocol,
                        calibration=calibration,
                        evaluated=lambda: task.evaluated_inputs(bundle, data, protocol),
                        work_dir=directory.parent / TRAINING_DIR)
    for config in chain:
        method = METHODS.get(config.name)
        if method.check is not None:
            reason = method.check(config, ctx)
            if reason:
                return {"status": "skipped", "reason": f"{config.name}: {reason}"}
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
        write_export_manifest(bundle, task, chain, directory, runtime, weight_files, extra, export.entry)
    return {"status": "ok", "runtime": runtime, "load_source_s": load_s, "transform_s": transform_s,
            "notes": ctx.notes, **_build_sections(directory, weight_files, parameters, ctx.facts)}


def _skip_reason(task, chain, device: str) -> str | None:
    """Device-specific applicability (e.g. bf16 on a GPU without it), checked before anything loads."""
    from squeezebench.methods import METHODS, MethodContext

    for config in chain:
        method = METHODS.get(config.name)
        if device.split(":")[0] not in method.devices:
            return f"{config.name} runs on {', '.join(method.devices)} only"
        if method.check is not None:
            reason = method.check(config, MethodContext(task=task, bundle=None, device=device))
            if reason:
                return f"{config.name}: {reason}"
    return None


def measure(job: Job) -> dict[str, Any]:
    import torch

    from squeezebench import references
    from squeezebench.measures.base import MeasureSession, measures, stacked
    from squeezebench.runtimes.base import load_artifact

    task, protocol, chain = _setup(job)
    device = job.device
    import transformers  # noqa: F401  (part of the import baseline)

    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            return {"status": "skipped", "reason": "no CUDA device visible to PyTorch"}
        torch.cuda.init()
        torch.empty(1, device=device)  # create the context before the baseline
    reason = _skip_reason(task, chain, device)
    if reason:
        return {"status": "skipped", "reason": reason}
    plugins = measures("measure")
    session = MeasureSession(task=task, protocol=protocol, device=device, measures=plugins)
    with stacked(plugins, "around_measurement", session):
        for m in plugins:
            m.begin(session)
        with stacked(plugins, "around_load", session):
            t0 = time.perf_counter()
            session.bundle, session.executable = load_artifact(Path(job.artifact_dir), task, device, protocol.threads)
            load_s = time.perf_counter() - t0
        session.data = task.prepare(_dataset(job, task, protocol), session.bundle, protocol)
        session.inputs = task.example_inputs(session.bundle, session.data, protocol)
        reference_problem = None
        if not job.is_original:
            session.reference, reference_problem = references.load(Path(job.reference_path))
        for m in plugins:
            section = m.run(session)
            if section is not None:
                session.sections[m.name] = section
        for m in plugins:
            m.end(session)
    evaluation, quality = session.evaluation, session.sections.get("quality")
    if reference_problem and quality is not None:
        quality.flags.append(reference_problem)
    if job.is_original and device == "cpu" and evaluation is not None and evaluation.reference is not None:
        references.save(Path(job.reference_path), evaluation.reference)
        if quality is not None:
            quality.reference_file = job.reference_path
    info = dict(session.executable.info)
    latency = session.sections.get("latency")
    info["first_call_ms"] = latency.first_call_ms if latency is not None else None
    return {"status": "ok", "load_artifact_s": load_s,
            "input_shapes": {k: list(v.shape) for k, v in session.inputs.items()},
            **session.sections, "runtime": info}


PHASES = {"build": build, "measure": measure}


def configure_logging(stream=None) -> None:
    """squeezebench's INFO lines (a distillation's step, loss and ETA; what a method did) go to the phase's log
    file, line by line as they happen (the parent sends this process's stderr there): without a handler Python
    drops INFO, and a 15-minute student training said nothing until it ended. Other libraries stay at WARNING."""
    import logging

    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s squeezebench: %(message)s", "%H:%M:%S"))
    root = logging.getLogger("squeezebench")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False


def main(argv: list[str]) -> int:
    phase, job_path, result_path = argv
    configure_logging()
    job = Job.read(Path(job_path))
    from squeezebench.errors import SqueezebenchError

    try:
        payload = PHASES[phase](job)
    except SqueezebenchError as exc:
        payload = {"status": "failed", "error": str(exc)}
    except Exception as exc:  # noqa: BLE001 - any crash becomes a failed record; the run goes on
        traceback.print_exc()
        payload = {"status": "failed", "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
    atomic_write_json(Path(result_path), payload, indent=None, default=_jsonable)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
