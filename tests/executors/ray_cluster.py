"""A throw-away Ray cluster of two nodes on this machine, for tests: ``ray start --head`` and ``ray start --address``
with their own temp dirs, ports and custom resources, torn down by process id (never ``ray stop``, which would
also stop any other Ray of this user on the machine).

Every process the cluster starts inherits a marker variable; teardown signals exactly the processes carrying it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

MARKER = "SQUEEZEBENCH_RAY_TEST_CLUSTER"
ROOT = Path(__file__).resolve().parents[2]


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


@dataclass
class Cluster:
    root: Path  # short path: Ray's unix sockets live below it
    env: dict[str, str]
    address: str = ""
    nodes: dict[str, dict] = field(default_factory=dict)  # node id -> its resources

    @property
    def ctl(self) -> Path:
        return self.root / "ctl"

    def node_with(self, resource: str) -> str:
        (node,) = [n for n, res in self.nodes.items() if resource in res]
        return node


def _ray(*args: str, env: dict) -> None:
    proc = subprocess.run([str(Path(sys.executable).with_name("ray")), *args], env=env, capture_output=True,
                          text=True, timeout=180)
    if proc.returncode != 0:
        raise RuntimeError(f"ray {' '.join(args[:2])} failed: {proc.stdout[-2000:]} {proc.stderr[-2000:]}")


def start(node_resources: list[dict]) -> Cluster:
    root = Path(tempfile.mkdtemp(prefix="sbray-", dir="/tmp"))
    (root / "ctl").mkdir()
    env = dict(os.environ, **{MARKER: uuid.uuid4().hex}, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
               SQUEEZEBENCH_TEST_DIR=str(root / "ctl"), HF_HUB_OFFLINE="1", RAY_USAGE_STATS_ENABLED="0",
               TMPDIR=str(root / "tmp"))
    (root / "tmp").mkdir()
    env.pop("RAY_ADDRESS", None)
    cluster = Cluster(root, env)
    try:
        for i, resources in enumerate(node_resources):
            p = free_ports(7)
            common = ["--num-cpus", "1", "--num-gpus", "0", "--resources", json.dumps(resources),
                      "--object-store-memory", str(100 * 1024 * 1024), "--disable-usage-stats",
                      "--node-manager-port", str(p[0]), "--object-manager-port", str(p[1]),
                      "--dashboard-agent-listen-port", str(p[2]), "--dashboard-agent-grpc-port", str(p[3]),
                      "--runtime-env-agent-port", str(p[4]), "--metrics-export-port", str(p[5]),
                      "--temp-dir", str(root / f"ray{i}")]
            if i == 0:
                port, dash = free_ports(2)
                _ray("start", "--head", "--port", str(port), "--include-dashboard=false", "--dashboard-port",
                     str(dash), "--node-ip-address", "127.0.0.1", *common, env=env)
                cluster.address = f"127.0.0.1:{port}"
            else:
                _ray("start", "--address", cluster.address, "--node-ip-address", "127.0.0.1", *common, env=env)
        cluster.nodes = _wait_for_nodes(cluster, len(node_resources))
    except BaseException:
        stop(cluster)
        raise
    return cluster


def _wait_for_nodes(cluster: Cluster, n: int, timeout: float = 120) -> dict[str, dict]:
    import ray

    ray.init(address=cluster.address, log_to_driver=False, logging_level="ERROR")
    try:
        deadline = time.monotonic() + timeout
        while True:
            alive = [x for x in ray.nodes() if x.get("Alive")]
            if len(alive) >= n:
                return {x["NodeID"]: dict(x["Resources"]) for x in alive}
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(alive)} of {n} Ray nodes came up")
            time.sleep(0.5)
    finally:
        ray.shutdown()


def marked_pids(cluster: Cluster) -> list[int]:
    """Processes carrying this cluster's marker in their environment (ours only: others' environ is unreadable)."""
    needle = f"{MARKER}={cluster.env[MARKER]}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def stop(cluster: Cluster) -> None:
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        pids = marked_pids(cluster)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while marked_pids(cluster) and time.monotonic() < deadline:
            time.sleep(0.2)
    shutil.rmtree(cluster.root, ignore_errors=True)
