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
