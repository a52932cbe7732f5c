"""How a worker ended is told apart; its temp folders are swept; its address space can be capped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from squeezebench import isolation


@pytest.mark.parametrize("code, timed_out, tail, expected", [
    (-signal.SIGKILL, True, "", "timed out after 7 s"),
    (-signal.SIGKILL, False, "Traceback | MemoryError", "killed by the kernel: out of memory (MemoryError in the log)"),
    (-signal.SIGKILL, False, "terminate called after throwing an instance of 'std::bad_alloc'",
     "killed by the kernel: out of memory (bad_alloc in the log)"),
    (-signal.SIGSEGV, False, "", "killed by signal SIGSEGV"),
    (17, False, "", "exit code 17"),
])
def test_death_reason(code, timed_out, tail, expected, monkeypatch):
    monkeypatch.setattr(isolation, "_dmesg_mentions_oom", lambda pid: False)
    assert isolation.death_reason(code, timed_out, 7, tail, None, 12345) == expected


def test_sigkill_without_evidence_is_not_called_a_timeout(monkeypatch):
    monkeypatch.setattr(isolation, "_dmesg_mentions_oom", lambda pid: False)
    monkeypatch.setattr(isolation, "oom_kill_count", lambda: 3)
    why = isolation.death_reason(-signal.SIGKILL, False, 3600, "loading weights", 3, 12345)
    assert why.startswith("killed by SIGKILL from outside squeezebench") and "timed out" not in why
    monkeypatch.setattr(isolation, "oom_kill_count", lambda: 4)
    assert isolation.death_reason(-signal.SIGKILL, False, 3600, "", 3, 1) == \
        "killed by the kernel: out of memory (cgroup oom_kill 3 -> 4)"


def test_oom_kill_count_reads_this_machine_or_none():
    count = isolation.oom_kill_count()
    assert count is None or count >= 0


def test_sweep_removes_folders_of_dead_parents_only(tmp_path, monkeypatch):
    monkeypatch.setattr(isolation.tempfile, "gettempdir", lambda: str(tmp_path))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"squeezebench-{dead.pid}-abc123"
    live = tmp_path / f"squeezebench-{os.getpid()}-def456"
    other = tmp_path / "squeezebench-ort-xyz"
    for d in (stale, live, other):
        (d / "tmp").mkdir(parents=True)
    assert isolation.sweep_stale_tmp() == [stale]
    assert not stale.exists() and live.exists() and other.exists()


def test_child_setup_caps_the_address_space():
    setup = isolation._child_setup(os.getpid(), 512 * 1024 * 1024)
    code = "import resource; print(resource.getrlimit(resource.RLIMIT_AS)[0])"
    out = subprocess.run([sys.executable, "-c", code], preexec_fn=setup, capture_output=True, text=True)
    assert out.stdout.strip() == str(512 * 1024 * 1024)


def test_child_setup_sets_the_parent_death_signal():
    if isolation._prctl() is None:
        pytest.skip("prctl is Linux-only")
    code = "import ctypes, signal; s = ctypes.c_int(); ctypes.CDLL(None).prctl(2, ctypes.byref(s)); print(s.value)"
    out = subprocess.run([sys.executable, "-c", code], preexec_fn=isolation._child_setup(os.getpid(), None),
                         capture_output=True, text=True)
    assert out.stdout.strip() == str(int(signal.SIGKILL))


def test_a_workers_progress_lines_reach_its_log_and_other_libraries_stay_quiet():
    """The worker's stderr is the phase's log file: a distillation's progress (step, loss, ETA: log.info in
    methods/lib/kd.py) must be written there as it happens, not dropped as INFO is without a handler."""
    code = ("import logging; from squeezebench.worker import configure_logging; configure_logging(); "
            "logging.getLogger('squeezebench.methods.lib.kd').info('student step 1/2 loss 0.50000 (1 s, ETA 1 s)'); "
            "logging.getLogger('transformers').info('library chatter')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "squeezebench: student step 1/2 loss 0.50000" in out.stderr and "chatter" not in out.stderr
