"""A throw-away Ray cluster of two nodes on this machine, for tests: ``ray start --head`` and ``ray start --address``
with their own temp dirs, ports and custom resources, torn down by process id (never ``ray stop``, which would
also stop any other Ray of this user on the machine).

Every process the cluster starts inherits a marker variable; teardown signals exactly the processes carrying it
and their descendants.
"""

from __future__ import annotations

import json
import os
import secrets
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
    # token authentication with this cluster's own token (in the environment of its processes and of the driver):
    # independent of ~/.ray/auth_token, which a local ray.init() writes and a plain `ray start` would pick up
    env = dict(os.environ, **{MARKER: uuid.uuid4().hex}, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
               SQUEEZEBENCH_TEST_DIR=str(root / "ctl"), HF_HUB_OFFLINE="1", RAY_USAGE_STATS_ENABLED="0",
               TMPDIR=str(root / "tmp"), RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    env.pop("RAY_AUTH_TOKEN_PATH", None)
    (root / "tmp").mkdir()
    env.pop("RAY_ADDRESS", None)
    cluster = Cluster(root, env)
    try:
        ports = free_ports(2 + 7 * len(node_resources))  # at once, so that no two are the same
        port, dash = ports[:2]
        for i, resources in enumerate(node_resources):
            p = ports[2 + 7 * i: 9 + 7 * i]
            common = ["--num-cpus", "1", "--num-gpus", "0", "--resources", json.dumps(resources),
                      "--object-store-memory", str(100 * 1024 * 1024), "--disable-usage-stats",
                      "--node-manager-port", str(p[0]), "--object-manager-port", str(p[1]),
                      "--dashboard-agent-listen-port", str(p[2]), "--dashboard-agent-grpc-port", str(p[3]),
                      "--runtime-env-agent-port", str(p[4]), "--metrics-export-port", str(p[5]),
                      "--temp-dir", str(root / f"ray{i}")]
            if i == 0:
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


WAIT_FOR_NODES = """
import json, sys, time, ray
ray.init(address=sys.argv[1], log_to_driver=False, logging_level="ERROR")
deadline = time.monotonic() + float(sys.argv[3])
while True:
    alive = [x for x in ray.nodes() if x.get("Alive")]
    if len(alive) >= int(sys.argv[2]) or time.monotonic() > deadline:
        print(json.dumps({x["NodeID"]: x["Resources"] for x in alive}))
        break
    time.sleep(0.5)
ray.shutdown()
"""


def _wait_for_nodes(cluster: Cluster, n: int, timeout: float = 120) -> dict[str, dict]:
    """Node id -> resources, once ``n`` nodes are alive (asked by a separate driver with the cluster's token)."""
    proc = subprocess.run([sys.executable, "-c", WAIT_FOR_NODES, cluster.address, str(n), str(timeout)],
                          env=cluster.env, capture_output=True, text=True, timeout=timeout + 60)
    if proc.returncode != 0:
        raise RuntimeError(f"could not list the Ray nodes: {proc.stderr[-2000:]}")
    nodes = json.loads(proc.stdout.strip().splitlines()[-1])
    if len(nodes) < n:
        raise RuntimeError(f"only {len(nodes)} of {n} Ray nodes came up")
    return nodes


def _processes() -> dict[int, tuple[int, bytes, bytes]]:
    """pid -> (parent pid, environ, cmdline) of every process we may read (others' environ is unreadable)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            table[int(entry.name)] = (ppid, (entry / "environ").read_bytes(), (entry / "cmdline").read_bytes())
        except (OSError, ValueError, IndexError):
            continue
    return table


def cluster_pids(cluster: Cluster) -> list[int]:
    """The cluster's processes: those carrying its marker or naming its folder, and all their descendants (Ray's
    agents and workers rename themselves with setproctitle, which overwrites their environ and command line)."""
    table = _processes()
    needle, folder = f"{MARKER}={cluster.env[MARKER]}".encode(), str(cluster.root).encode()
    found = {pid for pid, (_, environ, cmdline) in table.items()
             if pid != os.getpid() and (needle in environ.split(b"\0") or folder in cmdline)}
    grew = True
    while grew:
        children = {pid for pid, (ppid, _, _) in table.items() if ppid in found} - found
        found |= children
        grew = bool(children)
    return sorted(pid for pid in found if not _zombie(pid))


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def stop(cluster: Cluster) -> None:
    """SIGTERM every process of the cluster (found once, before any dies and orphans its children), then SIGKILL
    what is left after 10 s."""
    pids = cluster_pids(cluster)
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while any(not _zombie(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        pids = [pid for pid in pids if not _zombie(pid)] + [p for p in cluster_pids(cluster) if p not in pids]
    shutil.rmtree(cluster.root, ignore_errors=True)
