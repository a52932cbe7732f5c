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

from squeezebench.errors import SqueezebenchError
from squeezebench.executors.ray import Request, _Driver, _rewrite, parse_resources
from squeezebench.results import iter_records
from squeezebench.runner import RunConfig, Runner
from tests.conftest import fast_protocol
from tests.executors import ray_cluster

try:
    import ray  # noqa: F401

    HAVE_RAY = True
except ImportError:
    HAVE_RAY = False
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason="ray is not installed; pip install 'squeezebench[ray]' to test "
                               "--executor ray on a two-node local Ray cluster")

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
    assert ray_cluster.cluster_pids(c) == [], "a process of the test cluster outlived teardown"


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


@needs_ray
@pytest.mark.integration
def test_two_node_study_with_a_killed_worker_then_resumed(cluster, tmp_path, image_dir):
    out = tmp_path / "out"
    resources = json.dumps({m: {ON[m]: 0.01} for m in METHODS})
    ray_args = ["--executor", "ray", "--ray-address", cluster.address, "--ray-resources", resources]
    arm_stall(cluster, "bf16")
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


def arm_stall(cluster, method: str) -> None:
    """The next build of ``method`` by stall_chosen_build waits (until released) and writes its pid."""
    for name in ("stall-release", "stall-build.pid"):
        (cluster.ctl / name).unlink(missing_ok=True)
    (cluster.ctl / "stall-method").write_text(method)


def gone(pid: int, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return True
        except FileNotFoundError:
            return True
        time.sleep(0.1)
    return False


@needs_ray
@pytest.mark.integration
def test_sigterm_to_the_driver_cancels_the_cluster_work_then_the_study_resumes(cluster, tmp_path, image_dir):
    out = tmp_path / "out"
    args = ["--executor", "ray", "--ray-address", cluster.address]
    arm_stall(cluster, "original")
    proc = cli(cluster, out, image_dir, "stall_chosen_build", ["original"], *args)
    worker = wait_for(cluster.ctl / "stall-build.pid")
    proc.send_signal(signal.SIGTERM)
    rc, err = finish(proc)
    assert rc == 128 + signal.SIGTERM, err[-3000:]
    assert err.strip().splitlines()[-1] == ("squeezebench: stopped by SIGTERM while waiting for the Ray cluster; the "
                                            "worker was killed; results recorded so far are kept")
    assert gone(worker), "the build kept running on the cluster after the driver stopped"
    (cluster.ctl / "stall-release").write_text("go")
    rc, err = finish(cli(cluster, out, image_dir, "stall_chosen_build", ["original"], *args))
    assert rc == 0, err[-3000:]
    assert [r["status"] for r in records(out)] == ["ok"]


@needs_ray
@pytest.mark.integration
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


# --- without a cluster: options, requests, and the driver's answers to a cluster that cannot take a task ---------
@pytest.mark.parametrize("text, message", [
    ("{cpu: 1}", "not valid JSON"),
    ('{"cpu": 1}', "must map a device, method or 'build'"),
    ('{"cpu": {"a": -1}}', "positive"),
    ('{"cpu": {"squeezebench_timing_slot": 1}}', "must not name squeezebench_timing_slot"),
])
def test_bad_ray_resources_are_one_line_errors(text, message):
    with pytest.raises(SqueezebenchError, match=message):
        parse_resources(text)


def test_request_lacking_names_what_no_node_offers():
    nodes = [{"Resources": {"CPU": 4, "squeezebench_timing_slot": 1, "node_a": 1}},
             {"Resources": {"CPU": 2, "GPU": 1, "squeezebench_timing_slot": 1}}]
    assert Request(2, 1, {"squeezebench_timing_slot": 1}).lacking(nodes) is None
    assert Request(4, 1, {}).lacking(nodes) in ({"GPU"}, {"CPU"})
    assert Request(1, 0, {"node_b": 0.01}).lacking(nodes) == {"node_b"}
    assert Request(1, 0, {}).lacking([]) == {"CPU"}


def test_remote_paths_are_rewritten_to_the_drivers():
    result = {"reference_file": "/tmp/sbray-x/reference.npz", "files": ["/tmp/sbray-x/artifact/m.bin", "m.bin"], "n": 3,
              "error": "build subprocess died (exit code 1); log /tmp/sbray-x/build.log: boom"}
    paths = {"/tmp/sbray-x/artifact": "/out/artifacts/m", "/tmp/sbray-x/reference.npz": "/out/references/r.npz",
             "/tmp/sbray-x/build.log": "/out/logs/m-original-cpu.log"}
    assert _rewrite(result, paths) == {"reference_file": "/out/references/r.npz",
                                       "files": ["/out/artifacts/m/m.bin", "m.bin"], "n": 3,
                                       "error": "build subprocess died (exit code 1); log /out/logs/m-original-cpu.log: boom"}


def test_ray_options_need_the_ray_executor(capsys):
    from squeezebench.cli import main

    assert main(["run", "--model", "x", "--task", "image-classification", "--ray-address", "auto"]) == 2
    assert "--ray-address need --executor ray" in capsys.readouterr().err


class FakeRay:
    """Just enough of ``ray`` for the driver's bookkeeping: nodes that can be lost, cancel, put."""

    class exceptions:
        RayError = RuntimeError

    def __init__(self, nodes):
        self._nodes, self.cancelled, self.submitted = nodes, [], []

    def nodes(self):
        return [{"Alive": True, "NodeID": f"n{i}", "NodeManagerAddress": "10.0.0.1", "Resources": r}
                for i, r in enumerate(self._nodes)]

    def remote(self, *args, **kw):
        fake = self

        class Fn:
            def __init__(self, fn):
                self.fn = fn

            def options(self, **opts):
                return self

            def remote(self, *a):
                fake.submitted.append(self.fn.__name__)
                return (object(), object()) if self.fn.__name__ == "build_task" else object()
        return Fn(args[0]) if args and callable(args[0]) else Fn  # ray.remote(fn) or ray.remote(**opts)(fn)

    def cancel(self, ref, force=False):
        self.cancelled.append(ref)

    def put(self, value):
        return value

    def get(self, ref, timeout=None):
        if ref in self.cancelled:
            raise self.exceptions.RayError("cancelled")
        raise AssertionError("a fake task has no result")


def _driver(tmp_path, image_dir, nodes, devices=("cpu",), resources=None):
    config = RunConfig(models=["python:tests.helpers_models:tiny_cnn"], task="image-classification",
                       methods=["original"], devices=list(devices), dataset=f"image-dir:{image_dir}",
                       out=tmp_path / "out", team="t", protocol=fast_protocol(), executor="ray",
                       executor_options={"address": "10.0.0.1:6379", "resources": resources})
    runner = Runner(config)
    runner._started = __import__("datetime").datetime.now()
    runner._run_path, runner._run_file = tmp_path / "out" / "t" / "run-x.json", None
    fake = FakeRay(nodes)
    return _Driver(fake, runner.executor, runner.plan(), runner), fake, runner


@needs_ray
def test_a_cluster_without_timing_slots_is_refused_before_any_build(tmp_path, image_dir):
    driver, fake, _ = _driver(tmp_path, image_dir, [{"CPU": 8}])
    with pytest.raises(SqueezebenchError, match="squeezebench_timing_slot"):
        driver.run()
    assert fake.submitted == []


@needs_ray
def test_cuda_on_a_cluster_without_gpus_is_skipped_with_the_reason(tmp_path, image_dir):
    driver, fake, runner = _driver(tmp_path, image_dir, [{"CPU": 2, "squeezebench_timing_slot": 1}], devices=["cuda"])
    (unit,) = driver.units
    record = runner.start(unit, unit.slots[0])
    runner.apply_build(record, {"status": "ok"}, check_cuda=False)
    driver.submit_measure(unit, unit.slots[0], record, None)
    assert fake.submitted == [] and record.status == "skipped" and "['GPU']" in record.reason
    assert [r.status for r in iter_records([tmp_path / "out" / "t"])] == ["skipped"]


@needs_ray
def test_a_queued_measurement_whose_node_type_was_lost_fails_instead_of_waiting(tmp_path, image_dir):
    slot_a = {"CPU": 1, "squeezebench_timing_slot": 1, "node_a": 1}
    slot_b = {"CPU": 1, "squeezebench_timing_slot": 1, "node_b": 1}
    driver, fake, runner = _driver(tmp_path, image_dir, [slot_a, slot_b], resources='{"cpu": {"node_b": 0.01}}')
    (unit,) = driver.units
    record = runner.start(unit, unit.slots[0])
    runner.apply_build(record, {"status": "ok"}, check_cuda=False)
    driver.submit_measure(unit, unit.slots[0], record, None)
    assert fake.submitted == ["measure_task"] and len(driver.pending) == 1
    driver.drop_unplaceable()
    assert len(driver.pending) == 1  # node_b is still there: keep waiting
    fake._nodes = [slot_a]  # node_b lost
    driver.drop_unplaceable()
    assert driver.pending == {} and len(fake.cancelled) == 1
    (rec,) = iter_records([tmp_path / "out" / "t"])
    assert rec.status == "failed" and "['node_b']" in rec.error and "change --ray-resources" in rec.error


@needs_ray
def test_a_misspelt_resources_key_is_refused(tmp_path, image_dir):
    driver, _, _ = _driver(tmp_path, image_dir, [], resources='{"orignal": {"node_b": 0.01}}')
    with pytest.raises(SqueezebenchError, match="did you mean 'original'"):
        driver.ex._check_keys(driver.units)


@needs_ray
def test_an_address_nobody_answers_is_a_one_line_error_at_once(tmp_path, image_dir):
    from squeezebench.executors.ray import RayExecutor

    port = ray_cluster.free_ports(1)[0]
    with pytest.raises(SqueezebenchError, match=f"no Ray head node answers at 127.0.0.1:{port}"):
        RayExecutor(address=f"127.0.0.1:{port}").execute(_driver(tmp_path, image_dir, [])[0].units, None)


# --- loadtest --executor ray: the service on the node its resources name, LoadGen on the other one -----------------
@needs_ray
@pytest.mark.integration
def test_loadtest_on_ray_puts_the_service_and_loadgen_on_two_nodes(cluster, tmp_path, image_dir):
    config = RunConfig(models=["python:tests.helpers_models:tiny_cnn"], task="image-classification",
                       methods=["original"], dataset=f"image-dir:{image_dir}", out=tmp_path / "out", team="t",
                       protocol=fast_protocol())
    (rec,) = Runner(config).run()
    assert rec.ok
    argv = [sys.executable, "-m", "squeezebench", "loadtest", str(tmp_path / "out"), "--method", "original",
            "--scenario", "offline", "--p99-ms", "5000", "--duration-s", "1", "--min-queries", "24",
            "--executor", "ray", "--ray-address", cluster.address, "--ray-resources", '{"cpu": {"node_b": 1}}']
    proc = subprocess.run(argv, env=cluster.env, cwd=cluster.root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    (rec,) = records(tmp_path / "out")
    serving = rec["serving"]
    service_node, client_node = cluster.node_with("node_b"), cluster.node_with("node_a")
    assert serving["placement"].startswith(f"Ray: server on node {service_node[:8]} ")
    assert f"LoadGen client on node {client_node[:8]} " in serving["placement"]
    assert serving["queries"] >= 24 and serving["errors"] == 0 and serving["achieved_qps"] > 0
    logs = Path(serving["log_dir"])
    assert (logs / "offline" / "mlperf_log_summary.txt").is_file() and (logs / "serve.log").is_file()
    assert "ready: POST" in (logs / "serve.log").read_text()


def test_loadtest_on_ray_needs_two_nodes_and_what_the_service_asks_for():
    from squeezebench.serving.ray_placement import check_two_nodes

    def nodes(*resources):
        return [{"Alive": True, "NodeID": f"n{i}", "Resources": r} for i, r in enumerate(resources)]

    with pytest.raises(SqueezebenchError, match="has 1 node"):
        check_two_nodes(nodes({"CPU": 4}), Request(num_cpus=1), "h:1")
    with pytest.raises(SqueezebenchError, match="missing GPU"):
        check_two_nodes(nodes({"CPU": 4}, {"CPU": 4}), Request(num_cpus=1, num_gpus=1), "h:1")
    with pytest.raises(SqueezebenchError, match="no node with a free CPU for the load generator"):
        check_two_nodes(nodes({"CPU": 4, "GPU": 1}, {"GPU": 1}), Request(num_cpus=1, num_gpus=1), "h:1")
    check_two_nodes(nodes({"CPU": 1, "GPU": 1}, {"CPU": 1}), Request(num_cpus=1, num_gpus=1), "h:1")


def test_ray_placement_options_need_the_ray_executor(tmp_path, capsys):
    from squeezebench.cli import main

    assert main(["loadtest", str(tmp_path), "--method", "original", "--p99-ms", "100", "--target-qps", "1",
                 "--ray-address", "auto"]) == 2
    assert "need --executor ray" in capsys.readouterr().err
    assert main(["loadtest", "http://127.0.0.1:9", "--method", "original", "--p99-ms", "100", "--target-qps", "1",
                 "--executor", "ray"]) == 2
    assert "pass a results folder" in capsys.readouterr().err


def test_the_service_listens_on_loopback_only_when_loadgen_shares_its_machine():
    from squeezebench.serving.ray_placement import bind_address

    nodes = [{"NodeID": "a", "NodeManagerAddress": "10.0.0.5"}, {"NodeID": "b", "NodeManagerAddress": "10.0.0.5"},
             {"NodeID": "c", "NodeManagerAddress": "10.0.0.6"}]
    assert bind_address("a", "b", nodes) == "127.0.0.1"
    assert bind_address("a", "c", nodes) == "10.0.0.5"
    with pytest.raises(SqueezebenchError, match="left the cluster"):
        bind_address("x", "c", nodes)
