"""``python:pkg.mod:func`` models: a missing package is one line naming the module and the search path; a package
in the current folder is found without being imported by the CLI, and runs in the worker (issue 22, cases 8-9)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.reliability.conftest import FAST, ROOT, Result

PACKAGE_INIT = """import os
with open(os.path.join(os.environ["SQUEEZEBENCH_TEST_DIR"], f"init-{os.getpid()}"), "w") as fh:
    fh.write("imported")
"""
PACKAGE_MODELS = """from tests.helpers_models import tiny_cnn


def tiny(pretrained=True):
    return tiny_cnn(pretrained)
"""


def _cli(env, model: str) -> tuple[Result, int]:
    """The CLI as its console script runs it: ``-P`` keeps the current folder off the CLI's own sys.path."""
    argv = [sys.executable, "-P", "-m", "squeezebench", "run", *FAST, "--out", str(env.out), "--dataset",
            f"image-dir:{env.images}", "--model", model]
    full_env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]), TMPDIR=str(env.tmp),
                    SQUEEZEBENCH_TEST_DIR=str(env.ctl), HF_HUB_OFFLINE="1")
    proc = subprocess.Popen(argv, cwd=env.root, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    out, err = proc.communicate(timeout=300)
    return Result(proc.returncode, out, err), proc.pid


def test_missing_package_is_one_line_naming_module_and_path(env):
    res, _ = _cli(env, "python:nopkg_sb22.models:tiny")
    res.clean(rc=2)
    assert res.last_line.startswith("squeezebench: error: cannot find module 'nopkg_sb22' (of 'nopkg_sb22.models') "
                                    f"on the search path {env.root}{os.pathsep}")
    assert "run from the folder that holds it or add that folder to PYTHONPATH" in res.last_line
    assert not env.out.exists() or not list((env.out).rglob("run-*.json"))


def test_package_in_the_current_folder_runs_in_the_worker_only(env):
    pkg = env.root / "localpkg_sb22"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(PACKAGE_INIT)
    (pkg / "models.py").write_text(PACKAGE_MODELS)
    res, cli_pid = _cli(env, "python:localpkg_sb22.models:tiny")
    res.clean(rc=0)
    assert [r["status"] for r in env.records()] == ["ok"]
    imported_in = {p.name for p in env.ctl.glob("init-*")}
    assert imported_in and f"init-{cli_pid}" not in imported_in  # the workers imported it, the CLI did not
    res, _ = _cli(env, "python:localpkg_sb22.nomodule:tiny")
    res.clean(rc=2)
    assert "cannot find module 'localpkg_sb22.nomodule'" in res.last_line and str(pkg) in res.last_line
