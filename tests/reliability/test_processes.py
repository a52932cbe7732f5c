"""Workers killed, parents killed or terminated, workers out of memory."""

from __future__ import annotations

import signal

from tests.reliability.conftest import finish, gone, kill


def test_worker_sigkilled_during_build_and_during_measure(env):
    proc = env.start(["stall_build", "stall_measure"])
    build_pid = env.wait_for("stall_build-build.pid")
    kill(build_pid)
    measure_pid = env.wait_for("stall_measure-measure.pid")
    kill(measure_pid)
    res = finish(proc).clean(rc=1)  # the run goes on; any failed variant makes the exit code 1
    recs = {r["model"]["name"]: r for r in env.records()}
    assert [recs[m]["status"] for m in ("stall_build", "stall_measure")] == ["failed", "failed"]
    for name, phase in (("stall_build", "build"), ("stall_measure", "measure")):
        error = recs[name]["error"]
        assert error.startswith(f"{phase} subprocess died (killed by SIGKILL from outside squeezebench"), error
        assert "timed out" not in error and "\n" not in error
    assert "| Model |" in res.stdout  # the table is still printed
    assert env.outside_out() == []


def _resume(env, models):
    env.release("stall_build")
    res = env.run(models).clean(rc=0)
    recs = env.records()
    if "tiny_cnn" in models:
        assert "tiny_cnn · original · cpu: already measured (ok)" in res.stderr
        assert [r["status"] for r in recs if r["model"]["name"] == "tiny_cnn"] == ["ok"]  # kept, measured once
    assert [r["status"] for r in recs if r["model"]["name"] == "stall_build"] == ["ok"]
    assert env.outside_out() == []  # no temp folder left (a SIGKILLed parent's is swept by the next run)


def test_parent_sigkilled_then_resumed(env):
    proc = env.start(["tiny_cnn", "stall_build"])
    worker = env.wait_for("stall_build-build.pid")
    kill(proc.pid)
    finish(proc)
    assert gone(worker), "the worker outlived its parent (PR_SET_PDEATHSIG)"
    assert [r["status"] for r in env.records()] == ["ok"]  # what was measured before is on disk
    assert list(env.tmp.iterdir()), "expected the SIGKILLed parent's spawn folder (swept by the next run)"
    _resume(env, ["tiny_cnn", "stall_build"])


def test_parent_sigterm_kills_the_worker_and_exits_nonzero_then_resumed(env):
    proc = env.start(["stall_build"])
    worker = env.wait_for("stall_build-build.pid")
    kill(proc.pid, signal.SIGTERM)
    res = finish(proc).clean(rc=128 + signal.SIGTERM)
    assert res.last_line == ("squeezebench: stopped by SIGTERM while build of original; the worker was killed; "
                             "results recorded so far are kept")
    assert gone(worker, timeout=2)
    assert env.outside_out() == []  # the spawn's temp folder is removed at once
    log = next((env.out / "logs").glob("stall_build-*.log")).read_text()
    assert "parent got SIGTERM: worker killed" in log
    _resume(env, ["stall_build"])


def test_sighup_is_handled_like_sigterm(env):
    proc = env.start(["stall_build"])
    worker = env.wait_for("stall_build-build.pid")
    kill(proc.pid, signal.SIGHUP)
    res = finish(proc).clean(rc=128 + signal.SIGHUP)
    assert "stopped by SIGHUP" in res.last_line and gone(worker, timeout=2)
    assert env.outside_out() == []


def test_out_of_memory_worker_is_not_called_a_timeout(env):
    # an address-space cap makes the 64 GB request fail at once, safely, whatever the machine's RAM
    res = env.run(["memory_hog", "memory_hog_killed"],
                  env={"SQUEEZEBENCH_WORKER_RLIMIT_AS_MB": "6144"}).clean(rc=1)
    recs = {r["model"]["name"]: r for r in env.records()}
    assert recs["memory_hog"]["status"] == "failed"
    assert recs["memory_hog"]["error"].startswith("out of memory: MemoryError"), recs["memory_hog"]["error"]
    killed = recs["memory_hog_killed"]["error"]
    assert killed.startswith("build subprocess died (killed by the kernel: out of memory ("), killed
    assert "timed out" not in killed
    assert recs["memory_hog"]["build"]["os"]["exit_code"] == 0  # the worker itself survived and said why
    assert "| Model |" in res.stdout and env.outside_out() == []
