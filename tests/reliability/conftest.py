"""Process-level fault scenarios: the real CLI in a subprocess on a tiny CNN, faults injected from outside.

Every scenario checks what a user would see: no traceback, one clear last line, the exit code, the records
that were ok still ok, and no file written outside --out (the worker's temp folders included)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest

ROOT = Path(__file__).resolve().parents[2]
FAST = ["--task", "image-classification", "--devices", "cpu", "--warmup", "1", "--min-iters", "3", "--min-time", "0",
        "--max-time", "2", "--eval-batch-size", "8", "--team", "t", "--timeout", "300"]


@dataclass
class Env:
    """One scenario's folders: ``out`` (--out), ``ctl`` (files the helper models and the test exchange), ``tmp``
    (TMPDIR of the CLI, where the worker's temp folders go) and ``images`` (the dataset)."""

    root: Path
    images: Path

    @property
    def out(self) -> Path:
        return self.root / "out"

    @property
    def ctl(self) -> Path:
        return self.root / "ctl"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    def start(self, models: list[str], *extra: str, out: Optional[Path] = None, env: Optional[dict] = None,
              dataset: Optional[str] = None) -> subprocess.Popen:
        argv = [sys.executable, "-m", "squeezebench", "run", *FAST, "--out", str(out or self.out),
                "--dataset", dataset or f"image-dir:{self.images}"]
        for m in models:
            argv += ["--model", m if ":" in m else f"python:tests.helpers_models:{m}"]
        argv += list(extra)
        full_env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
                        TMPDIR=str(self.tmp), SQUEEZEBENCH_TEST_DIR=str(self.ctl), HF_HUB_OFFLINE="1")
        full_env.pop("SQUEEZEBENCH_WORKER_RLIMIT_AS_MB", None)
        full_env.update(env or {})
        return subprocess.Popen(argv, cwd=self.root, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)

    def run(self, models: list[str], *extra: str, **kw) -> "Result":
        return finish(self.start(models, *extra, **kw))

    def wait_for(self, name: str, timeout: float = 120) -> int:
        """The pid a helper model wrote into ``ctl/NAME`` once it got there."""
        path = self.ctl / name
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if path.is_file() and path.read_text().strip():
                return int(path.read_text())
            time.sleep(0.05)
        raise AssertionError(f"{name} did not appear within {timeout} s")

    def release(self, name: str) -> None:
        (self.ctl / f"{name}-release").write_text("go")

    def records(self) -> list[dict]:
        from squeezebench.results import iter_records

        return [r.dump() for r in iter_records([self.out / "t"])] if (self.out / "t").exists() else []

    def outside_out(self) -> list[Path]:
        """Files written anywhere but --out: the control folder and the dataset are the test's own."""
        return sorted(p for p in self.root.rglob("*") if p.is_file()
                      and not p.is_relative_to(self.out) and not p.is_relative_to(self.ctl))


@dataclass
class Result:
    rc: int
    stdout: str
    stderr: str

    @property
    def last_line(self) -> str:
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        return lines[-1] if lines else ""

    def clean(self, rc: int) -> "Result":
        """No traceback anywhere, the expected exit code."""
        assert "Traceback" not in self.stderr and "Traceback" not in self.stdout, self.stderr[-3000:]
        assert self.rc == rc, (self.rc, self.stderr[-3000:])
        return self


def finish(proc: subprocess.Popen, timeout: float = 300) -> Result:
    out, err = proc.communicate(timeout=timeout)
    return Result(proc.returncode, out, err)


def gone(pid: int, timeout: float = 15) -> bool:
    """True once ``pid`` no longer exists (zombies of other parents count as gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


def kill(pid: int, sig: int = signal.SIGKILL) -> None:
    os.kill(pid, sig)


@pytest.fixture
def env(tmp_path, image_dir) -> Env:
    e = Env(tmp_path, image_dir)
    for d in (e.ctl, e.tmp):
        d.mkdir()
    return e
