"""A symbolic link left inside --out never makes a run write outside --out (issue 22, case 3): logs, artifacts,
references, the team folder and the lock are checked in one place (outdir.inside) before anything is built."""

from __future__ import annotations

import os

import pytest

from squeezebench import outdir
from squeezebench.errors import SqueezebenchError


@pytest.mark.parametrize("link, target_is_dir", [
    ("logs/tiny_cnn-original-cpu.log", False),
    ("artifacts/tiny_cnn", True),
    ("references", True),
    ("t", True),
    (".squeezebench.lock", False),
])
def test_a_link_out_of_out_is_refused_and_nothing_is_written_there(env, link, target_is_dir):
    elsewhere = env.root / "elsewhere"
    elsewhere.mkdir()
    target = elsewhere / ("dir" if target_is_dir else "victim.log")
    if target_is_dir:
        target.mkdir()
    else:
        target.write_text("keep")
    path = env.out / link
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target, target_is_directory=target_is_dir)
    res = env.run(["tiny_cnn"]).clean(rc=2)
    assert res.last_line.startswith("squeezebench: error: ") and "leads outside --out" in res.last_line, res.stderr
    assert str(target) in res.last_line
    if target_is_dir:
        assert list(target.iterdir()) == []
    else:
        assert target.read_text() == "keep"
    assert env.outside_out() == ([] if target_is_dir else [target])


def test_links_that_stay_inside_out_are_accepted(tmp_path):
    out = tmp_path / "out"
    (out / "real-logs").mkdir(parents=True)
    (out / "logs").symlink_to(out / "real-logs", target_is_directory=True)
    assert outdir.inside(out, out / "logs" / "x.log", "the log") == out / "logs" / "x.log"
    (out / "up").symlink_to("..", target_is_directory=True)
    with pytest.raises(SqueezebenchError, match="leads outside --out"):
        outdir.inside(out, out / "up" / "x.log", "the log")
    (out / "dangling").symlink_to(tmp_path / "nowhere" / "f")
    with pytest.raises(SqueezebenchError, match="leads outside --out"):
        outdir.inside(out, out / "dangling", "the log")
    assert not os.path.exists(tmp_path / "nowhere")


def test_import_table_checks_its_team_and_out(tmp_path):
    from squeezebench.report.imports import write_imported

    with pytest.raises(SqueezebenchError, match="--team must be a plain name"):
        write_imported([], tmp_path / "out", "../../x")
    (tmp_path / "out").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "out" / "course").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(SqueezebenchError, match="leads outside --out"):
        write_imported([], tmp_path / "out", "course")
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_a_link_inside_an_existing_artifact_folder_is_refused(tmp_path):
    out, victim = tmp_path / "out", tmp_path / "victim.bin"
    victim.write_bytes(b"keep")
    folder = out / "artifacts" / "m" / "original-abc"
    folder.mkdir(parents=True)
    (folder / "weights.safetensors").write_bytes(b"old build")
    assert outdir.inside_tree(out, folder, "the artifact folder") == folder
    (folder / "model.safetensors").symlink_to(victim)
    with pytest.raises(SqueezebenchError, match=r"'model.safetensors' in the artifact folder .* leads outside --out"):
        outdir.inside_tree(out, folder, "the artifact folder")
