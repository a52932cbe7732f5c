"""Run a study's variants on a Ray cluster, with the same worker processes and records as a local run.

- Each variant's build is one Ray task; each measurement is one Ray task submitted when its build has finished
  (and, for agreement metrics, once the model's original has been measured on ``cpu``). Tasks are never retried
  by Ray: a killed worker or a lost node becomes a failed record with the reason, and the rest goes on.
- Inside a task the phase runs exactly as locally: ``squeezebench.isolation.spawn`` starts
  ``python -m squeezebench.worker`` in a fresh process, so latency and memory are measured the same way.
- Resources: every task asks for ``num_cpus`` = the run's ``--threads`` (or 1); CUDA work asks for ``num_gpus=1``
  (the GPU Ray assigns is the worker's ``cuda``); every measurement also asks for one ``squeezebench_timing_slot``,
  a custom resource each node offers once (``ray start --resources '{"squeezebench_timing_slot": 1}'``), so that
  no two timed measurements share a node. Builds need no slot. Ray sets ``OMP_NUM_THREADS`` to a task's
  ``num_cpus``, so without ``--threads`` a measurement runs PyTorch on one thread (recorded in
  ``environment.torch_threads``, which keeps it apart from local multi-threaded numbers). ``--ray-resources`` adds custom resources per
  device, per method label, per ``LABEL@DEVICE`` or for ``build``, to steer tasks to node types.
- The artifact travels in Ray's object store (the artifact folder as a tar in memory; fine for small artifacts)
  or, with ``--artifact-dir DIR``, through a folder every node mounts at the same path. The driver keeps a copy
  of object-store artifacts under ``--out/artifacts`` and the original's reference under ``--out/references``,
  so that ``--out`` looks as after a local run; worker logs come back into ``--out/logs``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from squeezebench import isolation
from squeezebench.atomic import atomic_write
from squeezebench.errors import SqueezebenchError
from squeezebench.executors.base import Executor, Sink, Slot, Unit, register_executor
from squeezebench.executors.ray_tasks import build_task, measure_task, untar
from squeezebench.results.schema import Placement

log = logging.getLogger(__name__)

TIMING_SLOT = "squeezebench_timing_slot"
WAIT_S = 5.0  # how often the driver re-checks that queued tasks can still be placed (nodes may be lost)
INSTALL = "pip install 'squeezebench[ray]'"


def _ray():
    try:
        import ray
    except ImportError:
        raise SqueezebenchError(f"--executor ray needs Ray, which is not installed; {INSTALL}") from None
    return ray


# --- the driver ---------------------------------------------------------------------------------------------

@dataclass
class Request:
    """What one task asks the cluster for."""

    num_cpus: float = 1
    num_gpus: float = 0
    resources: dict[str, float] = field(default_factory=dict)

    def options(self) -> dict[str, Any]:
        return {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus, "resources": dict(self.resources),
                "max_retries": 0, "retry_exceptions": False}

    def describe(self) -> str:
        parts = {"CPU": self.num_cpus, **({"GPU": self.num_gpus} if self.num_gpus else {}), **self.resources}
        return json.dumps(parts, sort_keys=True)

    def lacking(self, nodes: list[dict]) -> Optional[set[str]]:
        """None when some alive node offers all of it; else the smallest set of resource names no node covers."""
        need = {"CPU": self.num_cpus, "GPU": self.num_gpus, **self.resources}
        need = {k: v for k, v in need.items() if v}
        best: Optional[set[str]] = None
        for node in nodes:
            have = node.get("Resources", {})
            missing = {k for k, v in need.items() if have.get(k, 0) < v}
            if not missing:
                return None
            best = missing if best is None or len(missing) < len(best) else best
        return best if best is not None else set(need)


def parse_resources(text: Optional[str]) -> dict[str, dict[str, float]]:
    """``--ray-resources`` JSON: {KEY: {RESOURCE: AMOUNT}}, KEY a device, a method label, LABEL@DEVICE or build."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise SqueezebenchError(f"--ray-resources is not valid JSON ({exc}); pass e.g. "
                                "'{\"cpu\": {\"node_type_a\": 0.01}}'") from None
    ok = isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, dict) and all(
            isinstance(r, str) and isinstance(a, (int, float)) and not isinstance(a, bool) and a > 0
            for r, a in v.items()) for k, v in value.items())
    if not ok:
        raise SqueezebenchError("--ray-resources must map a device, method or 'build' to {RESOURCE: positive "
                                "amount}, e.g. '{\"cpu\": {\"node_type_a\": 0.01}}'")
    if any(TIMING_SLOT in v for v in value.values()):
        raise SqueezebenchError(f"--ray-resources must not name {TIMING_SLOT}: every measurement asks for one "
                                "already and builds need none")
    return {k: {r: float(a) for r, a in v.items()} for k, v in value.items()}


@register_executor
class RayExecutor(Executor):
    """Builds and measurements as Ray tasks; records written by this process (the driver) as they arrive."""

    name = "ray"

    def __init__(self, address: Optional[str] = None, artifact_dir: Optional[str] = None,
                 resources: Optional[str | dict] = None):
        _ray()
        self.address = address or os.environ.get("RAY_ADDRESS") or "local"
        if artifact_dir is not None and not Path(artifact_dir).is_absolute():
            raise SqueezebenchError(f"--artifact-dir must be an absolute path that every Ray node mounts, got "
                                    f"{artifact_dir!r}")
        self.artifact_dir = Path(artifact_dir) if artifact_dir else None
        self.resources = resources if isinstance(resources, dict) else parse_resources(resources)

    # --- requests ------------------------------------------------------------------------------------------
    def _check_keys(self, units: list[Unit]) -> None:
        labels = {u.variant.label for u in units}
        devices = {s.device for u in units for s in u.slots}
        known = {"build"} | labels | devices | {f"{m}@{d}" for m in labels for d in devices}
        for key in self.resources:
            if key not in known:
                import difflib

                close = difflib.get_close_matches(key, sorted(known), n=2, cutoff=0.5)
                hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
                raise SqueezebenchError(f"--ray-resources key {key!r} is not 'build', a device, a method or "
                                        f"METHOD@DEVICE of this run{hint}")

    def _build_request(self, unit: Unit) -> Request:
        return Request(num_cpus=unit.build_job.threads or 1,
                       num_gpus=1 if unit.build_job.device.startswith("cuda") else 0,
                       resources=dict(self.resources.get("build", {})))

    def _measure_request(self, unit: Unit, slot: Slot) -> Request:
        extra: dict[str, float] = {}
        for key in (slot.device.split(":")[0], slot.device, unit.variant.label, f"{unit.variant.label}@{slot.device}"):
            extra.update(self.resources.get(key, {}))
        return Request(num_cpus=slot.job.threads or 1, num_gpus=1 if slot.device.startswith("cuda") else 0,
                       resources={**extra, TIMING_SLOT: 1})

    # --- the run -------------------------------------------------------------------------------------------
    def execute(self, units: list[Unit], sink: Sink) -> None:
        ray = _ray()
        self._check_keys(units)
        for unit in units:
            for slot in unit.slots:
                if slot.done is not None:
                    sink.keep(slot)
        if not any(u.todo for u in units):
            return
        # "local": a private Ray on this machine (one timing slot); anything else joins an existing cluster
        start_options = {"resources": {TIMING_SLOT: 1}, "include_dashboard": False} if self.address == "local" else {}
        _check_reachable(self.address)
        try:
            ray.init(address=self.address, log_to_driver=False, logging_level=logging.WARNING, **start_options)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SqueezebenchError(f"cannot join the Ray cluster at {self.address} ({first[:200]}); pass the head "
                                    "node's host:port as --ray-address, or auto on a node of the cluster") from None
        try:
            _Driver(ray, self, units, sink).run()
        finally:
            ray.shutdown()


def _check_reachable(address: str) -> None:
    """A host:port that does not answer is reported at once (ray.init would retry for minutes)."""
    import socket

    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "://" in address:
        return
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise SqueezebenchError(f"no Ray head node answers at {address} ({exc.strerror or exc}); pass the head "
                                "node's host:port (ray start --head --port) as --ray-address") from None


class _Driver:
    """One run's bookkeeping on the driver: what is submitted, what waits, and what is finished."""

    def __init__(self, ray, executor: RayExecutor, units: list[Unit], sink: Sink):
        self.ray, self.ex, self.units, self.sink = ray, executor, units, sink
        self.timeout_s = float(sink.timeout_s)
        self.build_fn = ray.remote(num_returns=2)(build_task)
        self.measure_fn = ray.remote(measure_task)
        self.pending: dict[Any, tuple] = {}  # ObjectRef -> (kind, unit, slot-or-None, request, extra)
        self.waiting: dict[Path, list[tuple]] = {}  # reference path -> measurements waiting for the original
        self.references: dict[Path, Any] = {}  # reference path -> ObjectRef of its bytes (or None)
        self.remaining = sum(len(u.todo) for u in units)
        self.finished = 0

    # --- cluster -------------------------------------------------------------------------------------------
    def nodes(self) -> list[dict]:
        return [n for n in self.ray.nodes() if n.get("Alive")]

    def _describe_cluster(self, nodes: list[dict]) -> str:
        kinds = []
        for n in nodes:
            res = {k: v for k, v in n.get("Resources", {}).items()
                   if not k.startswith("node:") and k not in ("memory", "object_store_memory")}
            kinds.append(f"{n.get('NodeManagerAddress')} ({n['NodeID'][:8]}): {json.dumps(res, sort_keys=True)}")
        return "; ".join(kinds)

    def status(self) -> str:
        kinds = [v[0] for v in self.pending.values()]
        waiting = sum(len(w) for w in self.waiting.values())
        return (f"cluster: {kinds.count('build')} building, {kinds.count('measure')} measuring, {waiting} waiting "
                f"for the original, {self.finished}/{self.remaining} done")

    # --- submission ----------------------------------------------------------------------------------------
    def run(self) -> None:
        nodes = self.nodes()
        if not any(n.get("Resources", {}).get(TIMING_SLOT, 0) >= 1 for n in nodes):
            raise SqueezebenchError(
                f"no node of the Ray cluster at {self.ex.address} offers the {TIMING_SLOT} resource; start every "
                f"node with ray start --resources '{{\"{TIMING_SLOT}\": 1}}' (one timed measurement per node)")
        self.sink.progress(f"ray: {len(nodes)} node(s): {self._describe_cluster(nodes)}")
        for unit in self.units:
            if unit.variant.is_original and any(s.device == "cpu" for s in unit.todo):
                self.waiting.setdefault(unit.reference, [])
        for unit in self.units:
            if unit.todo:
                self.submit_build(unit)
        with _stop_on_signals() as stop:
            try:
                self.loop()
            except BaseException as exc:
                for ref in list(self.pending):
                    try:
                        self.ray.cancel(ref, force=True)
                    except Exception:  # noqa: BLE001 - best effort while stopping
                        pass
                if stop.signum is not None and not isinstance(exc, isolation.Stopped):
                    # Ray's wait turns the handler's exception into a bare KeyboardInterrupt
                    raise isolation.Stopped(stop.signum, "waiting for the Ray cluster") from None
                raise

    def submit_build(self, unit: Unit) -> None:
        request = self.ex._build_request(unit)
        lacking = request.lacking(self.nodes())
        if lacking:
            self.fail_build(unit, f"no alive node of the Ray cluster offers {sorted(lacking)} (the build asks "
                            f"for {request.describe()})", lacking)
            return
        job = asdict(unit.build_job)
        if self.ex.artifact_dir is not None:
            job["artifact_dir"] = str(self.shared_dir(unit))
        meta, artifact = self.build_fn.options(**request.options()).remote(
            job, self.timeout_s, self.ex.artifact_dir is not None, str(unit.todo[0].log_path))
        self.pending[meta] = ("build", unit, None, request, artifact)
        self.sink.progress(f"{unit.todo[0].label}: build submitted {request.describe()}")

    def shared_dir(self, unit: Unit) -> Path:
        """The artifact's folder in --artifact-dir: the same relative layout as --out/artifacts."""
        return self.ex.artifact_dir / unit.artifact_dir.parent.name / unit.artifact_dir.name

    def submit_measure(self, unit: Unit, slot: Slot, record, artifact) -> None:
        if not unit.variant.is_original and unit.reference in self.waiting:
            self.waiting[unit.reference].append((unit, slot, record, artifact))
            return
        request = self.ex._measure_request(unit, slot)
        lacking = request.lacking(self.nodes())
        if lacking:
            self.unplaceable(unit, slot, record, request, lacking)
            return
        job = asdict(slot.job)
        if self.ex.artifact_dir is not None:
            job["artifact_dir"] = str(self.shared_dir(unit))
        ref = self.measure_fn.options(**request.options()).remote(
            job, artifact, self.reference_ref(unit), self.timeout_s, unit.writes_reference(slot), str(slot.log_path))
        self.pending[ref] = ("measure", unit, slot, request, record)

    def reference_ref(self, unit: Unit):
        if unit.variant.is_original:
            return None
        if unit.reference not in self.references:
            path = unit.reference
            self.references[path] = self.ray.put(path.read_bytes()) if path.is_file() else None
        return self.references[unit.reference]

    # --- completion ----------------------------------------------------------------------------------------
    def loop(self) -> None:
        while self.pending:
            ready, _ = self.ray.wait(list(self.pending), num_returns=1, timeout=WAIT_S)
            if not ready:
                self.drop_unplaceable()
                continue
            ref = ready[0]
            kind, unit, slot, request, extra = self.pending.pop(ref)
            try:
                out = self.ray.get(ref)
                error = None
            except self.ray.exceptions.RayError as exc:
                out, error = None, _ray_error(exc)
            if kind == "build":
                self.built(unit, out, error, extra)
            else:
                self.measured(unit, slot, extra, out, error)

    def drop_unplaceable(self) -> None:
        """A queued task that no alive node can take any more (its node type was lost) fails instead of waiting
        forever; a running task on a lost node ends by itself with Ray's error."""
        nodes = self.nodes()
        for ref, (kind, unit, slot, request, extra) in list(self.pending.items()):
            lacking = request.lacking(nodes)
            if not lacking:
                continue
            self.pending.pop(ref)
            self.ray.cancel(ref, force=True)
            for cancelled in (ref, extra) if kind == "build" else (ref,):
                _consume(self.ray, cancelled)
            if kind == "build":
                self.fail_build(unit, f"no alive node of the Ray cluster offers {sorted(lacking)} any more "
                                f"(node lost?); the build asked for {request.describe()}", lacking)
            else:
                self.unplaceable(unit, slot, extra, request, lacking)

    def built(self, unit: Unit, out: Optional[dict], error: Optional[str], artifact) -> None:
        if error is not None:
            _consume(self.ray, artifact)  # the tar's ref failed too; fetched so that Ray does not log it as unhandled
            self.fail_build(unit, f"build task failed on the Ray cluster: {error}", set())
            return
        self.append_log(unit.todo[0].log_path, "build", out)
        result = out["result"]
        if self.ex.artifact_dir is None and result.get("status") == "ok":
            untar(self.ray.get(artifact), unit.artifact_dir)  # the driver's copy, as after a local run
        result = _rewrite(result, out["paths"])
        where = out["where"]
        self.sink.progress(f"{unit.todo[0].label}: built on {where['node_ip']} (node {where['node_id'][:8]}) "
                           f"in {out['end'] - out['start']:.1f} s: {result.get('status')}")
        for slot in unit.todo:
            record = self.sink.start(unit, slot)
            if self.sink.apply_build(record, dict(result), check_cuda=False):
                record.node = Placement(executor="ray", build_node_id=where["node_id"])
                self.submit_measure(unit, slot, record, None if self.ex.artifact_dir else artifact)
            else:
                self.done(unit, slot, record)

    def fail_build(self, unit: Unit, error: str, lacking: set[str]) -> None:
        for slot in unit.todo:
            record = self.sink.start(unit, slot)
            status = "skipped" if lacking == {"GPU"} else "failed"
            build = {"status": status, **({"reason": error} if status == "skipped" else {"error": error})}
            self.sink.apply_build(record, build, check_cuda=False)
            self.done(unit, slot, record)

    def unplaceable(self, unit: Unit, slot: Slot, record, request: Request, lacking: set[str]) -> None:
        why = f"no alive node of the Ray cluster offers {sorted(lacking)} (the measurement asks for {request.describe()})"
        if lacking == {"GPU"}:
            record.status, record.reason = "skipped", why
        else:
            record.status, record.error = "failed", why + "; start a node with these resources or change --ray-resources"
        self.done(unit, slot, record)

    def measured(self, unit: Unit, slot: Slot, record, out: Optional[dict], error: Optional[str]) -> None:
        if error is not None:
            record.status, record.error = "failed", f"measure task failed on the Ray cluster: {error}"
            self.done(unit, slot, record)
            return
        self.append_log(slot.log_path, "measure", out)
        if out.get("reference") is not None:  # the original's outputs: kept where a local run keeps them
            atomic_write(unit.reference, lambda fh: fh.write(out["reference"]))
            self.references[unit.reference] = self.ray.put(out["reference"])
        where = out["where"]
        placement = Placement(executor="ray", hostname=where["hostname"], node_id=where["node_id"],
                              node_ip=where["node_ip"], resources=where["resources"],
                              build_node_id=record.node.build_node_id if record.node else None,
                              start=out["start"], end=out["end"])
        self.sink.apply_measure(record, _rewrite(out["result"], out["paths"]), out["os"], placement)
        self.done(unit, slot, record)

    def done(self, unit: Unit, slot: Slot, record) -> None:
        self.finished += 1
        self.sink.finish(slot, record)
        if unit.writes_reference(slot) and unit.reference in self.waiting:
            for args in self.waiting.pop(unit.reference):
                self.submit_measure(*args)
        self.sink.progress(f"  {self.status()}")

    def append_log(self, path: Path, phase: str, out: dict) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        where = out["where"]
        with open(path, "a", encoding="utf-8", errors="replace") as fh:
            fh.write(f"\n=== ray {phase} on {where['hostname']} {where['node_ip']} (node {where['node_id']})\n")
            fh.write(out.get("log", ""))


def _rewrite(obj: Any, paths: dict[str, str]) -> Any:
    """Paths on the node that ran a phase, in its result, as they are on the driver."""
    if isinstance(obj, str):
        for remote in sorted(paths, key=len, reverse=True):  # a folder's file before the folder
            obj = obj.replace(remote, paths[remote])
        return obj
    if isinstance(obj, dict):
        return {k: _rewrite(v, paths) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_rewrite(v, paths) for v in obj]
    return obj


def _consume(ray, ref) -> None:
    """Fetch a failed or cancelled task's result, so that Ray does not log it as an unhandled error later."""
    try:
        ray.get(ref, timeout=10)
    except ray.exceptions.RayError:
        pass


def _ray_error(exc: BaseException) -> str:
    """One line: the Ray error's kind and its first meaningful line (a lost node, a killed worker, a crash)."""
    cause = getattr(exc, "cause", None)
    if cause is not None and not isinstance(cause, type(exc)):
        text = f"{type(cause).__name__}: {str(cause).strip().splitlines()[0] if str(cause).strip() else ''}"
    else:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        text = f"{type(exc).__name__}: {lines[0] if lines else ''}"
    return text[:400]


class _stop_on_signals:
    """SIGTERM/SIGHUP while waiting on the cluster stop the run like Ctrl-C (tasks cancelled, records kept)."""

    signum = None

    def __enter__(self):
        def handler(signum, frame):
            self.signum = signum
            raise isolation.Stopped(signum, "waiting for the Ray cluster")

        self.previous = {}
        try:
            for sig in (signal.SIGTERM, signal.SIGHUP):
                self.previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread
            pass
        return self

    def __exit__(self, *exc):
        for sig, old in self.previous.items():
            signal.signal(sig, old)
        return False
