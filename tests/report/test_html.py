"""The HTML report as a person sees it: rendered by headless Chromium, with no console errors."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from squeezebench.cli import main
from squeezebench.report.html import render_report
from squeezebench.report.table import collect, json_rows

ROOT = Path(__file__).resolve().parents[2]
MINILM, SMOLLM2 = ROOT / "results" / "minilm", ROOT / "results" / "smollm2"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed "
                                    "(apt-get install chromium; .ci/run installs it when it can)")


def dump_dom(path: Path, fragment: str = "") -> tuple[str, str]:
    proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                           "--v=0", "--dump-dom", path.resolve().as_uri() + fragment],
                          capture_output=True, text=True, timeout=120)
    return proc.stdout, proc.stderr


def body_data(dom: str) -> dict[str, str]:
    tag = re.search(r"<body([^>]*)>", dom).group(1)
    return dict(re.findall(r'data-([\w-]+)="([^"]*)"', tag))


def test_self_contained_and_names_the_minilm_front(tmp_path):
    page = render_report(collect([MINILM]))
    assert not re.search(r"(src|href)=\"?https?:", page) and "<script src" not in page  # nothing fetched
    cpu = re.search(r"accuracy vs CPU latency.*?Pareto front: <span class=\"front-names\">(.*?)</span>", page).group(1)
    # the fastest variant at the top quality band and the most accurate one are on the front; fp16 (slow) is not
    assert "prune-structured+distill+openvino-int8" in cpu and "prune-unstructured" in cpu and "fp16" not in cpu
    assert page.count('class="pt dominated') > 10 and page.count("<svg class=\"samples\"") >= 20
    assert "no GPU latency measurements in this group" in page


@needs_chromium
def test_report_renders_in_headless_chromium_without_console_errors(tmp_path):
    out = tmp_path / "report.html"
    assert main(["report", str(MINILM), str(SMOLLM2), "-o", str(out)]) == 0
    dom, log = dump_dom(out, "#selftest")
    data = body_data(dom)
    assert data.get("rendered") == "ok", log[-2000:]
    assert "errors" not in data and ":CONSOLE" not in log, log[-2000:]
    assert int(data["plots"]) >= 4 and int(data["samples"]) >= 20  # MiniLM and SmolLM2: CPU and size plots each
    assert int(data["rows"]) == len(collect([MINILM, SMOLLM2]))
    # sorting by the CPU column puts the fastest first, then (descending) the slowest; no GPU rows in these results
    timed = [r for r in json_rows(collect([MINILM, SMOLLM2])) if r["cpu_ms"] is not None]
    assert data["sorted-first"] == min(timed, key=lambda r: r["cpu_ms"])["method"]
    assert data["sorted-last"] == max(timed, key=lambda r: r["cpu_ms"])["method"]
    assert data["gpu-rows"] == "0"
