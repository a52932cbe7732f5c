"""A plug-in runtime whose every call takes a known, deterministic service time (it sleeps), and a results folder
holding one text-classification variant saved for it: what the serving tests put behind `squeezebench serve`."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from squeezebench.runtimes.base import Executable, Runtime, bundle_for_runtime, register_runtime, write_manifest

PLUGIN = __name__  # "tests.serving.fake_service": what `squeezebench --plugin` imports in the served process
ROOT = Path(__file__).resolve().parents[2]
LABELS = ["business", "sport", "tech"]


class Sleeper(Executable):
    """Answers every batch after exactly ``service_ms`` (whatever its size), with logits favouring class 1."""

    def __init__(self, service_ms: float):
        self.service_s = service_ms / 1e3
        self.info = {"name": "test-sleep", "threads": 1}

    def prepare(self, inputs):
        return inputs

    def run_prepared(self, prepared):
        if prepared["input_ids"].shape[1] > 30:  # a way for a test to make a batch fail: send a long text
            raise RuntimeError("the test runtime takes at most 30 tokens")
        time.sleep(self.service_s)
        logits = torch.zeros(prepared["input_ids"].shape[0], len(LABELS))
        logits[:, 1] = 1.0
        return logits

    def to_tensor(self, output):
        return output


def _load(directory, manifest, task, device, threads):
    return bundle_for_runtime(directory, manifest, task), Sleeper(float(manifest["service_ms"]))


register_runtime(Runtime("test-sleep", "sleeps a fixed time per batch (tests only)", _load))


def make_results(out: Path, data_csv: Path, service_ms: float) -> Path:
    """``out`` as `squeezebench run` would leave it for one measured variant (model "fake", method "original"):
    its run file and its artifact, saved for the test-sleep runtime with the MiniLM tokenizer."""
    from squeezebench.protocol import Protocol
    from squeezebench.results import RunFile
    from squeezebench.results.schema import Record
    from squeezebench.runner import artifact_dir_of
    from squeezebench.tasks.data import DatasetOptions
    from tests.conftest import _save_tokenizer

    record = Record.model_validate({
        "key": "fake-key", "team": "local", "model": {"name": "fake", "source": {"kind": "test"}, "fingerprint": "f0"},
        "task": {"name": "text-classification", "version": 1, "primary_metric": "accuracy"},
        "dataset": {"spec": f"csv:{data_csv}", "options": dataclasses.asdict(DatasetOptions()), "examples": 36},
        "method": "original", "device": "cpu", "protocol": Protocol(threads=1, seq_len=32).to_dict(), "status": "ok",
        "latency": {"median": service_ms, "samples": [service_ms] * 3},  # what the runner would have timed
        "finished": datetime.now(timezone.utc).isoformat()})
    artifact = artifact_dir_of(out, record)
    artifact.mkdir(parents=True)
    write_manifest(artifact, {"runtime": "test-sleep", "source": {"kind": "test"}, "task": "text-classification",
                              "chain": [], "label_names": LABELS, "service_ms": service_ms})
    _save_tokenizer(artifact / "preprocessing")
    RunFile(out / "local" / "run-20260101T000000000000Z.json", {"team": "local", "command": "test"}).add(record)
    return out


def env() -> dict:
    """The environment of a served subprocess: this worktree's package and the tests importable."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]), "HF_HUB_OFFLINE": "1"}


def start_serve(results: Path, *args: str) -> tuple[subprocess.Popen, str]:
    """`squeezebench serve` on 127.0.0.1, any free port; returns the process and its URL once it is ready."""
    from squeezebench.serving.loadtest import wait_ready

    proc = subprocess.Popen([sys.executable, "-m", "squeezebench", "--plugin", PLUGIN, "serve", str(results),
                             "--method", "original", "--host", "127.0.0.1", "--port", "0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(), cwd=ROOT)
    line = proc.stdout.readline()
    assert "http://127.0.0.1:" in line, (line, proc.stderr.read() if proc.poll() is not None else "")
    url = line.split("listening on ")[1].split()[0]
    host, port = url[len("http://"):].split(":")
    wait_ready(host, int(port), 120.0, alive=lambda: proc.poll() is None)
    return proc, url


def post(url: str, body: bytes, headers: dict | None = None) -> tuple[int, str]:
    import http.client

    host, port = url[len("http://"):].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("POST", "/predict", body=body, headers=headers if headers is not None else
                     {"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def loads(text: str):
    return json.loads(text)
