"""What runs on the Ray cluster: one worker phase per task, in a fresh process as locally (squeezebench.isolation).

Module-level functions, so that Ray ships them by reference: squeezebench must be installed on every node. A task
works in a private temp folder (the artifact unpacked from the object store, the original's reference, the
worker's log) and returns what the driver needs: the phase's result, where and when it ran, the log's tail, and the
node's paths that the driver rewrites to its own.
"""

from __future__ import annotations

import io
import platform
import shutil
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from squeezebench import isolation

LOG_TAIL_BYTES = 256 * 1024  # how much of a remote worker log comes back


def _here() -> dict[str, Any]:
    import ray

    ctx = ray.get_runtime_context()
    return {"hostname": platform.node(), "node_id": ctx.get_node_id(), "node_ip": ray.util.get_node_ip_address(),
            "resources": {k: float(v) for k, v in ctx.get_assigned_resources().items()}}


def _tar(directory: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(directory, arcname=".")
    return buf.getvalue()


def untar(payload: bytes, directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(payload), mode="r") as tar:
        tar.extractall(directory, filter="data")


def _log_text(path: Path) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, path.stat().st_size - LOG_TAIL_BYTES))
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


def build_task(job: dict, timeout_s: float, shared: bool, log_as: str) -> tuple[dict, Optional[bytes]]:
    """The build phase on some node; returns (what the driver needs, the artifact as a tar or None)."""
    where = _here()
    with tempfile.TemporaryDirectory(prefix="sbray-") as tmp:
        work = Path(tmp)
        artifact_dir = job["artifact_dir"] if shared else str(work / "artifact")
        start = time.time()
        result, acct = isolation.spawn("build", dict(job, artifact_dir=artifact_dir), work / "build.log", timeout_s)
        end = time.time()
        result["os"] = acct
        payload = _tar(Path(artifact_dir)) if not shared and result.get("status") == "ok" else None
        meta = {"result": result, "where": where, "start": start, "end": end, "log": _log_text(work / "build.log"),
                "paths": {artifact_dir: job["artifact_dir"], str(work / "build.log"): log_as}}
    return meta, payload


def measure_task(job: dict, artifact: Optional[bytes], reference: Optional[bytes], timeout_s: float,
                 writes_reference: bool, log_as: str) -> dict:
    """The measure phase on the node Ray chose (it holds this node's timing slot while it runs)."""
    where = _here()
    with tempfile.TemporaryDirectory(prefix="sbray-") as tmp:
        work = Path(tmp)
        paths = {str(work / "measure.log"): log_as}  # named in a failed phase's error
        if artifact is not None:
            untar(artifact, work / "artifact")
            paths[str(work / "artifact")] = job["artifact_dir"]
            job = dict(job, artifact_dir=str(work / "artifact"))
        ref_path = work / "reference.npz"
        if reference is not None:
            ref_path.write_bytes(reference)
        paths[str(ref_path)] = job["reference_path"]
        job = dict(job, reference_path=str(ref_path))
        if job["device"].startswith("cuda"):
            job["device"] = "cuda"  # the GPU Ray assigned (CUDA_VISIBLE_DEVICES) is this process's first
        start = time.time()
        result, acct = isolation.spawn("measure", job, work / "measure.log", timeout_s)
        end = time.time()
        reference_out = ref_path.read_bytes() if writes_reference and ref_path.is_file() else None
        return {"result": result, "os": acct, "where": where, "start": start, "end": end,
                "log": _log_text(work / "measure.log"), "reference": reference_out, "paths": paths}
