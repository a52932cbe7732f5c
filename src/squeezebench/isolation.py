"""Run one phase of a variant in a fresh interpreter that cannot outlive us, leak files, or die unexplained.

- The worker gets its own session (a Ctrl-C in the terminal does not reach it mid-measurement) and, through
  ``PR_SET_PDEATHSIG``, a SIGKILL from the kernel as soon as the parent dies, even by SIGKILL.
- While it runs, SIGTERM and SIGHUP of the parent kill the worker's process group and raise :class:`Stopped`,
  so the parent unwinds (temp files removed, records so far kept) and exits non-zero.
- Everything the worker writes to temporary storage lands in one folder per spawn (``TMPDIR``), removed when
  the phase ends; folders of parents that died by SIGKILL are swept at the next spawn.
- How a worker ended is told apart: "timed out after N s" (our timer fired), "killed by the kernel: out of
  memory" (SIGKILL we did not send, with cgroup/dmesg/log evidence), "killed by SIGKILL from outside", "killed by
  signal X", "exit code N"; a worker that caught an allocation failure itself is reported as out of memory.
- ``SQUEEZEBENCH_WORKER_RLIMIT_AS_MB`` caps the worker's address space (``RLIMIT_AS``), so out-of-memory paths
  can be exercised safely in tests.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from squeezebench.hardware.memory import peak_rss_mb

log = logging.getLogger(__name__)

RLIMIT_ENV = "SQUEEZEBENCH_WORKER_RLIMIT_AS_MB"
TMP_PREFIX = "squeezebench-"
PR_SET_PDEATHSIG = 1
# what a process prints (or a worker records) when an allocation failed
MEMORY_PATTERNS = re.compile(r"MemoryError|bad_alloc|can't allocate memory|Cannot allocate memory|"
                             r"out of memory|OutOfMemoryError", re.I)


class Stopped(KeyboardInterrupt):
    """The parent got SIGTERM/SIGHUP while a worker ran; the worker is dead and the run must stop.

    A KeyboardInterrupt so that code which already cleans up on Ctrl-C does the same here."""

    def __init__(self, signum: int, where: str):
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name} while {where}; the worker was killed")


def spawn(phase: str, job: dict, log_path: Path, timeout_s: float) -> tuple[dict, dict]:
    """Run ``python -m squeezebench.worker PHASE JOB RESULT``; block until it ends; return (result, accounting).

    The parent does not poll while the child is measured: it blocks in wait4, whose rusage is the kernel's
    accounting of the child's peak RSS. A timer thread kills the child's group after ``timeout_s``."""
    sweep_stale_tmp()
    with _spawn_dir() as tmp:
        job_path, result_path = tmp / "job.json", tmp / "result.json"
        job_path.write_text(json.dumps(job))
        (tmp / "tmp").mkdir()
        env = dict(os.environ, PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false", TMPDIR=str(tmp / "tmp"),
                   TRANSFORMERS_VERBOSITY=os.environ.get("TRANSFORMERS_VERBOSITY", "error"))
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as logf:
            logf.write(f"\n=== {datetime.now(timezone.utc).isoformat()} {phase}\n".encode())
            logf.flush()
            # Linux hands a forked child the parent's peak RSS (VmHWM) as its starting ru_maxrss
            parent_peak = peak_rss_mb()
            oom_before = oom_kill_count()
            timed_out = threading.Event()
            t0 = time.perf_counter()
            proc = subprocess.Popen([sys.executable, "-m", "squeezebench.worker", phase, str(job_path),
                                     str(result_path)], stdout=logf, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True, env=env,
                                    preexec_fn=_child_setup(os.getpid(), _rlimit_bytes()))

            def on_timeout() -> None:
                timed_out.set()
                kill_group(proc.pid)

            timer = threading.Timer(timeout_s, on_timeout)
            timer.daemon = True
            timer.start()
            try:
                with _parent_signals(proc.pid, logf, f"{phase} of {job.get('method')}"):
                    _, status, usage = os.wait4(proc.pid, 0)  # blocks; no polling on the measured cores
            except BaseException:
                kill_group(proc.pid)
                _reap(proc.pid)
                raise
            finally:
                timer.cancel()
            proc.returncode = os.waitstatus_to_exitcode(status)
            wall = time.perf_counter() - t0
        accounting = {"child_maxrss_mb": usage.ru_maxrss / 1024, "parent_peak_rss_at_spawn_mb": parent_peak,
                      "exit_code": proc.returncode, "wall_s": wall}
        result = _read_result(result_path)
    tail = tail_of(log_path)
    if result is not None:
        if result.get("status") == "failed" and MEMORY_PATTERNS.search(str(result.get("error", ""))):
            result["error"] = f"out of memory: {result['error']}"
        return result, accounting
    why = death_reason(proc.returncode, timed_out.is_set(), timeout_s, tail, oom_before, proc.pid)
    return {"status": "failed", "error": f"{phase} subprocess died ({why}); log {log_path}: {tail}"}, accounting


def death_reason(returncode: int, timed_out: bool, timeout_s: float, tail: str, oom_before: Optional[int],
                 pid: int) -> str:
    """One phrase saying how a worker that left no result ended."""
    if returncode == -signal.SIGKILL:
        if timed_out:
            return f"timed out after {timeout_s:.0f} s"
        evidence = _oom_evidence(tail, oom_before, pid)
        if evidence:
            return f"killed by the kernel: out of memory ({evidence})"
        return "killed by SIGKILL from outside squeezebench (the kernel's out-of-memory killer?)"
    if returncode < 0:
        try:
            return f"killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


def _oom_evidence(tail: str, oom_before: Optional[int], pid: int) -> str:
    after = oom_kill_count()
    if oom_before is not None and after is not None and after > oom_before:
        return f"cgroup oom_kill {oom_before} -> {after}"
    if _dmesg_mentions_oom(pid):
        return f"dmesg: Killed process {pid}"
    match = MEMORY_PATTERNS.search(tail)
    if match:
        return f"{match.group(0)} in the log"
    return ""


def oom_kill_count() -> Optional[int]:
    """The kernel's count of OOM kills in our memory cgroup (v2 memory.events or v1 memory.oom_control)."""
    for path in _cgroup_memory_files():
        try:
            for line in path.read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            continue
    return None


def _cgroup_memory_files() -> list[Path]:
    root = Path("/sys/fs/cgroup")
    files = []
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        _, controllers, rel = line.split(":", 2)
        rel = rel.lstrip("/")
        if controllers == "":  # cgroup v2
            files += [root / rel / "memory.events", root / "unified" / rel / "memory.events"]
        elif "memory" in controllers.split(","):
            files.append(root / "memory" / rel / "memory.oom_control")
    return files + [root / "memory.events", root / "memory" / "memory.oom_control"]


def _dmesg_mentions_oom(pid: int) -> bool:
    if not shutil.which("dmesg"):
        return False
    try:
        out = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=3).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return re.search(rf"(Killed process|oom-kill:.*pid=){pid}\b", out) is not None


def kill_group(pid: int) -> None:
    """SIGKILL the worker's whole process group (it leads its own session)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def tail_of(path: Path, n: int = 3) -> str:
    """The last ``n`` non-empty lines of a log, joined, at most 400 characters."""
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return " | ".join(lines[-n:])[-400:]


def _read_result(path: Path) -> Optional[dict]:
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return result if isinstance(result, dict) else None


def _rlimit_bytes() -> Optional[int]:
    text = os.environ.get(RLIMIT_ENV)
    if not text:
        return None
    try:
        return int(float(text) * 1024 * 1024)
    except ValueError:
        log.warning("ignoring %s=%r (not a number of MB)", RLIMIT_ENV, text)
        return None


_LIBC = None


def _prctl() -> Optional[Callable[..., int]]:
    """libc's prctl, loaded in the parent (loading a library after fork may deadlock)."""
    global _LIBC
    if _LIBC is None and sys.platform.startswith("linux"):
        import ctypes

        try:
            _LIBC = ctypes.CDLL(None, use_errno=True)
        except OSError:
            _LIBC = False
    return getattr(_LIBC, "prctl", None) if _LIBC else None


def _child_setup(parent_pid: int, rlimit_as: Optional[int]) -> Callable[[], None]:
    """What runs in the child between fork and exec: die with the parent; optionally cap the address space."""
    prctl = _prctl()
    import resource

    def setup() -> None:
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
            if os.getppid() != parent_pid:  # the parent died before prctl took effect
                os._exit(1)
        if rlimit_as is not None:
            resource.setrlimit(resource.RLIMIT_AS, (rlimit_as, rlimit_as))

    return setup


@contextmanager
def _parent_signals(child_pid: int, logf, where: str) -> Iterator[None]:
    """While the worker runs: SIGTERM/SIGHUP kill its group, note it in its log and raise Stopped."""
    def handler(signum, frame):
        kill_group(child_pid)
        try:
            logf.write(f"=== parent got {signal.Signals(signum).name}: worker killed\n".encode())
            logf.flush()
        except (OSError, ValueError):
            pass
        raise Stopped(signum, where)

    previous = {}
    try:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread: handlers cannot be installed; PDEATHSIG still applies
        pass
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextmanager
def _spawn_dir() -> Iterator[Path]:
    """A private folder for one spawn, named after our pid so a later run can sweep it if we are SIGKILLed."""
    path = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def sweep_stale_tmp() -> list[Path]:
    """Remove spawn folders (ours by uid) whose parent process no longer exists; return what was removed."""
    removed = []
    base = Path(tempfile.gettempdir())
    try:
        candidates = list(base.glob(f"{TMP_PREFIX}*-*"))
    except OSError:
        return removed
    for path in candidates:
        match = re.fullmatch(rf"{TMP_PREFIX}(\d+)-\w+", path.name)
        if not match or not path.is_dir():
            continue
        try:
            if path.stat().st_uid != os.getuid() or _alive(int(match.group(1))):
                continue
        except OSError:
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
