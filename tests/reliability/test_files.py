"""Two runs on one folder, a full disk, corrupted run files, references and artifacts, a hostile ONNX file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from tests.reliability.conftest import finish


def test_two_runs_on_one_out(env):
    first = env.start(["stall_build"])
    env.wait_for("stall_build-build.pid")
    second = env.run(["tiny_cnn"]).clean(rc=2)
    assert second.last_line == (f"squeezebench: error: another squeezebench run (pid {first.pid}) is using "
                                f"'{env.out}'; wait for it to finish or pass another --out")
    env.release("stall_build")
    finish(first).clean(rc=0)
    recs = env.records()
    assert [(r["model"]["name"], r["status"]) for r in recs] == [("stall_build", "ok")]  # nothing from the second
    assert len(list((env.out / "t").glob("run-*.json"))) == 1


@pytest.fixture
def tiny_disk(env):
    mount = env.root / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a disk-full test needs root to mount a small tmpfs")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_disk_full_keeps_earlier_records_and_says_so_in_one_line(env, tiny_disk):
    out = tiny_disk / "out"
    env.run(["tiny_cnn"], out=out).clean(rc=0)
    run_file = next((out / "t").glob("run-*.json"))
    before = run_file.read_text()
    with open(tiny_disk / "filler", "wb") as fh:  # fill the disk to the last byte
        try:
            while True:
                fh.write(b"\0" * 65536)
        except OSError:
            pass
    res = env.run(["tiny_cnn"], "--force", out=out).clean(rc=1)
    assert res.last_line.startswith("squeezebench: error: No space left on device"), res.stderr[-2000:]
    assert res.last_line.endswith("results recorded so far are kept")
    assert run_file.read_text() == before  # the earlier run file is whole
    assert json.loads(before)["records"][0]["status"] == "ok"
    assert not [p for p in out.rglob(".tmp-*")]  # no half-written temporary file left behind
    assert [p for p in env.outside_out() if not p.is_relative_to(tiny_disk)] == []


def test_corrupt_reference_and_run_file(env):
    env.run(["tiny_cnn"]).clean(rc=0)
    ref = next((env.out / "references").glob("*.npz"))
    ref.write_bytes(ref.read_bytes()[:100])  # truncated, as by a crash in the old non-atomic write
    pruned = "prune-unstructured:sparsity=0.2"
    env.run(["tiny_cnn"], "--methods", pruned).clean(rc=0)
    rec = [r for r in env.records() if r["method"] == pruned][0]
    assert rec["status"] == "ok"  # the variant is measured; only agreement with the original is missing
    assert "top1_agreement" not in rec["quality"]["metrics"]
    assert any("reference" in f and "unreadable" in f for f in rec["quality"]["flags"]), rec["quality"]["flags"]
    # the next run that includes the original measures it again (its reference is lost), rewriting the file
    res = env.run(["tiny_cnn"], "--methods", "original", pruned).clean(rc=0)
    assert f"{pruned} · cpu: already measured (ok)" in res.stderr
    from squeezebench import references

    assert references.readable(ref)
    assert [r["status"] for r in env.records() if r["method"] == "original"] == ["ok", "ok"]

    # a run file truncated by hand (our own writes are atomic): named in one line, never a traceback
    run_file = sorted((env.out / "t").glob("run-*.json"))[0]
    good = run_file.read_text()
    run_file.write_text(good[: len(good) // 2])
    n_files = len(list((env.out / "t").glob("run-*.json")))
    res = env.run(["tiny_cnn"], "--methods", "original", pruned)
    assert "Traceback" not in res.stderr and run_file.name in res.stderr
    if res.rc == 2:  # refused before anything ran: nothing new written
        assert res.last_line.startswith("squeezebench: error:") and run_file.name in res.last_line
        assert len(list((env.out / "t").glob("run-*.json"))) == n_files
    else:  # skipped with a warning (typed validation on load): the lost records are measured again
        res.clean(rc=0)


def test_corrupt_artifact_fails_that_variant_in_one_line(env):
    proc = env.start(["stall_measure"])
    env.wait_for("stall_measure-measure.pid")  # built; the measuring worker has not loaded the weights yet
    weights = [p for p in (env.out / "artifacts").rglob("*") if p.is_file() and p.suffix in (".safetensors", ".pt", ".bin")]
    assert weights
    for w in weights:
        w.write_bytes(w.read_bytes()[:50])
    env.release("stall_measure")
    finish(proc).clean(rc=1)
    [rec] = env.records()
    assert rec["status"] == "failed" and rec["error"] and "\n" not in rec["error"]
    assert env.outside_out() == []


def test_hostile_onnx_is_refused_and_nothing_is_copied(env):
    from tests.helpers_onnx import onnx_with_external

    secret = env.root / "etc" / "hostname"  # what ../../etc/hostname reaches from dl/model/
    secret.parent.mkdir()
    secret.write_bytes(b"s" * 64)
    relative = onnx_with_external(env.root / "dl" / "model" / "hostile.onnx", "../../etc/hostname")
    absolute = onnx_with_external(env.root / "dl" / "model2" / "hostile2.onnx", str(secret))
    res = env.run([f"onnx:{relative}", f"onnx:{absolute}"]).clean(rc=1)
    recs = env.records()
    assert [r["status"] for r in recs] == ["failed", "failed"]
    for r in recs:
        assert "outside its folder" in r["error"] and "\n" not in r["error"]
    assert not [p for p in env.out.rglob("*") if p.is_file() and p.read_bytes() == b"s" * 64]
    assert [p for p in env.outside_out() if p.suffix != ".onnx" and p != secret] == []
    assert "| Model |" in res.stdout
