"""The results folder is checked before the first build and held by one run at a time."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from squeezebench import outdir
from squeezebench.errors import SqueezebenchError


@pytest.mark.parametrize("team", ["", ".", "..", "a/b", "../x", "a\\b", " a", "a\nb", "/abs"])
def test_team_must_be_a_plain_name(team):
    with pytest.raises(SqueezebenchError, match="--team must be a plain name"):
        outdir.check_team(team)


@pytest.mark.parametrize("team", ["local", "team-1", "Команда_2", "a.b"])
def test_plain_team_names_pass(team):
    outdir.check_team(team)


def test_out_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(SqueezebenchError, match="is a file, not a folder"):
        outdir.check_writable(tmp_path / "f", "t")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "t").write_text("x")
    with pytest.raises(SqueezebenchError, match="is a file, not a folder"):
        outdir.check_writable(tmp_path / "d", "t")


def test_unwritable_out(tmp_path):
    if os.geteuid() == 0:
        target = "/proc/squeezebench-results"  # root ignores permission bits; /proc refuses everyone
    else:
        (tmp_path / "ro").mkdir(mode=0o555)
        target = str(tmp_path / "ro" / "results")
    with pytest.raises(SqueezebenchError, match="cannot write results to .*; pass a writable --out"):
        outdir.check_writable(target, "t")


def test_second_claim_names_the_holder_and_a_dead_holder_is_taken_over(tmp_path):
    with outdir.claim(tmp_path, "t"):
        assert (tmp_path / outdir.LOCK_NAME).read_text().strip() == str(os.getpid())
        code = ("import sys; from squeezebench import outdir\n"
                f"try:\n    outdir.claim({str(tmp_path)!r}, 't').__enter__()\n"
                "except Exception as e:\n    print(e)")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
        assert f"another squeezebench run (pid {os.getpid()}) is using" in out.stdout
    # a lock file left by a process that died: the kernel released its flock, the next run takes it over
    (tmp_path / outdir.LOCK_NAME).write_text("999999\n")
    with outdir.claim(tmp_path, "t"):
        assert (tmp_path / outdir.LOCK_NAME).read_text().strip() == str(os.getpid())
