"""``loadtest RESULTS --executor ray``: the service on a node of a Ray cluster that offers what the variant needs,
the load generator on another node.

Both get a bundle of one STRICT_SPREAD placement group (bundle 0: the service's CPUs (``--threads``, else 1), a GPU
for a CUDA variant and the custom resources ``--ray-resources`` names for its device, method or METHOD@DEVICE, as
``run --executor ray`` asks for a measurement; bundle 1: one CPU for LoadGen), so Ray places them on two different
nodes or refuses at once: a cluster with one node, or with no two nodes that hold both bundles, is one line naming
what is missing. The service is an actor that unpacks the variant (its run file and artifact, sent through Ray's
object store) into a temp folder and starts ``squeezebench serve`` there, listening on its node's IP; the load
generator is a task that runs the same LoadGen test(s) as a local ``loadtest`` against that address and sends back
the section and LoadGen's logs. The driver writes both into the results folder, the placement says which nodes
served and loaded. Load still goes to loopback only unless ``--allow-remote``: when both nodes are on one machine
(the same node address, as in the tests' two-node cluster) the service listens on 127.0.0.1; on two machines it
listens on its node's address, which needs ``--allow-remote``.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional

from squeezebench.errors import SqueezebenchError

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 900.0  # loading a large model on a remote node
PLACEMENT_TIMEOUT_S = 60.0  # how long the two bundles may wait for nodes before the test is refused


# --- what travels ------------------------------------------------------------------------------------------------
def pack_variant(results: Path, record) -> bytes:
    """The record's run file and artifact folder as a tar, at their paths relative to ``results`` (what `serve`
    reads)."""
    from squeezebench.runner import artifact_dir_of

    results = Path(results).resolve()
    run_file = Path(record.source_file).resolve()
    artifact = artifact_dir_of(results, record).resolve()
    if not artifact.is_dir():
        raise SqueezebenchError(f"the artifact of {record.model.name} · {record.method} is not in {artifact}; "
                                "measure it again with squeezebench run")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(run_file, arcname=str(run_file.relative_to(results)))
        tar.add(artifact, arcname=str(artifact.relative_to(results)))
    return buf.getvalue()


def _tar_dir(directory: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(directory, arcname=".")
    return buf.getvalue()


def _here() -> dict[str, Any]:
    """This node: its id, hostname and the address it joined the cluster with (``ray start --node-ip-address``;
    ``ray.util.get_node_ip_address()`` gives the machine's default route instead)."""
    import platform

    import ray

    node_id = ray.get_runtime_context().get_node_id()
    ip = next((n.get("NodeManagerAddress") for n in ray.nodes() if n.get("NodeID") == node_id), None)
    return {"hostname": platform.node(), "node_id": node_id, "node_ip": ip or ray.util.get_node_ip_address()}


# --- on the cluster ----------------------------------------------------------------------------------------------
class ServiceHost:
    """A Ray actor holding one `squeezebench serve` process on its node (started by ``start``, stopped by ``stop``)."""

    def __init__(self):
        self.work: Optional[Path] = None
        self.target = None

    def start(self, payload: bytes, options: dict[str, Any], warmup_body: dict[str, Any], plugins: list[str],
              ready_timeout_s: float, host: str) -> dict[str, Any]:
        from squeezebench.executors.ray_tasks import untar
        from squeezebench.serving.loadtest import start_service
        from squeezebench.serving.server import ServeOptions

        self.work = Path(tempfile.mkdtemp(prefix="sbserve-"))
        results = self.work / "results"
        untar(payload, results)
        body = self.work / "warmup.json"
        body.write_text(json.dumps(warmup_body))
        self.target = start_service(results, ServeOptions(**options), self.work / "serve.log", plugins,
                                    ready_timeout_s, host=host, extra_args=["--warmup-body", str(body)])
        return {"where": _here(), "host": self.target.host, "port": self.target.port, "info": self.target.info}

    def stop(self) -> dict[str, Any]:
        from squeezebench.serving.loadtest import stop_service

        code, log_text = None, ""
        if self.target is not None:
            code = stop_service(self.target.process)
        if self.work is not None:
            path = self.work / "serve.log"
            log_text = path.read_text(errors="replace")[-65536:] if path.is_file() else ""
            shutil.rmtree(self.work, ignore_errors=True)
        return {"exit_code": code, "log": log_text}


def client_task(host: str, port: int, info: dict[str, Any], record_dump: dict[str, Any], bodies: list[dict],
                settings_dump: dict[str, Any], peak: bool) -> dict[str, Any]:
    """LoadGen on this node against the service: the same test(s) as a local loadtest; returns the section, the
    LoadGen logs (a tar) and where it ran."""
    from squeezebench.results.schema import Record
    from squeezebench.serving.loadtest import LoadSettings, Target, loadtest

    where = _here()
    with tempfile.TemporaryDirectory(prefix="sbload-") as tmp:
        logs = Path(tmp) / "logs"
        section = loadtest(Target(host, port, info), Record.model_validate(record_dump), bodies,
                           LoadSettings(**settings_dump), peak, logs)
        payload = _tar_dir(logs) if logs.is_dir() else b""
    return {"section": section.dump(), "logs": payload, "where": where}


# --- the driver --------------------------------------------------------------------------------------------------
def service_request(options, record, resources: dict[str, dict[str, float]]):
    """What the service asks the cluster for: as a measurement of this variant on this device (no timing slot: the
    service is not a timed measurement, and LoadGen's node is kept apart by the placement group instead)."""
    from squeezebench.executors.ray import Request

    extra: dict[str, float] = {}
    device = options.device
    for key in (device.split(":")[0], device, record.method, f"{record.method}@{device}"):
        extra.update(resources.get(key, {}))
    threads = options.threads or (record.protocol.threads if record.protocol is not None else None) or 1
    return Request(num_cpus=threads, num_gpus=1 if device.startswith("cuda") else 0, resources=extra)


def check_two_nodes(nodes: list[dict], request, address: str) -> None:
    """One line when the cluster cannot place the service and LoadGen on two different nodes."""
    if len(nodes) < 2:
        raise SqueezebenchError(
            f"the Ray cluster at {address} has {len(nodes)} node(s); --executor ray puts the service and the load "
            "generator on two different nodes: add a node, or run loadtest without --executor ray (client and "
            "server on this machine)")
    lacking = request.lacking(nodes)
    if lacking is not None:
        raise SqueezebenchError(f"no node of the Ray cluster at {address} offers what the service needs "
                                f"({request.describe()}; missing {', '.join(sorted(lacking))})")
    client = {"CPU": 1.0}
    for service_node in nodes:
        if request.lacking([service_node]) is None and any(
                n is not service_node and n.get("Resources", {}).get("CPU", 0) >= client["CPU"] for n in nodes):
            return
    raise SqueezebenchError(f"the Ray cluster at {address} has no node with a free CPU for the load generator "
                            f"besides the one the service needs ({request.describe()})")


def service_host(group, nodes: list[dict]) -> str:
    """The address the service listens on: 127.0.0.1 when the two bundles landed on nodes of one machine (the same
    node address: loopback reaches the service from LoadGen's node), else the service node's address."""
    from ray.util.placement_group import placement_group_table

    on = placement_group_table(group)["bundles_to_node_id"]
    return bind_address(on[0], on[1], nodes)


def bind_address(service_node: str, client_node: str, nodes: list[dict]) -> str:
    ips = {n.get("NodeID"): n.get("NodeManagerAddress") for n in nodes}
    service_ip, client_ip = ips.get(service_node), ips.get(client_node)
    if service_ip is None:
        raise SqueezebenchError(f"the service's node {service_node[:8]} left the cluster before it started")
    return "127.0.0.1" if service_ip == client_ip else service_ip


def ray_loadtest(results: Path, options, settings, peak: bool, address: Optional[str], resources_text: Optional[str],
                 allow_remote: bool, plugins: list[str], say: Callable[[str], None]):
    """Run the load test on the cluster; returns (the section, the run file it was written into, the log folder)."""
    import os

    from squeezebench.executors.ray import _check_reachable, _ray, parse_resources
    from squeezebench.measures.serving import Serving
    from squeezebench.serving.loadtest import _is_loopback, attach, log_dir_for
    from squeezebench.serving.variant import evaluation_bodies

    ray = _ray()
    results = Path(results)
    record = options.find(results)
    request = service_request(options, record, parse_resources(resources_text))
    bodies = evaluation_bodies(record)
    payload = pack_variant(results, record)
    log_dir = log_dir_for(results, record)
    address = address or os.environ.get("RAY_ADDRESS") or "auto"
    _check_reachable(address)
    try:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SqueezebenchError(f"cannot join the Ray cluster at {address} ({first[:200]}); pass the head node's "
                                "host:port as --ray-address") from None
    host = group = None
    try:
        from ray.util.placement_group import placement_group, remove_placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        check_two_nodes([n for n in ray.nodes() if n.get("Alive")], request, address)
        bundle = {"CPU": float(request.num_cpus), **({"GPU": float(request.num_gpus)} if request.num_gpus else {}),
                  **request.resources}
        group = placement_group([bundle, {"CPU": 1.0}], strategy="STRICT_SPREAD")
        ready, _ = ray.wait([group.ready()], timeout=PLACEMENT_TIMEOUT_S)
        if not ready:
            raise SqueezebenchError(f"Ray could not place the service ({request.describe()}) and the load generator "
                                    f"(1 CPU) on two different nodes within {PLACEMENT_TIMEOUT_S:g} s; the cluster's "
                                    "free resources do not allow it now")
        bind = service_host(group, ray.nodes())
        if not _is_loopback(bind) and not allow_remote:
            raise SqueezebenchError(f"the service's node is at {bind}, another machine than the load generator's, "
                                    "not a loopback address; pass --allow-remote to load a cluster node you are "
                                    "allowed to load")
        on = lambda i: PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=i)  # noqa: E731
        actor = ray.remote(ServiceHost).options(num_cpus=request.num_cpus, num_gpus=request.num_gpus,
                                                resources=dict(request.resources), scheduling_strategy=on(0),
                                                max_restarts=0)
        host = actor.remote()
        say(f"ray: starting the service for {record.model.name} · {record.method} on a node offering "
            f"{request.describe()}")
        started = ray.get(host.start.remote(payload, _options_dict(options), bodies[0], plugins, READY_TIMEOUT_S,
                                            bind))
        where_s = started["where"]
        say(f"ray: service on node {where_s['node_id'][:8]} ({where_s['node_ip']}) at "
            f"http://{started['host']}:{started['port']}; LoadGen on another node")
        client = ray.remote(client_task).options(num_cpus=1, scheduling_strategy=on(1), max_retries=0)
        out = ray.get(client.remote(started["host"], started["port"], started["info"], record.dump(), bodies,
                                    dict(settings.__dict__), peak))
    finally:
        if host is not None:
            try:
                stopped = ray.get(host.stop.remote(), timeout=120)
                _write_log(log_dir / "serve.log", stopped.get("log", ""))
                if stopped.get("exit_code") not in (0, None):
                    say(f"the service exited with code {stopped['exit_code']}; see {log_dir / 'serve.log'}")
            except Exception as exc:  # noqa: BLE001 - the node may be gone; the result below says so
                say(f"the service could not be stopped cleanly ({type(exc).__name__}); its node may be lost")
        if group is not None:
            remove_placement_group(group)
        ray.shutdown()
    _untar_logs(out["logs"], log_dir)
    where_c = out["where"]
    section = Serving.model_validate({
        **out["section"], "log_dir": str(log_dir),
        "placement": (f"Ray: server on node {where_s['node_id'][:8]} ({where_s['node_ip']}, {where_s['hostname']}), "
                      f"LoadGen client on node {where_c['node_id'][:8]} ({where_c['node_ip']}, "
                      f"{where_c['hostname']})")})
    kept = log_dir / "serving.json"
    kept.write_text(json.dumps(section.dump(), indent=1))
    try:
        return section, attach(results, record, section), log_dir
    except SqueezebenchError as exc:
        raise SqueezebenchError(f"{exc} (this load test's result is kept in {kept})") from None


def _options_dict(options) -> dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(options)


def _write_log(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(text)


def _untar_logs(payload: bytes, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    if payload:
        with tarfile.open(fileobj=io.BytesIO(payload), mode="r") as tar:
            tar.extractall(directory, filter="data")

