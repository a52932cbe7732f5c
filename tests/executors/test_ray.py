"""The ray executor on a real two-node Ray cluster started on this machine (1 CPU and one timing slot per node; the
nodes told apart by the custom resources node_a and node_b), driven through the real CLI in a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="ray is not installed; pip install 'squeezebench[ray]' to test --executor ray")

from squeezebench.results import iter_records  # noqa: E402
from tests.executors import ray_cluster  # noqa: E402

pytestmark = pytest.mark.integration

METHODS = ["original", "fp16", "bf16", "int8-dynamic"]
ON = {"original": "node_a", "fp16": "node_a", "bf16": "node_b", "int8-dynamic": "node_b"}
FAST = ["--task", "image-classification", "--devices", "cpu", "--warmup", "1", "--min-iters", "3", "--min-time", "0",
        "--max-time", "2", "--eval-batch-size", "8", "--team", "t", "--timeout", "300"]


@pytest.fixture(scope="module")
def cluster():
    c = ray_cluster.start([{"squeezebench_timing_slot": 1, "node_a": 1}, {"squeezebench_timing_slot": 1, "node_b": 1}])
    try:
        yield c
    finally:
        ray_cluster.stop(c)
    assert ray_cluster.marked_pids(c) == [], "a process of the test cluster outlived teardown"


def cli(cluster, out: Path, image_dir: Path, model: str, methods: list[str], *extra: str) -> subprocess.Popen:
    argv = [sys.executable, "-m", "squeezebench", "run", *FAST, "--out", str(out), "--dataset", f"image-dir:{image_dir}",
            "--model", f"python:tests.helpers_models:{model}", "--methods", *methods, *extra]
    return subprocess.Popen(argv, env=cluster.env, cwd=cluster.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def finish(proc: subprocess.Popen, timeout: float = 240) -> tuple[int, str]:
    out, err = proc.communicate(timeout=timeout)
    assert "Traceback" not in err, err[-3000:]
    return proc.returncode, err


def records(out: Path) -> list[dict]:
    return [r.dump() for r in iter_records([out / "t"])]


def wait_for(path: Path, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and path.read_text().strip():
            return int(path.read_text())
        time.sleep(0.05)
    raise AssertionError(f"{path.name} did not appear within {timeout} s")


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_two_node_study_with_a_killed_worker_then_resumed(cluster, tmp_path, image_dir):
    out = tmp_path / "out"
    resources = json.dumps({m: {ON[m]: 0.01} for m in METHODS})
    ray_args = ["--executor", "ray", "--ray-address", cluster.address, "--ray-resources", resources]
    (cluster.ctl / "stall-method").write_text("bf16")
    proc = cli(cluster, out, image_dir, "stall_chosen_build", METHODS, *ray_args)
    # kill the Ray worker process that runs bf16's build (the worker subprocess's parent) in the middle of it
    worker = wait_for(cluster.ctl / "stall-build.pid")
    ray_worker = parent_of(worker)
    assert b"ray::" in Path(f"/proc/{ray_worker}/cmdline").read_bytes(), "the build's parent is not a Ray worker"
    os.kill(ray_worker, signal.SIGKILL)
    rc, err = finish(proc)
    assert rc == 1, err[-3000:]
    first = {r["method"]: r for r in records(out)}
    assert sorted(first) == sorted(METHODS)
    assert first["bf16"]["status"] == "failed", first["bf16"]
    assert "build task failed on the Ray cluster: WorkerCrashedError" in first["bf16"]["error"], first["bf16"]["error"]
    assert all(first[m]["status"] == "ok" for m in METHODS if m != "bf16"), {m: r.get("error") for m, r in first.items()}
    assert "cluster: " in err and "stall_chosen_build · original · cpu: built on " in err  # progress across the cluster
    assert "Unhandled error" not in err

    (cluster.ctl / "stall-release").write_text("go")
    rc, err = finish(cli(cluster, out, image_dir, "stall_chosen_build", METHODS, *ray_args))
    assert rc == 0, err[-3000:]
    for m in ("original", "fp16", "int8-dynamic"):
        assert f"stall_chosen_build · {m} · cpu: already measured (ok)" in err
    assert err.count("build submitted") == 1 and "stall_chosen_build · bf16 · cpu: build submitted" in err

    runs = sorted((out / "t").glob("run-*.json"))
    assert len(runs) == 2 and [r["method"] for r in json.loads(runs[1].read_text())["records"]] == ["bf16"]
    ok = {r["method"]: r for r in records(out) if r["status"] == "ok"}
    assert sorted(ok) == sorted(METHODS)
    by_node = defaultdict(list)
    for m, rec in ok.items():
        node = rec["node"]
        assert node["executor"] == "ray" and node["node_ip"] and node["hostname"]
        assert node["node_id"] == cluster.node_with(ON[m]), (m, node, cluster.nodes)
        assert node["resources"]["squeezebench_timing_slot"] == 1 and node["resources"][ON[m]] == 0.01
        assert node["start"] < node["end"]
        by_node[node["node_id"]].append((node["start"], node["end"], m))
        assert rec["environment"]["hostname"] == node["hostname"]
    assert len(by_node) == 2
    for spans in by_node.values():  # one timed measurement at a time per node
        spans.sort()
        for (s0, e0, m0), (s1, e1, m1) in zip(spans, spans[1:]):
            assert e0 <= s1, f"{m0} and {m1} overlapped on one node"
    # the artifacts and the original's reference are on the driver, as after a local run; logs came back
    for m, rec in ok.items():
        (artifact,) = (out / "artifacts" / "stall_chosen_build").glob(f"{m}-*")
        assert all((artifact / f).is_file() for f in rec["build"]["size"]["weight_files"]), rec["build"]["size"]
        assert "=== ray measure on" in (out / "logs" / f"stall_chosen_build-{m}-cpu.log").read_text()
    assert Path(ok["original"]["quality"]["reference_file"]).is_file()
    assert ok["bf16"]["quality"]["metrics"]["top1_agreement"]["value"] == 1.0  # compared with the original's outputs

    # the same records as a local run's: same sections and fields (the placement adds Ray's node fields)
    local_out = tmp_path / "local"
    rc, err = finish(cli(cluster, local_out, image_dir, "tiny_cnn", ["original", "fp16"]))
    assert rc == 0, err[-3000:]
    local = {r["method"]: r for r in records(local_out)}
    for m in ("original", "fp16"):
        assert shape(ok[m]) == shape(local[m]), m
        assert set(local[m]["node"]) < set(ok[m]["node"]) and local[m]["node"]["executor"] == "local"


def shape(obj, path: str = "") -> set[str]:
    """Every key path of a record, except the placement's own fields and free-form lists."""
    if not isinstance(obj, dict) or path in ("node", "model.source"):
        return set()
    keys = set()
    for k, v in obj.items():
        p = f"{path}.{k}" if path else k
        keys |= {p} | shape(v, p)
    return keys


def test_shared_artifact_dir(cluster, tmp_path, image_dir):
    out, shared = tmp_path / "out", tmp_path / "shared"
    rc, err = finish(cli(cluster, out, image_dir, "tiny_cnn", ["original"], "--executor", "ray", "--ray-address",
                         cluster.address, "--artifact-dir", str(shared)))
    assert rc == 0, err[-3000:]
    (rec,) = records(out)
    assert rec["status"] == "ok", rec
    (artifact,) = (shared / "tiny_cnn").glob("original-*")
    assert rec["build"]["size"]["weight_files"] and all((artifact / f).is_file() for f in rec["build"]["size"]["weight_files"])
    assert not (out / "artifacts").exists()  # nothing travelled through the object store
